//! Steering a run from another terminal: `approve` and `cancel`, asked of
//! the process that holds the store (through its socket) and answered by
//! it, or, when no process holds it, written to the run's journal directly.

use super::call::ask_or;
use super::open::{killed_groups_left, plan_and_state, store_error, CompileAhead};
use super::records::unexpected;
use super::report::{approved, recorded_bindings};
use super::wire::{Answer, Request};
use super::Clock;
use crate::actions::groups::Noted;
use crate::compile::Plan;
use crate::engine::{approval, outcome_word, Event, RunId, RunMeta, RunState, StepState};
use crate::error::Error;
use crate::store::RunStore;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// The process that holds the store took the request and ended before it
/// answered: the journal is read and written instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Unanswered {
    pub run: RunId,
}

/// How an approval was given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Approved {
    /// The process driving the run recorded it; the run goes on.
    ByItsProcess,
    /// Written to the journal of a run no process drives.
    InJournal,
    /// The step was approved before, by `who`.
    Already { who: String },
}

/// How a cancel was done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// How long `approve` and `cancel` wait for the process that holds the
/// store to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

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

/// Approves step `step` of run `run` as `by` (the account recorded beside
/// it is the caller's): through the process that holds the store, or in
/// the journal when none does.
pub fn approve(
    state_dir: &Path,
    run: u64,
    step: &str,
    by: &str,
    told: &mut dyn FnMut(Unanswered),
) -> Result<Approved, Error> {
    let request = Request::Approve {
        run,
        step: step.to_string(),
        by: by.to_string(),
    };
    let approver = approval::Approver {
        name: by.to_string(),
        account: crate::store::private::this_account(),
    };
    ask_or(
        state_dir,
        run,
        &request,
        ANSWER_WITHIN,
        |answer| match answer {
            Answer::Approved(approved) => Ok(approved),
            other => Err(unexpected(other)),
        },
        |store| approve_in_journal(state_dir, &*store, run, step, &approver),
        &mut || told(Unanswered { run: RunId(run) }),
    )
}

/// Records an approval in the journal of run `run`, which no process
/// drives (or which the process holding the store does not drive).
pub(super) fn approve_in_journal(
    state_dir: &Path,
    store: &dyn RunStore,
    run: u64,
    step: &str,
    approver: &approval::Approver,
) -> Result<Approved, Error> {
    let (meta, plan, state) = offline(state_dir, store, run)?;
    if let Some(s) = plan.step(step).filter(|_| state.finished.is_none()) {
        if let StepState::Succeeded = state.step(s.id) {
            if let Some(who) = approved(&state.outputs[s.id.0]) {
                return Ok(Approved::Already { who });
            }
        }
    }
    let bindings = recorded_bindings(&meta, &plan);
    let event = approval::approve(
        &plan,
        &state,
        &bindings,
        step,
        approver,
        Clock::system().now(),
    )
    .map_err(Error::Refused)?;
    store.append(meta.id, &event).map_err(store_error)?;
    Ok(Approved::InJournal)
}

/// Cancels run `run`: through the process that holds the store, or in the
/// journal when none does.
pub fn cancel(
    state_dir: &Path,
    run: u64,
    told: &mut dyn FnMut(Unanswered),
) -> Result<Cancelled, Error> {
    let ended = std::cell::Cell::new(false);
    ask_or(
        state_dir,
        run,
        &Request::Cancel { run },
        ANSWER_WITHIN,
        |answer| match answer {
            Answer::Cancelled(cancelled) => Ok(cancelled),
            other => Err(unexpected(other)),
        },
        |store| {
            if ended.get() {
                let (_, _, state) = offline(state_dir, &*store, run)?;
                if state.cancelled {
                    return Ok(Cancelled::ByItsProcessBeforeItEnded);
                }
            }
            cancel_in_journal(
                state_dir,
                &*store,
                run,
                &crate::store::private::this_account(),
            )
        },
        &mut || {
            ended.set(true);
            told(Unanswered { run: RunId(run) });
        },
    )
}

/// Cancels a run no process drives by writing to its journal: a program an
/// earlier process left running is stopped, running steps are failed.
pub(super) fn cancel_in_journal(
    state_dir: &Path,
    store: &dyn RunStore,
    run: u64,
    by: &str,
) -> Result<Cancelled, Error> {
    let (meta, plan, state) = offline(state_dir, store, run)?;
    if let Some(outcome) = state.finished {
        return Err(Error::Refused(format!(
            "run {run} has already finished ({}); there is nothing to cancel",
            outcome_word(outcome)
        )));
    }
    let now = Clock::system().now();
    let mut events = vec![
        Event::Steered {
            at: now,
            by: by.to_string(),
            how: crate::engine::Steering::Cancelled,
        },
        Event::CancelRequested { at: now },
    ];
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
