//! The tokio driver: performs the engine's decisions. Every event is
//! written to the journal and synced before the effect it announces begins
//! and before the driver waits (one sync per turn, however many steps the
//! turn starts), so that a run can be continued from its journal after any
//! crash.

use super::running::Running;
use crate::actions::step::StepRunner;
use crate::compile::eval::Bindings;
use crate::compile::Plan;
use crate::engine::{
    decide, Deadline, Decision, Event, Journal, Millis, Outcome, RunId, RunState, StoreError,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Milliseconds since the Unix epoch, from tokio's clock (so that tests can
/// pause and advance it).
pub struct Clock {
    origin: tokio::time::Instant,
    origin_ms: Millis,
}

impl Clock {
    pub fn new(origin_ms: Millis) -> Self {
        Clock {
            origin: tokio::time::Instant::now(),
            origin_ms,
        }
    }

    /// The system's clock.
    pub fn system() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0);
        Clock::new(now)
    }

    pub fn now(&self) -> Millis {
        self.origin_ms + self.origin.elapsed().as_millis() as u64
    }

    async fn sleep_until(&self, at: Option<Millis>) {
        match at {
            Some(at) => {
                let wait = at.saturating_sub(self.now());
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Requests to a run in progress, from the terminal or another process.
#[derive(Debug)]
pub enum Control {
    Approve {
        step: String,
        by: crate::engine::approval::Approver,
        reply: oneshot::Sender<Result<super::Approved, String>>,
    },
    /// A rejection, with its reason: the step fails.
    Reject {
        step: String,
        by: crate::engine::approval::Approver,
        reason: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Stop the running steps (their process groups are killed), start
    /// nothing more; the run ends cancelled.
    Cancel {
        reply: Option<oneshot::Sender<Result<(), String>>>,
        /// Who asked (the Unix account), recorded with the cancel.
        by: Option<String>,
    },
    /// Ctrl-C: start nothing more, let running steps finish and record them.
    Stop,
    /// A second Ctrl-C: stop running steps now, leaving them interrupted.
    Kill,
}

/// What a person said about steps a crash interrupted, when resuming.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Choices {
    pub rerun: Vec<String>,
    pub skip: Vec<String>,
    /// Done by hand: recorded as succeeded, without outputs.
    pub done: Vec<String>,
}

/// How a drive ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    Finished(Outcome),
    /// Stopped on request before the run finished; `interrupted` were
    /// running and are left for `resume` to decide about.
    Stopped {
        interrupted: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Steps were running when the process stopped, and re-running them is
    /// not known to be safe: a person must say what to do.
    #[error("these steps were interrupted while running and may have done part of their work: {}; resume with --rerun STEP (run it again), --skip STEP (leave it undone) or --done STEP (you finished it by hand) for each", .0.join(", "))]
    Interrupted(Vec<String>),
    #[error("{0}")]
    Choice(String),
}

/// Everything a drive needs besides its inputs of the moment.
pub struct Driver<'a, J: Journal + ?Sized> {
    pub plan: Arc<Plan>,
    pub journal: &'a J,
    pub run: RunId,
    pub bindings: &'a Bindings,
    pub env: &'a (dyn Fn(&str) -> Option<String> + Sync),
    pub runner: Arc<dyn StepRunner>,
    pub clock: &'a Clock,
    /// Sees every event once it is recorded, with the state after it.
    pub observe: &'a (dyn Fn(&Event, &RunState) + Sync),
    /// Sees why an attempt failed, right after its `StepFailed` is
    /// observed: the kind and the place in the runbook, which the journal
    /// does not keep (it keeps the sentence).
    pub failed: &'a (dyn Fn(usize, &crate::actions::step::StepError) + Sync),
    /// When the procedure must be over besides the runbook's `timeout`.
    pub until: Option<Deadline>,
    /// The account that started the run, for the approval rules.
    pub starter: Option<String>,
}

/// Why a step `resume --skip` named was skipped.
pub const SKIPPED_BY_HAND: &str = "skipped by the operator when resuming";

/// Drives a run until it finishes or is stopped. Steps left running by an
/// earlier process start again when their kind (or `on-interrupt rerun`)
/// says that is safe, or when `choices` says so; otherwise the driver stops
/// before doing anything and names them.
pub async fn drive<J: Journal + ?Sized>(
    d: &Driver<'_, J>,
    choices: &Choices,
    controls: mpsc::UnboundedReceiver<Control>,
) -> Result<Ended, DriveError> {
    let state = RunState::replay(&d.plan, &d.journal.events(d.run)?);
    drive_from(d, state, choices, controls).await
}

/// `drive`, from the state the caller has already replayed from the journal.
pub async fn drive_from<J: Journal + ?Sized>(
    d: &Driver<'_, J>,
    state: RunState,
    choices: &Choices,
    mut controls: mpsc::UnboundedReceiver<Control>,
) -> Result<Ended, DriveError> {
    let mut run = Running {
        d,
        state,
        tasks: HashMap::new(),
        pending: Vec::new(),
        dirty: false,
        reports: mpsc::unbounded_channel(),
        notes: mpsc::unbounded_channel(),
        paused: Vec::new(),
    };
    if let Some(outcome) = run.state.finished {
        return Ok(Ended::Finished(outcome));
    }
    if run.state.started_at.is_none() {
        run.record(Event::RunStarted { at: d.clock.now() })?;
    }
    // A run resumed after its timeout passed starts nothing of the procedure.
    run.time_out_if_due()?;
    let mut stopping = false;
    // A Ctrl-C or a cancel that came while the command was starting is
    // answered before anything starts.
    tokio::task::yield_now().await;
    while let Ok(control) = controls.try_recv() {
        if let Some(ended) = run.handle(control, &mut stopping)? {
            return Ok(ended);
        }
    }
    if run.state.cancelled {
        // A cancel recorded before: what was interrupted stays stopped.
        run.cancel()?;
    } else if !stopping {
        run.settle_interrupted(choices)?;
        run.launch()?;
    }
    loop {
        run.time_out_if_due()?;
        let mut wake = None;
        let mut progressed = false;
        if !stopping {
            let decisions = decide(&d.plan, &run.state, d.bindings, d.env, d.clock.now());
            for decision in decisions {
                match decision {
                    Decision::Start { step, attempt } => {
                        run.start(step, attempt)?;
                        progressed = true;
                    }
                    Decision::Skip { step, reason } => {
                        run.record(Event::StepSkipped {
                            step: step.0,
                            reason,
                        })?;
                        progressed = true;
                    }
                    Decision::Finish(outcome) => {
                        run.record(Event::RunFinished {
                            outcome,
                            at: d.clock.now(),
                        })?;
                        run.sync()?;
                        return Ok(Ended::Finished(outcome));
                    }
                    Decision::WakeAt(at) => wake = Some(at),
                }
            }
            run.launch()?;
        } else if run.tasks.is_empty() {
            run.sync()?;
            return Ok(Ended::Stopped {
                interrupted: std::mem::take(&mut run.paused),
            });
        }
        if progressed {
            continue;
        }
        if run.tasks.is_empty() && wake.is_none() {
            // The engine waits for nothing and starts nothing: a bug, but
            // better said than an endless wait.
            return Err(DriveError::Choice(
                "the run cannot go on: no step can start and none is running; please report this"
                    .into(),
            ));
        }
        // What this turn recorded is durable before the driver waits.
        run.sync()?;
        let deadline = run.deadline();
        tokio::select! {
            Some((step, attempt, result)) = run.reports.1.recv() => run.finish(step, attempt, result)?,
            Some(note) = run.notes.1.recv() => run.note(note)?,
            Some(control) = controls.recv() => {
                if let Some(ended) = run.handle(control, &mut stopping)? {
                    return Ok(ended);
                }
            }
            _ = d.clock.sleep_until(wake), if wake.is_some() => {}
            _ = d.clock.sleep_until(deadline), if deadline.is_some() => run.time_out()?,
        }
    }
}
