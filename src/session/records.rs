//! What is kept of runs, for a person to look at: each run's report
//! (`RunView`) and what each attempt of a step printed, from the process
//! that holds the store (through its socket) or from the store itself.

use super::call::ask_or;
use super::open::{has_journal, plan_and_state, plan_of, store_error, CompileAhead};
use super::report::{recorded_bindings, view, RunView};
use super::tending::Lives;
use super::wire::{Answer, Request};
use crate::actions::output_file::OutputDir;
use crate::engine::{Event, RunId, RunMeta, StepLog};
use crate::error::Error;
use crate::store::RunStore;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// How long reading every run may take the process that holds the store.
const READING: Duration = Duration::from_secs(60);

/// Every run of `state_dir` (none yet: empty), or run `run`: from the
/// process that holds the store when one does (the run it drives as it
/// stands this moment), else from the store.
pub fn runs(state_dir: &Path, run: Option<u64>) -> Result<Vec<RunView>, Error> {
    if run.is_none() && !has_journal(state_dir) {
        return Ok(Vec::new());
    }
    ask_or(
        state_dir,
        run.unwrap_or_default(),
        &Request::Status { run },
        READING,
        |answer| match answer {
            Answer::Runs(views) => Ok(views),
            other => Err(unexpected(other)),
        },
        |store| views_in(state_dir, &*store, run, None),
        &mut || {},
    )
}

/// The views of every run in `store`, or of run `run`; the run `live`
/// drives, from its state as the driver keeps it.
pub(super) fn views_in(
    state_dir: &Path,
    store: &dyn RunStore,
    run: Option<u64>,
    live: Option<&dyn Lives>,
) -> Result<Vec<RunView>, Error> {
    let mut ahead = run.map(|id| CompileAhead::start(state_dir, id));
    let metas = match run {
        Some(id) => vec![store.run(RunId(id)).map_err(store_error)?],
        None => store.runs().map_err(store_error)?,
    };
    let mut views = Vec::new();
    for meta in &metas {
        let ahead = ahead.take().unwrap_or_else(CompileAhead::none);
        if let Some(view) = live.and_then(|l| l.view_of(meta.id)) {
            views.push(view);
            continue;
        }
        let (plan, state) = plan_and_state(state_dir, store, meta, ahead)?;
        views.push(view(
            meta,
            &plan,
            &state,
            &recorded_bindings(meta, &plan),
            false,
        ));
    }
    Ok(views)
}

/// An answer that does not fit the request: two versions of runbook.
pub(super) fn unexpected(answer: Answer) -> Error {
    match answer {
        Answer::Failed(failure) => failure.into(),
        _ => Error::Internal(
            "the process that holds the store answered another question; are both the same version of runbook?".into(),
        ),
    }
}

/// What one attempt of a step printed.
#[derive(Debug, Serialize, Deserialize)]
pub struct AttemptLog {
    pub attempt: u32,
    pub log: StepLog,
    /// Whether the attempt ended; one whose runbook stopped before it
    /// ended has only what it printed on its way, on disk.
    pub ended: bool,
    /// Whether it is running now: what it printed so far.
    #[serde(default)]
    pub running: bool,
}

/// What each attempt of each step of run `run` (or of step `step`)
/// printed, as kept: step names, each with its attempts in order. A live
/// run's too: what its running steps printed so far.
pub fn logs(
    state_dir: &Path,
    run: u64,
    step: Option<&str>,
) -> Result<Vec<(String, Vec<AttemptLog>)>, Error> {
    ask_or(
        state_dir,
        run,
        &Request::Logs {
            run,
            step: step.map(str::to_string),
        },
        READING,
        |answer| match answer {
            Answer::Logs(logs) => Ok(logs),
            other => Err(unexpected(other)),
        },
        |store| logs_in(state_dir, &*store, run, step, None),
        &mut || {},
    )
}

pub(super) fn logs_in(
    state_dir: &Path,
    store: &dyn RunStore,
    run: u64,
    step: Option<&str>,
    live: Option<&dyn Lives>,
) -> Result<Vec<(String, Vec<AttemptLog>)>, Error> {
    let meta = store.run(RunId(run)).map_err(store_error)?;
    let plan = plan_of(&meta)?;
    let steps: Vec<&crate::compile::Step> = match step {
        Some(name) => vec![plan
            .step(name)
            .ok_or_else(|| Error::Usage(format!("run {run} has no step `{name}`")))?],
        None => plan.steps.iter().collect(),
    };
    let mut streamed = OutputDir::new(state_dir).read_run(meta.id);
    let mut kept = Vec::with_capacity(steps.len());
    for s in steps {
        let mut attempts: Vec<AttemptLog> = store
            .logs(meta.id, s.id.0)
            .map_err(store_error)?
            .into_iter()
            .map(|(attempt, log)| AttemptLog {
                attempt,
                log,
                ended: true,
                running: false,
            })
            .collect();
        let recorded: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
        let running = live.and_then(|l| l.running_attempt(meta.id, s.id.0));
        for (attempt, set_aside, log) in streamed.remove(&s.id.0).unwrap_or_default() {
            if set_aside || !recorded.contains(&attempt) {
                attempts.push(AttemptLog {
                    attempt,
                    log,
                    ended: false,
                    running: !set_aside && running == Some(attempt),
                });
            }
        }
        // Stable: an interrupted attempt before the same attempt run again.
        attempts.sort_by_key(|a| (a.attempt, a.ended));
        kept.push((s.name.clone(), attempts));
    }
    Ok(kept)
}

/// Everything run `run` recorded: what it started with (its source, its
/// parameters with secrets only as where they come from, who started it)
/// and every event, oldest first.
pub fn history(state_dir: &Path, run: u64) -> Result<(RunMeta, Vec<Event>), Error> {
    ask_or(
        state_dir,
        run,
        &Request::History { run },
        READING,
        |answer| match answer {
            Answer::History { meta, events } => Ok((meta, events)),
            other => Err(unexpected(other)),
        },
        |store| history_in(&*store, run),
        &mut || {},
    )
}

pub(super) fn history_in(store: &dyn RunStore, run: u64) -> Result<(RunMeta, Vec<Event>), Error> {
    let meta = store.run(RunId(run)).map_err(store_error)?;
    let events = store.events(meta.id).map_err(store_error)?;
    Ok((meta, events))
}

/// How the process that holds `state_dir`'s store stands; `None` when no
/// process serves it.
pub fn health(state_dir: &Path) -> Result<Option<super::wire::Health>, Error> {
    match super::call::ask(state_dir, &Request::Health, READING)? {
        super::call::Reached::Answered(Answer::Health(health)) => Ok(Some(health)),
        super::call::Reached::Answered(other) => Err(unexpected(other)),
        super::call::Reached::Nobody | super::call::Reached::Ended => Ok(None),
    }
}
