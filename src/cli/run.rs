//! `runbook run`, `resume` and `retry`: the arguments read, the run prepared
//! and driven by the session (`session::Session`), shown as it goes, and its
//! end said with the exit code that says it.

use super::args::parse_params;
use super::view::{Mode, View};
use crate::actions::steps::Line;
use crate::engine::{Deadline, Event, RunState};
use crate::error::Error;
use crate::session::{Begun, Choices, Clock, Notice, Ready, Session, Watch};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use crate::error::{EXIT_CANCELLED, EXIT_ROLLED_BACK, EXIT_STOPPED};

pub struct RunOptions {
    pub state: PathBuf,
    pub json: bool,
    /// `run --until`: when the procedure must be over (a new run only).
    pub until: Option<Deadline>,
    /// Whether step programs are contained in cgroups where runbook may
    /// make them (`RUNBOOK_CGROUPS`, `auto` unless `off`).
    pub contain: bool,
}

/// `runbook run FILE -p k=v`.
pub fn start(path: &Path, params: &[String], opts: &RunOptions) -> Result<u8, Error> {
    // The signals are caught before anything else happens.
    let session = Session::new(&opts.state, opts.contain)?;
    let given = parse_params(params)?;
    // Read once: the text the journal records is the text compiled and run
    // (a file saved meanwhile must not run unrecorded).
    let source = crate::error::read_source(path)?;
    let Some(plan) = super::compile_read(path, &source)? else {
        return Ok(super::EXIT_DIAGNOSTICS);
    };
    let begun = session.start(path, &source, plan, &given, opts.until.clone())?;
    begin(begun, opts.json)
}

/// `runbook resume RUN`.
pub fn resume(
    run: u64,
    params: &[String],
    choices: Choices,
    opts: &RunOptions,
) -> Result<u8, Error> {
    let session = Session::new(&opts.state, opts.contain)?;
    let given = parse_params(params)?;
    begin(session.resume(run, &given, choices)?, opts.json)
}

/// `runbook retry RUN --from STEP`.
pub fn retry(run: u64, from: &str, params: &[String], opts: &RunOptions) -> Result<u8, Error> {
    let session = Session::new(&opts.state, opts.contain)?;
    let given = parse_params(params)?;
    begin(session.retry(run, from, &given)?, opts.json)
}

/// `--until TIME` as a deadline kept with the run.
pub fn parse_until(until: Option<&str>, reason: Option<String>) -> Result<Option<Deadline>, Error> {
    let Some(text) = until else {
        return Ok(None);
    };
    let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        Error::Usage(format!(
            "--until {text} is not a time: {e}; write it as RFC 3339, e.g. 2026-11-28T04:00:00Z"
        ))
    })?;
    let ms = at.timestamp_millis();
    if ms <= Clock::system().now() as i64 {
        return Err(Error::Usage(format!("--until {text} has already passed")));
    }
    let why =
        reason.unwrap_or_else(|| format!("the time it had to be over by (--until {text}) passed"));
    Ok(Some(Deadline { at: ms as u64, why }))
}

/// Drives the run here, or follows it in the process that holds the store.
fn begin(begun: Begun, json: bool) -> Result<u8, Error> {
    match begun {
        Begun::Here(ready) => drive(ready, json),
        Begun::There(submitted) => super::submitted::follow(submitted, json),
    }
}

/// Drives the prepared run, shown on this terminal, and says how it ended
/// and what to do next.
fn drive(ready: Ready, json: bool) -> Result<u8, Error> {
    let mode = Mode::pick(json);
    let (meta, plan) = (ready.meta(), ready.plan());
    let run = meta.id;
    let view = View::of_run(mode, Arc::clone(plan), meta, Arc::clone(ready.shown()));
    view.say(&format!(
        "run {run}: {} ({}); if it is interrupted, continue it with: runbook resume {run}",
        plan.name, meta.file
    ));
    let shown = Arc::new(Shown(Mutex::new(view)));
    let driven = ready.drive(Arc::clone(&shown) as Arc<dyn Watch>)?;
    if let Ok(mut v) = shown.0.lock() {
        v.close();
    }
    // The process ends after this: freeing the plan would only cost time
    // (about 2.5 ms for 5,000 steps).
    std::mem::forget(Arc::clone(&driven.plan));
    super::run_end::finish(
        driven.run.0,
        &driven.plan,
        driven.state.as_ref(),
        driven.ended,
        mode == Mode::Json,
    )
}

/// The terminal's view, watching the run.
struct Shown(Mutex<View>);

impl Watch for Shown {
    fn event(&self, event: &Event, state: &RunState) {
        if let Ok(mut v) = self.0.lock() {
            v.event(event, state);
        }
    }

    fn line(&self, line: Line) {
        if let Ok(v) = self.0.lock() {
            v.line(line);
        }
    }

    fn failure(&self, step: usize, failure: &crate::actions::step::StepError) {
        if let Ok(v) = self.0.lock() {
            v.failure(step, failure);
        }
    }

    fn notice(&self, notice: Notice) {
        let text = match notice {
            Notice::Stopping => "stopping: no new step starts; running steps finish and are recorded (Ctrl-C or SIGTERM again to stop them now)".to_string(),
            Notice::ProgramsLeft { run, left } => format!(
                "these programs {left}; `runbook resume {run}` waits until they have ended"
            ),
            Notice::StillDriving { own, runs } => format!(
                "run {own} has ended; this process goes on driving {}, started from other terminals, and exits when {} (Ctrl-C stops {} at a checkpoint; `runbook resume` continues {})",
                crate::session::runs_named(&runs),
                if runs.len() == 1 { "it ends" } else { "they end" },
                if runs.len() == 1 { "it" } else { "them" },
                if runs.len() == 1 { "it" } else { "them" },
            ),
            Notice::Unreachable { why } => format!(
                "other terminals cannot reach this run (`status`, `logs`, `approve`, `cancel` wait until it ends): {why}"
            ),
        };
        if let Ok(v) = self.0.lock() {
            v.say(&text);
        }
    }
}
