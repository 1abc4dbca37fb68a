//! `runbook status`, `logs`, `approve` and `cancel`: reading and steering
//! runs, whether their process is alive (requests through the inbox) or not
//! (the journal directly).

use crate::actions::groups::Noted;
use crate::actions::output_file::OutputDir;
use crate::compile::eval::format_duration;
use crate::compile::Plan;
use crate::engine::{
    approval, outcome_word, Event, Journal, RunId, RunMeta, RunState, StepLog, StepState,
};
use crate::error::Error;
use crate::session::Clock;
use crate::session::{self, plan_and_state, plan_of, store_error, CompileAhead, Opened};
use crate::session::{approved, recorded_bindings, view, RunView};
use crate::store::inbox::{Inbox, Owner, Request, Waited};
use crate::store::SledStore;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

pub fn render(v: &RunView) -> String {
    let mut out = format!("run {}  {}  {}  {}\n", v.run, v.runbook, v.file, v.state);
    if !v.live && (v.state.starts_with("stopped") || v.state == "waiting for approval") {
        let _ = writeln!(out, "  continue it with: runbook resume {}", v.run);
    }
    let width = v.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let now = Clock::system().now();
    for s in &v.steps {
        let mut line = format!("  {:width$}  {}", s.name, s.state);
        if s.attempt > 1 {
            let _ = write!(line, " (attempt {})", s.attempt);
        }
        if let Some(since) = s.since {
            let _ = write!(
                line,
                " for {}",
                format_duration((now.saturating_sub(since) / 1000) * 1000)
            );
        }
        if let Some(detail) = &s.detail {
            let _ = write!(line, ": {detail}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The most a live view may hold (80,000 steps take about 20 MB).
const VIEW_LIMIT: u64 = 256 << 20;

/// `runbook status [RUN]`.
pub fn status(state_dir: &Path, run: Option<u64>, json: bool) -> Result<u8, Error> {
    if run.is_none() && !session::has_journal(state_dir) {
        match json {
            true => say!("[]"),
            false => say!("no runs yet in {}", state_dir.display()),
        }
        return Ok(super::EXIT_OK);
    }
    let mut ahead = run.map(|id| CompileAhead::start(state_dir, id));
    // Without a run number, a state directory with no journal was answered above.
    let store = match session::open_or_owner(state_dir, run.unwrap_or_default())? {
        Opened::Store(store) => store,
        Opened::HeldBy(owner) => return status_live(state_dir, owner, run, json),
    };
    let metas = match run {
        Some(id) => vec![store.run(RunId(id)).map_err(store_error)?],
        None => store.runs().map_err(store_error)?,
    };
    if metas.is_empty() {
        if json {
            say!("[]");
        } else {
            say!("no runs yet in {}", state_dir.display());
        }
        return Ok(super::EXIT_OK);
    }
    let mut views = Vec::new();
    for meta in &metas {
        let ahead = ahead.take().unwrap_or_else(CompileAhead::none);
        let (plan, state) = plan_and_state(state_dir, &store, meta, ahead)?;
        views.push(view(
            meta,
            &plan,
            &state,
            &recorded_bindings(meta, &plan),
            false,
        ));
    }
    if json {
        say!("{}", to_json(&views)?);
    } else if run.is_some() {
        views.iter().for_each(|v| say!("{}", render(v).trim_end()));
    } else {
        for v in &views {
            list_line(v);
        }
    }
    Ok(super::EXIT_OK)
}

fn list_line(v: &RunView) {
    let started = v
        .started_at
        .map(date)
        .unwrap_or_else(|| "not started".into());
    say!(
        "{:>5}  {:24}  {:20}  {}  {}",
        v.run,
        v.state,
        v.runbook,
        started,
        v.file
    );
}

/// While a process drives a run, it keeps `live.json` with the run's view.
fn status_live(
    state_dir: &Path,
    owner: Option<Owner>,
    run: Option<u64>,
    json: bool,
) -> Result<u8, Error> {
    let live = crate::store::private::read(&state_dir.join("live.json"), VIEW_LIMIT).ok();
    let parsed: Option<serde_json::Value> = live.and_then(|b| serde_json::from_slice(&b).ok());
    let matches = match (&owner, run) {
        (Some(o), Some(r)) => o.run == r,
        (Some(_), None) => true,
        _ => false,
    };
    let view: Option<RunView> = parsed.and_then(|v| serde_json::from_value(v).ok());
    let Some(view) = view.filter(|_| matches) else {
        return Err(Error::Run(session::locked_sentence(state_dir, owner)));
    };
    if json {
        say!("{}", to_json(&[&view])?);
    } else if run.is_some() {
        say!("{}", render(&view).trim_end());
    } else {
        list_line(&view);
        say!(
            "(run {} holds the store; the other runs are listed when its process stops)",
            view.run
        );
    }
    Ok(super::EXIT_OK)
}

fn date(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// `runbook logs RUN [STEP]`: what each attempt printed, as kept.
pub fn logs(state_dir: &Path, run: u64, step: Option<&str>) -> Result<u8, Error> {
    let store = match session::open_or_owner(state_dir, run)? {
        Opened::Store(store) => store,
        Opened::HeldBy(owner) => {
            return Err(Error::Run(format!(
                "{}; while it runs, its output is on its terminal",
                session::locked_sentence(state_dir, owner)
            )))
        }
    };
    let meta = store.run(RunId(run)).map_err(store_error)?;
    let plan = plan_of(&meta)?;
    let steps: Vec<&crate::compile::Step> = match step {
        Some(name) => vec![plan
            .step(name)
            .ok_or_else(|| Error::Usage(format!("run {run} has no step `{name}`")))?],
        None => plan.steps.iter().collect(),
    };
    let mut streamed = OutputDir::new(state_dir).read_run(meta.id);
    for s in steps {
        // (attempt, what it printed, whether it ended): an attempt whose
        // runbook stopped before it ended has only what it printed on its
        // way, on disk.
        let mut attempts: Vec<(u32, StepLog, bool)> = store
            .logs(meta.id, s.id.0)
            .map_err(store_error)?
            .into_iter()
            .map(|(attempt, log)| (attempt, log, true))
            .collect();
        let kept: Vec<u32> = attempts.iter().map(|(a, _, _)| *a).collect();
        for (attempt, set_aside, log) in streamed.remove(&s.id.0).unwrap_or_default() {
            if set_aside || !kept.contains(&attempt) {
                attempts.push((attempt, log, false));
            }
        }
        // Stable: an interrupted attempt before the same attempt run again.
        attempts.sort_by_key(|(attempt, _, ended)| (*attempt, *ended));
        for (attempt, log, ended) in attempts {
            if ended {
                say!("── {} (attempt {attempt}) ──", s.name);
            } else {
                say!(
                    "── {} (attempt {attempt}, interrupted: what it printed before its runbook stopped) ──",
                    s.name
                );
            }
            for line in &log.lines {
                let mark = if line.err { "!" } else { " " };
                say!("{mark} {}", line.text);
            }
            if log.dropped_bytes > 0 {
                say!(
                    "… {} more bytes were printed and not kept",
                    log.dropped_bytes
                );
            }
        }
    }
    Ok(super::EXIT_OK)
}

/// How long `approve` and `cancel` wait for a running process to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Sends a request to the process driving `run`, and waits for its answer.
/// `Ok(false)` when that process ended before it answered: the request is
/// withdrawn and the caller looks at the journal itself.
fn ask_live(
    state_dir: &Path,
    owner: Option<Owner>,
    run: u64,
    request: Request,
) -> Result<bool, Error> {
    let Some(owner) = owner.clone().filter(|o| o.run == run) else {
        return Err(Error::Run(session::locked_sentence(state_dir, owner)));
    };
    let inbox = Inbox::new(state_dir);
    let name = inbox.send(&request).map_err(|e| {
        Error::Run(format!(
            "cannot leave the request in {}: {e}",
            state_dir.display()
        ))
    })?;
    match inbox.wait_answer(&name, ANSWER_WITHIN, || session::alive(owner.pid)) {
        Waited::Answered(Ok(())) => Ok(true),
        Waited::Answered(Err(why)) => Err(Error::Run(why)),
        Waited::Gone => {
            inbox.withdraw(&name);
            Ok(false)
        }
        Waited::NoAnswer => {
            inbox.withdraw(&name);
            Err(Error::Run(format!(
                "run {run}'s process ({}) did not answer within {} s; the request was withdrawn; try again",
                owner.pid,
                ANSWER_WITHIN.as_secs()
            )))
        }
    }
}

/// The store, once the process that held it has ended: its lock goes with
/// it, but a moment may pass.
fn store_after_owner_ended(state_dir: &Path, run: u64) -> Result<SledStore, Error> {
    match session::open_or_owner(state_dir, run)? {
        Opened::Store(store) => Ok(store),
        Opened::HeldBy(owner) => Err(Error::Run(format!(
            "run {run}'s process ended before it answered, and {}",
            session::locked_sentence(state_dir, owner)
        ))),
    }
}

/// A run's plan and state when no process drives it.
fn offline(
    state_dir: &Path,
    store: &SledStore,
    run: u64,
) -> Result<(RunMeta, Plan, RunState), Error> {
    let meta = store.run(RunId(run)).map_err(store_error)?;
    let (plan, state) = plan_and_state(state_dir, store, &meta, CompileAhead::none())?;
    Ok((meta, plan, state))
}

/// `runbook approve RUN STEP --as NAME`.
pub fn approve(state_dir: &Path, run: u64, step: &str, by: &str) -> Result<u8, Error> {
    let store = match session::open_or_owner(state_dir, run)? {
        Opened::HeldBy(owner) => {
            let pid = owner.as_ref().map_or(0, |o| o.pid);
            let request = Request::Approve {
                run,
                step: step.to_string(),
                by: by.to_string(),
            };
            if ask_live(state_dir, owner, run, request)? {
                say!("approved `{step}` of run {run} as {by}; the run goes on");
                return Ok(super::EXIT_OK);
            }
            eprintln!("note: run {run}'s process ({pid}) ended before it answered; the approval is recorded in the journal instead");
            store_after_owner_ended(state_dir, run)?
        }
        Opened::Store(store) => store,
    };
    let (meta, plan, state) = offline(state_dir, &store, run)?;
    if let Some(s) = plan.step(step).filter(|_| state.finished.is_none()) {
        if let StepState::Succeeded = state.step(s.id) {
            if let Some(who) = approved(&state.outputs[s.id.0]) {
                say!("`{step}` of run {run} is already approved ({who}); continue the run with: runbook resume {run}");
                return Ok(super::EXIT_OK);
            }
        }
    }
    let bindings = recorded_bindings(&meta, &plan);
    let approver = approval::Approver {
        name: by.to_string(),
        account: crate::store::private::this_account(),
    };
    let event = approval::approve(
        &plan,
        &state,
        &bindings,
        step,
        &approver,
        Clock::system().now(),
    )
    .map_err(Error::Run)?;
    store.append(meta.id, &event).map_err(store_error)?;
    say!("approved `{step}` of run {run} as {by}; continue the run with: runbook resume {run}");
    Ok(super::EXIT_OK)
}

/// `runbook cancel RUN`.
pub fn cancel(state_dir: &Path, run: u64) -> Result<u8, Error> {
    let store = match session::open_or_owner(state_dir, run)? {
        Opened::HeldBy(owner) => {
            let pid = owner.as_ref().map_or(0, |o| o.pid);
            if ask_live(state_dir, owner, run, Request::Cancel { run })? {
                say!("run {run} is being cancelled: its running steps were stopped");
                return Ok(super::EXIT_OK);
            }
            eprintln!("note: run {run}'s process ({pid}) ended before it answered; the journal says what happened");
            let store = store_after_owner_ended(state_dir, run)?;
            let (_, _, state) = offline(state_dir, &store, run)?;
            if state.cancelled {
                say!("run {run} was cancelled: its process recorded the cancel, then ended; `runbook status {run}` shows where it stopped");
                return Ok(super::EXIT_OK);
            }
            store
        }
        Opened::Store(store) => store,
    };
    cancel_in_journal(state_dir, &store, run)
}

/// Cancels a run no process drives by writing to its journal: a program an
/// earlier process left running is stopped, running steps are failed.
fn cancel_in_journal(state_dir: &Path, store: &SledStore, run: u64) -> Result<u8, Error> {
    let (meta, plan, state) = offline(state_dir, store, run)?;
    if let Some(outcome) = state.finished {
        return Err(Error::Run(format!(
            "run {run} has already finished ({}); there is nothing to cancel",
            outcome_word(outcome)
        )));
    }
    let now = Clock::system().now();
    let mut events = vec![Event::CancelRequested { at: now }];
    // Waits, approvals and checks lose nothing by being cut short.
    let interrupted: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| matches!(state.step(s.id), StepState::Running { .. }))
        .filter(|s| s.on_interrupt == crate::compile::Interrupt::Ask)
        .map(|s| s.name.as_str())
        .collect();
    let notes = crate::actions::groups::GroupNotes::new(state_dir.join("running"));
    let running: Vec<(&crate::compile::Step, Option<Noted>)> = plan
        .steps
        .iter()
        .filter(|s| matches!(state.step(s.id), StepState::Running { .. }))
        .map(|s| (s, notes.still_running(meta.id, &s.name)))
        .collect();
    // Nothing is stopped unless everything can be.
    if let Some((s, _)) = running.iter().find(|(_, n)| *n == Some(Noted::Starting)) {
        return Err(Error::Run(format!(
            "run {run}'s step `{}` was having its program started when its process ended, and that program may be about to run; nothing was stopped; try again in a moment",
            s.name
        )));
    }
    for (s, noted) in running {
        // A program a killed runbook left running is stopped too.
        if let Some(Noted::Running(group)) = noted {
            group.kill();
        }
        events.push(Event::StepFailed {
            step: s.id.0,
            at: now,
            error: "cancelled while interrupted".into(),
        });
    }
    // What was killed is gone before the journal says the run is over.
    if let Some(stuck) = session::killed_groups_left() {
        return Err(Error::Run(format!(
            "run {run} was not cancelled: its programs {stuck}; try again when they have ended"
        )));
    }
    events.push(Event::RunFinished {
        outcome: crate::engine::Outcome::Cancelled,
        at: now,
    });
    for event in &events {
        store.append(meta.id, event).map_err(store_error)?;
    }
    notes.clear(meta.id);
    let note = if interrupted.is_empty() {
        String::new()
    } else {
        format!(
            "; these steps had been interrupted and may have done part of their work: {}",
            interrupted.join(", ")
        )
    };
    say!("run {run} cancelled{note}");
    Ok(super::EXIT_OK)
}

/// `--json` output: what cannot be put into JSON is an error, never an
/// empty line that a script would read as "no runs".
fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Error::Run(format!("the status could not be written as JSON: {e}")))
}
