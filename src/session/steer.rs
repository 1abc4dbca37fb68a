//! Steering a run from another process: `approve` and `cancel`, asked of
//! the process that drives the run (through the inbox) and answered by it,
//! or, when no process drives it, written to its journal directly.

use super::open::{
    alive, killed_groups_left, locked_sentence, open_or_owner, plan_and_state, store_error,
    CompileAhead, Opened,
};
use super::report::{approved, recorded_bindings};
use super::Clock;
use crate::actions::groups::Noted;
use crate::compile::Plan;
use crate::engine::{approval, outcome_word, Event, RunId, RunMeta, RunState, StepState};
use crate::error::Error;
use crate::store::inbox::{Inbox, Owner, Request, Waited};
use crate::store::RunStore;
use std::path::Path;
use std::time::Duration;

/// The process driving the run ended before it answered the request: the
/// journal is read and written instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Unanswered {
    pub run: RunId,
    pub pid: u32,
}

/// How an approval was given.
#[derive(Debug, Clone, PartialEq)]
pub enum Approved {
    /// The process driving the run recorded it; the run goes on.
    ByItsProcess,
    /// Written to the journal of a run no process drives.
    InJournal,
    /// The step was approved before, by `who`.
    Already { who: String },
}

/// How a cancel was done.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    /// The process driving the run stopped its running steps.
    ByItsProcess,
    /// The process driving the run recorded the cancel, then ended before
    /// it answered.
    ByItsProcessBeforeItEnded,
    /// Written to the journal of a run no process drives; `interrupted`
    /// steps may have done part of their work.
    InJournal { interrupted: Vec<String> },
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
        return Err(Error::InUse(locked_sentence(state_dir, owner)));
    };
    let inbox = Inbox::new(state_dir);
    let name = inbox.send(&request).map_err(|e| {
        Error::Store(format!(
            "cannot leave the request in {}: {e}",
            state_dir.display()
        ))
    })?;
    match inbox.wait_answer(&name, ANSWER_WITHIN, || alive(owner.pid)) {
        Waited::Answered(Ok(())) => Ok(true),
        Waited::Answered(Err(why)) => Err(Error::Refused(why)),
        Waited::Gone => {
            inbox.withdraw(&name);
            Ok(false)
        }
        Waited::NoAnswer => {
            inbox.withdraw(&name);
            Err(Error::Unanswered(format!(
                "run {run}'s process ({}) did not answer within {} s; the request was withdrawn; try again",
                owner.pid,
                ANSWER_WITHIN.as_secs()
            )))
        }
    }
}

/// The store, once the process that held it has ended: its lock goes with
/// it, but a moment may pass.
fn store_after_owner_ended(state_dir: &Path, run: u64) -> Result<Box<dyn RunStore>, Error> {
    match open_or_owner(state_dir, run)? {
        Opened::Store(store) => Ok(store),
        Opened::HeldBy(owner) => Err(Error::InUse(format!(
            "run {run}'s process ended before it answered, and {}",
            locked_sentence(state_dir, owner)
        ))),
    }
}

/// A run's plan and state when no process drives it.
fn offline(
    state_dir: &Path,
    store: &dyn RunStore,
    run: u64,
) -> Result<(RunMeta, Plan, RunState), Error> {
    let meta = store.run(RunId(run)).map_err(store_error)?;
    let (plan, state) = plan_and_state(state_dir, store, &meta, CompileAhead::none())?;
    Ok((meta, plan, state))
}

/// Approves step `step` of run `run` as `by`: through the process that
/// drives the run, or in the journal when none does.
pub fn approve(
    state_dir: &Path,
    run: u64,
    step: &str,
    by: &str,
    told: &mut dyn FnMut(Unanswered),
) -> Result<Approved, Error> {
    let store = match open_or_owner(state_dir, run)? {
        Opened::HeldBy(owner) => {
            let pid = owner.as_ref().map_or(0, |o| o.pid);
            let request = Request::Approve {
                run,
                step: step.to_string(),
                by: by.to_string(),
            };
            if ask_live(state_dir, owner, run, request)? {
                return Ok(Approved::ByItsProcess);
            }
            told(Unanswered {
                run: RunId(run),
                pid,
            });
            store_after_owner_ended(state_dir, run)?
        }
        Opened::Store(store) => store,
    };
    let (meta, plan, state) = offline(state_dir, &*store, run)?;
    if let Some(s) = plan.step(step).filter(|_| state.finished.is_none()) {
        if let StepState::Succeeded = state.step(s.id) {
            if let Some(who) = approved(&state.outputs[s.id.0]) {
                return Ok(Approved::Already { who });
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
    .map_err(Error::Refused)?;
    store.append(meta.id, &event).map_err(store_error)?;
    Ok(Approved::InJournal)
}

/// Cancels run `run`: through the process that drives it, or in the
/// journal when none does.
pub fn cancel(
    state_dir: &Path,
    run: u64,
    told: &mut dyn FnMut(Unanswered),
) -> Result<Cancelled, Error> {
    let store = match open_or_owner(state_dir, run)? {
        Opened::HeldBy(owner) => {
            let pid = owner.as_ref().map_or(0, |o| o.pid);
            if ask_live(state_dir, owner, run, Request::Cancel { run })? {
                return Ok(Cancelled::ByItsProcess);
            }
            told(Unanswered {
                run: RunId(run),
                pid,
            });
            let store = store_after_owner_ended(state_dir, run)?;
            let (_, _, state) = offline(state_dir, &*store, run)?;
            if state.cancelled {
                return Ok(Cancelled::ByItsProcessBeforeItEnded);
            }
            store
        }
        Opened::Store(store) => store,
    };
    cancel_in_journal(state_dir, &*store, run)
}

/// Cancels a run no process drives by writing to its journal: a program an
/// earlier process left running is stopped, running steps are failed.
fn cancel_in_journal(state_dir: &Path, store: &dyn RunStore, run: u64) -> Result<Cancelled, Error> {
    let (meta, plan, state) = offline(state_dir, store, run)?;
    if let Some(outcome) = state.finished {
        return Err(Error::Refused(format!(
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
        return Err(Error::InUse(format!(
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
    if let Some(stuck) = killed_groups_left() {
        return Err(Error::InUse(format!(
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
    Ok(Cancelled::InJournal {
        interrupted: interrupted.into_iter().map(str::to_string).collect(),
    })
}
