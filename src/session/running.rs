//! A drive in progress: the journal, the state folded from it, and the
//! attempts running now. `driver.rs` decides when; this performs each step:
//! recording events, syncing, starting and stopping attempts.

use super::driver::SKIPPED_BY_HAND;
use super::driver::{Choices, Control, DriveError, Driver, Ended};
use crate::actions::step::{FailureKind, NoteRequest, Notes, StepCall, StepError, StepResult};
use crate::compile::eval::format_duration;
use crate::compile::schema::StepKind;
use crate::compile::{Interrupt, Phase, Step, StepId};
use crate::engine::{approval, Event, Journal, LogBuffer, Millis, RunState, StepState, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub(super) type Report = (usize, u32, StepResult);

/// An attempt in flight.
pub(super) struct Task {
    attempt: u32,
    handle: JoinHandle<()>,
    log: LogBuffer,
}

impl Task {
    /// Stops the attempt's work (an approval answered: nothing runs).
    pub(super) fn abort(&self) {
        self.handle.abort();
    }
}

/// An attempt recorded as started, waiting for the journal to be synced.
pub(super) struct Pending {
    step: usize,
    attempt: u32,
    work: Pin<Box<dyn Future<Output = StepResult> + Send>>,
    log: LogBuffer,
}

/// An attempt's work with a panic in it caught, so that the attempt's task
/// lives on to report it. (A task of its own for the work, awaited by a
/// second one, did the same at the cost of two tasks per attempt.)
struct CatchPanic {
    work: Option<Pin<Box<dyn Future<Output = StepResult> + Send>>>,
}

impl Future for CatchPanic {
    type Output = Result<StepResult, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(work) = self.work.as_mut() else {
            return Poll::Pending;
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(panic) => {
                // What panicked is dropped now, a panic in its drop caught too.
                let broken = self.work.take();
                let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(broken)));
                Poll::Ready(Err(panic))
            }
        }
    }
}

/// A drive in progress: the journal, the state folded from it, and the
/// attempts running now.
pub(super) struct Running<'a, 'd, J: Journal + ?Sized> {
    pub(super) d: &'a Driver<'d, J>,
    pub(super) state: RunState,
    /// Per step: the attempt running.
    pub(super) tasks: HashMap<usize, Task>,
    /// Attempts whose start is recorded but not yet durable: they begin
    /// once the journal is synced (`launch`).
    pub(super) pending: Vec<Pending>,
    /// Whether events were written since the last sync.
    pub(super) dirty: bool,
    pub(super) reports: (
        mpsc::UnboundedSender<Report>,
        mpsc::UnboundedReceiver<Report>,
    ),
    /// Notes running steps ask to record (`Notes::keep`).
    pub(super) notes: (
        mpsc::UnboundedSender<NoteRequest>,
        mpsc::UnboundedReceiver<NoteRequest>,
    ),
    /// Waits and approvals let go of when stopping: they lose nothing, a
    /// resume takes them up where they were.
    pub(super) paused: Vec<String>,
}

impl<J: Journal + ?Sized> Running<'_, '_, J> {
    /// Writes an event, then folds it into the state. It is durable before
    /// the driver acts on it: `sync` comes before any effect and any wait.
    pub(super) fn record(&mut self, event: Event) -> Result<(), StoreError> {
        self.d.journal.append_unsynced(self.d.run, &event)?;
        self.dirty = true;
        self.state.apply(&self.d.plan, &event);
        (self.d.observe)(&event, &self.state);
        Ok(())
    }

    /// Records a running step's note and syncs it before the step hears
    /// back: the step acts on the world only after that.
    pub(super) fn note(&mut self, request: NoteRequest) -> Result<(), StoreError> {
        let recorded = self
            .record(Event::StepNoted {
                step: request.step,
                key: request.key,
                value: request.value,
            })
            .and_then(|()| self.sync());
        let answer = match &recorded {
            Ok(()) => Ok(()),
            Err(e) => Err(format!("the note could not be recorded: {e}")),
        };
        let _ = request.reply.send(answer);
        recorded
    }

    /// Answers one control; `Some` when the drive ends with it.
    pub(super) fn handle(
        &mut self,
        control: Control,
        stopping: &mut bool,
    ) -> Result<Option<Ended>, StoreError> {
        match control {
            Control::Approve { step, by, reply } => {
                let answer = self.approve(&step, &by)?;
                self.sync()?;
                let _ = reply.send(answer);
            }
            Control::Reject {
                step,
                by,
                reason,
                reply,
            } => {
                let answer = self.reject(&step, &by, &reason)?;
                self.sync()?;
                let _ = reply.send(answer);
            }
            Control::Cancel { reply, by } => {
                if let Some(by) = by.filter(|_| !self.state.cancelled) {
                    self.record(Event::Steered {
                        at: self.d.clock.now(),
                        by,
                        how: crate::engine::Steering::Cancelled,
                    })?;
                }
                self.cancel()?;
                self.sync()?;
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
            }
            Control::Stop => {
                *stopping = true;
                self.pause_waiting();
            }
            Control::Kill => {
                let interrupted = self.abandon();
                self.sync()?;
                return Ok(Some(Ended::Stopped { interrupted }));
            }
        }
        Ok(None)
    }

    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        if self.dirty {
            self.d.journal.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Makes the recorded starts durable, then lets the attempts begin:
    /// one sync for all the steps a turn starts.
    pub(super) fn launch(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.sync()?;
        for p in std::mem::take(&mut self.pending) {
            let tx = self.reports.0.clone();
            let (step, attempt) = (p.step, p.attempt);
            // A panic in the attempt is reported as the step's failure
            // instead of leaving the run waiting for it.
            let handle = tokio::spawn(async move {
                let result = match (CatchPanic { work: Some(p.work) }).await {
                    Ok(result) => result,
                    Err(panic) => Err(StepError::from(format!(
                        "the step stopped unexpectedly: {}; this is a bug in runbook, please report it",
                        panic_message(panic)
                    ))),
                };
                let _ = tx.send((step, attempt, result));
            });
            self.tasks.insert(
                step,
                Task {
                    attempt,
                    handle,
                    log: p.log,
                },
            );
        }
        Ok(())
    }

    fn step(&self, id: usize) -> &Step {
        &self.d.plan.steps[id]
    }

    /// Applies the person's choices to steps an earlier process left
    /// running, and restarts those that are safe to run again.
    pub(super) fn settle_interrupted(&mut self, choices: &Choices) -> Result<(), DriveError> {
        let interrupted: Vec<(usize, u32)> = self
            .state
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                StepState::Running { attempt, .. } => Some((i, *attempt)),
                _ => None,
            })
            .collect();
        let plan = Arc::clone(&self.d.plan);
        let named = |list: &Vec<String>, i: usize| list.iter().any(|n| *n == plan.steps[i].name);
        for name in choices
            .rerun
            .iter()
            .chain(&choices.skip)
            .chain(&choices.done)
        {
            match self.d.plan.step(name) {
                None => return Err(DriveError::Choice(format!("the run has no step `{name}`"))),
                Some(s) if !interrupted.iter().any(|(i, _)| *i == s.id.0) => {
                    return Err(DriveError::Choice(format!(
                        "`{name}` was not interrupted (it is {}); only interrupted steps take --rerun, --skip or --done",
                        crate::engine::state_word(self.state.step(s.id))
                    )))
                }
                Some(_) => {}
            }
        }
        let unsafe_steps: Vec<String> = interrupted
            .iter()
            .filter(|(i, _)| {
                let s = self.step(*i);
                s.on_interrupt == Interrupt::Ask
                    && !named(&choices.rerun, *i)
                    && !named(&choices.skip, *i)
                    && !named(&choices.done, *i)
            })
            .map(|(i, _)| self.step(*i).name.clone())
            .collect();
        if !unsafe_steps.is_empty() {
            return Err(DriveError::Interrupted(unsafe_steps));
        }
        for (i, attempt) in interrupted {
            if named(&choices.skip, i) {
                self.record(Event::StepSkipped {
                    step: i,
                    reason: SKIPPED_BY_HAND.into(),
                })?;
            } else if named(&choices.done, i) {
                self.record(Event::StepSucceeded {
                    step: i,
                    at: self.d.clock.now(),
                    outputs: BTreeMap::new(),
                })?;
            } else {
                self.start(StepId(i), attempt)?;
            }
        }
        Ok(())
    }

    /// Records the start; the attempt begins at the next `launch`.
    pub(super) fn start(&mut self, id: StepId, attempt: u32) -> Result<(), StoreError> {
        let now = self.d.clock.now();
        self.record(Event::StepStarted {
            step: id.0,
            attempt,
            at: now,
        })?;
        let since = match self.state.step(id) {
            StepState::Running { since, .. } => *since,
            _ => now,
        };
        let elapsed = Duration::from_millis(now.saturating_sub(since));
        let step = self.step(id.0).clone();
        // A wait continues to its first deadline, and an approval must come
        // within its time of being asked; any other step that starts again
        // gets its whole timeout.
        let carried = match step.kind.id {
            StepKind::Wait | StepKind::Approve => elapsed,
            _ => Duration::ZERO,
        };
        let timeout = step.timeout;
        let log = LogBuffer::default();
        let work: Pin<Box<dyn Future<Output = StepResult> + Send>> = if step.kind.id
            == StepKind::Approve
        {
            // Asked again after a crash, the answers it had may settle it;
            // otherwise it waits for `runbook approve` or `reject`, which
            // arrive as controls.
            match approval::settled(&self.d.plan, &self.state, self.d.bindings, id) {
                Some(Ok(outputs)) => Box::pin(std::future::ready(Ok(outputs))),
                Some(Err(error)) => Box::pin(std::future::ready(Err(StepError::new(
                    FailureKind::Rejected,
                    error,
                )))),
                None => Box::pin(std::future::pending()),
            }
        } else {
            let inputs = self
                .d
                .plan
                .dependencies(id)
                .iter()
                .map(|(dep, _)| {
                    (
                        self.step(dep.0).name.clone(),
                        self.state.step(*dep).clone(),
                        self.state.outputs[dep.0].clone(),
                    )
                })
                .collect();
            let undone = step
                .undoes
                .iter()
                .map(|deploy| {
                    (
                        self.step(deploy.0).name.clone(),
                        self.state.notes[deploy.0].clone(),
                    )
                })
                .collect();
            let notes = Notes::recorded(id.0, self.state.notes[id.0].clone(), self.notes.0.clone());
            self.d.runner.run(StepCall {
                run: self.d.run,
                step,
                attempt,
                elapsed,
                inputs,
                log: log.clone(),
                notes,
                undone,
            })
        };
        let timed = async move {
            match timeout {
                Some(limit) => {
                    let left = limit.saturating_sub(carried);
                    tokio::time::timeout(left, work).await.unwrap_or_else(|_| {
                        Err(StepError::new(
                            FailureKind::TimedOut,
                            format!(
                                "timed out after {}",
                                format_duration(limit.as_millis() as u64)
                            ),
                        ))
                    })
                }
                None => work.await,
            }
        };
        self.pending.push(Pending {
            step: id.0,
            attempt,
            work: Box::pin(timed),
            log,
        });
        Ok(())
    }

    /// Records an attempt's result, unless the attempt was stopped since.
    pub(super) fn finish(
        &mut self,
        step: usize,
        attempt: u32,
        result: StepResult,
    ) -> Result<(), StoreError> {
        if self.tasks.get(&step).map(|t| t.attempt) != Some(attempt) {
            return Ok(());
        }
        if let Some(task) = self.tasks.remove(&step) {
            self.keep_log(step, &task)?;
        }
        let at = self.d.clock.now();
        let skips = |failure: &StepError| {
            failure.kind == FailureKind::TimedOut
                && matches!(&self.step(step).action, crate::compile::action::Action::Approve(a) if a.skip_on_timeout)
        };
        match result {
            Ok(outputs) => self.record(Event::StepSucceeded { step, at, outputs }),
            // An approval nobody answered in time, whose runbook says to go
            // on without it.
            Err(failure) if skips(&failure) => self.record(Event::StepSkipped {
                step,
                reason: format!("no answer in time ({}; on-timeout skip)", failure.message),
            }),
            Err(failure) => {
                let error = failure.message.clone();
                self.record(Event::StepFailed { step, at, error })?;
                (self.d.failed)(step, &failure);
                Ok(())
            }
        }
    }

    /// Writes what the attempt printed; the event that follows flushes it.
    fn keep_log(&self, step: usize, task: &Task) -> Result<(), StoreError> {
        let log = task.log.take();
        if log.lines.is_empty() && log.dropped_bytes == 0 {
            return Ok(());
        }
        self.d.journal.put_log(self.d.run, step, task.attempt, &log)
    }

    /// Stops every step of `only` (or every phase) that is running, and
    /// records each as failed with `why`: attempts running here, and steps
    /// an earlier process (or a stop) left running without a task here.
    fn stop_all(&mut self, only: Option<Phase>, why: &str) -> Result<(), StoreError> {
        let running: Vec<usize> = self
            .d
            .plan
            .steps
            .iter()
            .filter(|s| only.is_none_or(|p| s.phase == p))
            .filter(|s| matches!(self.state.step(s.id), StepState::Running { .. }))
            .map(|s| s.id.0)
            .collect();
        for step in running {
            if let Some(task) = self.tasks.remove(&step) {
                task.handle.abort();
                self.keep_log(step, &task)?;
            }
            self.record(Event::StepFailed {
                step,
                at: self.d.clock.now(),
                error: why.to_string(),
            })?;
        }
        Ok(())
    }

    /// Stops everything and starts nothing more. Safe to repeat.
    pub(super) fn cancel(&mut self) -> Result<(), StoreError> {
        if !self.state.cancelled {
            self.record(Event::CancelRequested {
                at: self.d.clock.now(),
            })?;
        }
        self.paused.clear();
        self.stop_all(None, "cancelled")
    }

    /// When the runbook's `timeout` passes, or the run's `until`, while
    /// the procedure still runs.
    pub(super) fn deadline(&self) -> Option<Millis> {
        if self.state.timed_out || self.state.phase_settled(Phase::Main) {
            return None;
        }
        let until = self.d.until.as_ref().map(|u| u.at);
        until.into_iter().chain(self.timeout_at()).min()
    }

    fn timeout_at(&self) -> Option<Millis> {
        let limit = self.d.plan.settings.timeout?;
        let limit = Millis::try_from(limit.as_millis()).unwrap_or(Millis::MAX);
        Some(self.state.clock_from?.saturating_add(limit))
    }

    pub(super) fn time_out_if_due(&mut self) -> Result<(), StoreError> {
        match self.deadline() {
            Some(deadline) if deadline <= self.d.clock.now() => self.time_out(),
            _ => Ok(()),
        }
    }

    pub(super) fn time_out(&mut self) -> Result<(), StoreError> {
        self.record(Event::RunTimedOut {
            at: self.d.clock.now(),
        })?;
        let why = match &self.d.until {
            Some(until) if self.timeout_at().is_none_or(|t| until.at <= t) => {
                format!("stopped: {}", until.why)
            }
            _ => {
                let limit = self.d.plan.settings.timeout.unwrap_or_default();
                format!(
                    "stopped: the runbook's timeout of {} passed",
                    format_duration(limit.as_millis() as u64)
                )
            }
        };
        self.stop_all(Some(Phase::Main), &why)
    }

    /// On a stop, nothing is gained by waiting out a `wait` or an approval.
    fn pause_waiting(&mut self) {
        let plan = Arc::clone(&self.d.plan);
        let waiting: Vec<usize> = self
            .tasks
            .keys()
            .copied()
            .filter(|s| matches!(plan.steps[*s].kind.id, StepKind::Wait | StepKind::Approve))
            .collect();
        for step in waiting {
            if let Some(task) = self.tasks.remove(&step) {
                task.handle.abort();
                self.paused.push(plan.steps[step].name.clone());
            }
        }
        self.paused.sort();
    }

    /// Stops the running attempts without recording anything: they stay
    /// interrupted in the journal, for `resume` to decide about.
    fn abandon(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        let tasks: Vec<(usize, Task)> = self.tasks.drain().collect();
        for (step, task) in tasks {
            task.handle.abort();
            // Kept for `logs`; the next event written flushes it.
            let _ = self.keep_log(step, &task);
            names.push(self.d.plan.steps[step].name.clone());
        }
        names.sort();
        names
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic".into()
    }
}
