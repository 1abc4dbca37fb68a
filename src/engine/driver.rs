//! The tokio driver: performs the engine's decisions, one journal write
//! (flushed) before each effect and one after it, so that a run can be
//! continued from its journal after any crash.

use super::{
    decide, Decision, Event, Journal, Millis, Outcome, RunId, RunState, StepState, StoreError,
};
use crate::compile::eval::Bindings;
use crate::compile::{Interrupt, Plan, Step, StepId};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The outputs of a step that succeeded, or why it failed.
pub type StepResult = Result<BTreeMap<String, String>, String>;

/// Performs one attempt of a step. The actions live behind this trait, so
/// the driver can be tested with steps that only pretend.
pub trait StepRunner: Send + Sync + 'static {
    fn run(&self, step: Step, attempt: u32) -> Pin<Box<dyn Future<Output = StepResult> + Send>>;
}

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

    pub fn now(&self) -> Millis {
        self.origin_ms + self.origin.elapsed().as_millis() as u64
    }

    async fn sleep_until(&self, at: Millis) {
        let wait = at.saturating_sub(self.now());
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Steps were running when the process stopped, and re-running them is
    /// not known to be safe: a person must say what to do.
    #[error("these steps were interrupted while running and may have done part of their work: {}; resume with --rerun STEP or --skip STEP for each", .0.join(", "))]
    Interrupted(Vec<String>),
}

/// Drives a run to its end. Steps left running by an earlier process are
/// started again when their kind (or `on-interrupt rerun`) says that is
/// safe; otherwise the driver stops and names them.
pub async fn drive<J: Journal>(
    plan: Arc<Plan>,
    journal: &J,
    run: RunId,
    bindings: &Bindings,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    runner: Arc<dyn StepRunner>,
    clock: &Clock,
) -> Result<Outcome, DriveError> {
    let mut log = Log {
        journal,
        run,
        plan: &plan,
        state: RunState::replay(&plan, &journal.events(run)?),
    };
    if log.state.started_at.is_none() {
        log.record(Event::RunStarted { at: clock.now() })?;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(StepId, StepResult)>();
    // Records the start (flushed), then runs the attempt in its own task.
    let start = |log: &mut Log<J>, step: StepId, attempt: u32| -> Result<(), StoreError> {
        log.record(Event::StepStarted {
            step: step.0,
            attempt,
            at: clock.now(),
        })?;
        let runner = Arc::clone(&runner);
        let compiled = plan.steps[step.0].clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let timeout = compiled.timeout;
            let attempt_run = runner.run(compiled, attempt);
            let result = match timeout {
                Some(limit) => tokio::time::timeout(limit, attempt_run)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "timed out after {}",
                            crate::compile::eval::format_duration(limit.as_millis() as u64)
                        ))
                    }),
                None => attempt_run.await,
            };
            let _ = tx.send((step, result));
        });
        Ok(())
    };
    let interrupted: Vec<(StepId, u32)> = plan
        .steps
        .iter()
        .filter_map(|s| match log.state.step(s.id) {
            StepState::Running { attempt, .. } => Some((s.id, *attempt)),
            _ => None,
        })
        .collect();
    let unsafe_to_rerun: Vec<String> = interrupted
        .iter()
        .filter(|(id, _)| plan.steps[id.0].on_interrupt == Interrupt::Ask)
        .map(|(id, _)| plan.steps[id.0].name.clone())
        .collect();
    if !unsafe_to_rerun.is_empty() {
        return Err(DriveError::Interrupted(unsafe_to_rerun));
    }
    for (step, attempt) in interrupted {
        start(&mut log, step, attempt)?;
    }
    loop {
        let mut wake = None;
        let mut progressed = false;
        for decision in decide(&plan, &log.state, bindings, env, clock.now()) {
            match decision {
                Decision::Start { step, attempt } => {
                    start(&mut log, step, attempt)?;
                    progressed = true;
                }
                Decision::Skip { step, reason } => {
                    log.record(Event::StepSkipped {
                        step: step.0,
                        reason,
                    })?;
                    progressed = true;
                }
                Decision::Finish(outcome) => {
                    log.record(Event::RunFinished {
                        outcome,
                        at: clock.now(),
                    })?;
                    return Ok(outcome);
                }
                Decision::WakeAt(at) => wake = Some(at),
            }
        }
        if progressed {
            continue;
        }
        let finished = tokio::select! {
            Some(done) = rx.recv() => Some(done),
            _ = clock.sleep_until(wake.unwrap_or(Millis::MAX)), if wake.is_some() => None,
        };
        if let Some((step, result)) = finished {
            let at = clock.now();
            let event = match result {
                Ok(outputs) => Event::StepSucceeded {
                    step: step.0,
                    at,
                    outputs,
                },
                Err(error) => Event::StepFailed {
                    step: step.0,
                    at,
                    error,
                },
            };
            log.record(event)?;
        }
    }
}

/// The journal and the state folded from it, kept in step.
struct Log<'a, J: Journal> {
    journal: &'a J,
    run: RunId,
    plan: &'a Plan,
    state: RunState,
}

impl<J: Journal> Log<'_, J> {
    /// Writes an event (the journal flushes) before the driver acts on it,
    /// then folds it into the state.
    fn record(&mut self, event: Event) -> Result<(), StoreError> {
        self.journal.append(self.run, &event)?;
        self.state.apply(self.plan, &event);
        Ok(())
    }
}
