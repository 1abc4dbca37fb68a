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
    /// The process driving the run recorded it, the step is approved, the
    /// run goes on.
    ByItsProcess,
    /// Written to the journal of a run no process drives; the step is
    /// approved.
    InJournal,
    /// Recorded; `more` approvals are still needed, from `from`.
    Counted { more: u32, from: String },
    /// This person had approved the step already: nothing recorded.
    YoursAlready { more: u32, from: String },
    /// The step was approved before, by `who`.
    Already { who: String },
}

/// How a rejection was given: the step failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Rejected {
    /// The process driving the run recorded it; the run goes on to its
    /// `on failure` steps.
    ByItsProcess,
    /// Written to the journal of a run no process drives.
    InJournal,
}

/// The variable that lets `--as NAME` name who approves (a shared login
/// whose people name themselves): read by the process that records the
/// approval. Without it, an approval is recorded as the Unix user who
/// gives it.
pub const ALLOW_AS: &str = "RUNBOOK_ALLOW_AS";

/// Who answers an approval: the Unix account of `uid`, or the name given
/// with `--as` where this process allows names.
pub(super) fn approver(given: Option<&str>, uid: u32) -> Result<approval::Approver, Error> {
    let account = crate::store::private::account(uid);
    let allowed = std::env::var(ALLOW_AS).is_ok_and(|v| v == "1");
    match given {
        None => Ok(approval::Approver {
            name: account.clone(),
            account,
        }),
        Some(name) if allowed => Ok(approval::Approver {
            name: name.to_string(),
            account,
        }),
        Some(_) => Err(Error::Refused(format!(
            "--as is not allowed here: an approval is recorded as the Unix user who gives it ({account}); to let people of a shared login name themselves, the process that holds the store runs with {ALLOW_AS}=1"
        ))),
    }
}

/// The rules' view of the run: who started it, who is in which group.
fn asking(meta: &RunMeta) -> approval::Asking<'_> {
    approval::Asking {
        starter: meta.started_by.as_deref(),
        member: &crate::store::private::member_of,
    }
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

/// Approves step `step` of run `run` (as `by` where names are allowed;
/// the account recorded beside it is the caller's): through the process
/// that holds the store, or in the journal when none does.
pub fn approve(
    state_dir: &Path,
    run: u64,
    step: &str,
    by: Option<&str>,
    told: &mut dyn FnMut(Unanswered),
) -> Result<Approved, Error> {
    let request = Request::Approve {
        run,
        step: step.to_string(),
        by: by.map(str::to_string),
    };
    let uid = rustix::process::getuid().as_raw();
    ask_or(
        state_dir,
        run,
        &request,
        ANSWER_WITHIN,
        |answer| match answer {
            Answer::Approved(approved) => Ok(approved),
            other => Err(unexpected(other)),
        },
        |store| approve_in_journal(state_dir, &*store, run, step, &approver(by, uid)?),
        &mut || told(Unanswered { run: RunId(run) }),
    )
}

/// Rejects step `step` of run `run`, saying why: the step fails.
pub fn reject(
    state_dir: &Path,
    run: u64,
    step: &str,
    by: Option<&str>,
    reason: &str,
    told: &mut dyn FnMut(Unanswered),
) -> Result<Rejected, Error> {
    let request = Request::Reject {
        run,
        step: step.to_string(),
        by: by.map(str::to_string),
        reason: reason.to_string(),
    };
    let uid = rustix::process::getuid().as_raw();
    ask_or(
        state_dir,
        run,
        &request,
        ANSWER_WITHIN,
        |answer| match answer {
            Answer::Rejected(rejected) => Ok(rejected),
            other => Err(unexpected(other)),
        },
        |store| reject_in_journal(state_dir, &*store, run, step, &approver(by, uid)?, reason),
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
    let given = approval::approve(
        &plan,
        &state,
        &bindings,
        step,
        approver,
        Clock::system().now(),
        &asking(&meta),
    )
    .map_err(Error::Refused)?;
    let awaited = |state: &RunState| {
        plan.step(step)
            .and_then(|s| approval::awaited(&plan, state, &bindings, s.id))
            .map(|a| (a.more, a.from))
            .unwrap_or_default()
    };
    let events = match given {
        approval::Given::Already => {
            let (more, from) = awaited(&state);
            return Ok(Approved::YoursAlready { more, from });
        }
        approval::Given::Record(events) => events,
    };
    for event in &events {
        store.append(meta.id, event).map_err(store_error)?;
    }
    if events
        .iter()
        .any(|e| matches!(e, Event::StepSucceeded { .. }))
    {
        return Ok(Approved::InJournal);
    }
    let mut after = state;
    for event in &events {
        after.apply(&plan, event);
    }
    let (more, from) = awaited(&after);
    Ok(Approved::Counted { more, from })
}

/// Records a rejection in the journal of run `run`, which no process
/// drives: the step fails, and `resume` goes on from there.
pub(super) fn reject_in_journal(
    state_dir: &Path,
    store: &dyn RunStore,
    run: u64,
    step: &str,
    approver: &approval::Approver,
    reason: &str,
) -> Result<Rejected, Error> {
    let (meta, plan, state) = offline(state_dir, store, run)?;
    let bindings = recorded_bindings(&meta, &plan);
    let events = approval::reject(
        &plan,
        &state,
        &bindings,
        step,
        approver,
        reason,
        Clock::system().now(),
        &asking(&meta),
    )
    .map_err(Error::Refused)?;
    for event in &events {
        store.append(meta.id, event).map_err(store_error)?;
    }
    Ok(Rejected::InJournal)
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
