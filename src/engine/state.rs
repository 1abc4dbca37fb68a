//! Events, and the state of a run folded from them.

use super::ready::{Class, ReadyIndex};
use crate::compile::schema::StepKind;
use crate::compile::{Phase, Plan, StepId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Milliseconds since the Unix epoch, as recorded in events.
pub type Millis = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Succeeded,
    Failed,
    RolledBack,
    Cancelled,
}

/// What happened. Events are the journal: the state of a run is nothing but
/// the fold of its events, so replaying them after a crash gives it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    RunStarted {
        at: Millis,
    },
    StepStarted {
        step: usize,
        attempt: u32,
        at: Millis,
    },
    StepSucceeded {
        step: usize,
        at: Millis,
        outputs: BTreeMap<String, String>,
    },
    /// One attempt failed; the state decides whether another follows.
    StepFailed {
        step: usize,
        at: Millis,
        error: String,
    },
    StepSkipped {
        step: usize,
        reason: String,
    },
    /// Something a running step learned and must not lose before it acts
    /// on the world: the pod template before a deploy, the time a restart
    /// stamps. Recorded (and synced) while the step runs; kept for the rest
    /// of the run, whatever becomes of the step.
    StepNoted {
        step: usize,
        key: String,
        value: String,
    },
    CancelRequested {
        at: Millis,
    },
    /// The runbook's `timeout` passed: nothing more of the procedure starts,
    /// running steps are stopped, `on failure` steps run.
    RunTimedOut {
        at: Millis,
    },
    /// `retry --from`: these steps (one and what follows it) run again; the
    /// outputs of the others are kept.
    Reset {
        steps: Vec<usize>,
        at: Millis,
    },
    RunFinished {
        outcome: Outcome,
        at: Millis,
    },
    /// One person's answer to an approval step: who (the name that
    /// counts, and the Unix account it came from), and yes or no. Kept
    /// with the step; the approval that completes the count, or a
    /// rejection, is followed by the step's end.
    Approval {
        step: usize,
        at: Millis,
        by: String,
        account: String,
        verdict: Verdict,
    },
    /// This run is a copy, imported for review from an export of another
    /// state directory's run (`from` says which): it is looked at, never
    /// resumed, retried or approved here.
    Imported {
        at: Millis,
        by: String,
        from: String,
    },
    /// Who steered the run, and how: the record of who did what (an
    /// approval's is kept with the step). Changes nothing by itself;
    /// recorded just before what it asked for.
    Steered {
        at: Millis,
        /// The Unix account, as the system named it.
        by: String,
        how: Steering,
    },
}

impl Event {
    /// When it happened, for the events that carry a time.
    pub fn at(&self) -> Option<Millis> {
        match self {
            Event::RunStarted { at }
            | Event::StepStarted { at, .. }
            | Event::StepSucceeded { at, .. }
            | Event::StepFailed { at, .. }
            | Event::CancelRequested { at }
            | Event::RunTimedOut { at }
            | Event::Reset { at, .. }
            | Event::RunFinished { at, .. }
            | Event::Approval { at, .. }
            | Event::Imported { at, .. }
            | Event::Steered { at, .. } => Some(*at),
            Event::StepSkipped { .. } | Event::StepNoted { .. } => None,
        }
    }
}

/// A person's answer to an approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Verdict {
    Approved,
    Rejected { reason: String },
}

/// An answer to an approval step, as the run keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub by: String,
    pub account: String,
    pub at: Millis,
    pub verdict: Verdict,
}

/// How a step ended in an earlier pass of its run, before `retry --from`
/// ran it again: kept, so that what the first pass did stays visible.
#[derive(Debug, Clone, PartialEq)]
pub struct Pass {
    /// The pass, counted from 1.
    pub pass: u32,
    pub state: StepState,
    /// The attempts of that pass, first and last.
    pub attempts: (u32, u32),
}

/// What a person did to a run, besides approving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Steering {
    /// `resume`, with what was said about interrupted steps.
    Resumed {
        rerun: Vec<String>,
        skip: Vec<String>,
        done: Vec<String>,
    },
    /// `retry --from STEP`.
    Retried { from: String },
    /// `cancel`.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepState {
    Pending,
    Running {
        attempt: u32,
        since: Millis,
    },
    /// Failed an attempt; the next one may start at `at`.
    Retrying {
        attempt: u32,
        at: Millis,
    },
    Succeeded,
    Failed {
        error: String,
    },
    Skipped {
        reason: String,
    },
}

impl StepState {
    pub fn settled(&self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed { .. } | StepState::Skipped { .. }
        )
    }
}

#[derive(Debug, Clone)]
pub struct RunState {
    /// Read freely; changed only by `apply`, which keeps `index` with it.
    pub steps: Vec<StepState>,
    pub outputs: Vec<BTreeMap<String, String>>,
    /// What each step noted while it ran (`Event::StepNoted`).
    pub notes: Vec<BTreeMap<String, String>>,
    /// Attempts started per step, so a retry count survives a restart.
    /// Never goes back: after `retry --from` attempts go on counting, so
    /// each attempt's log is kept.
    pub attempts: Vec<u32>,
    /// The attempts a step had used when it was last reset: its retries
    /// count from there.
    pub attempt_base: Vec<u32>,
    pub started_at: Option<Millis>,
    /// Where the runbook's `timeout` counts from: the start, or the last reset.
    pub clock_from: Option<Millis>,
    pub cancelled: bool,
    pub timed_out: bool,
    pub finished: Option<Outcome>,
    /// When it finished (the last time, after a retry).
    pub finished_at: Option<Millis>,
    /// The answers each approval step has had since it last started over.
    pub votes: Vec<Vec<Vote>>,
    /// Which pass of the run this is: 1, and one more after each `retry`.
    pub pass: u32,
    /// Where the run was imported from, when it is a copy for review.
    pub imported: Option<String>,
    /// Per step, how it ended in each earlier pass it took part in.
    pub earlier: Vec<Vec<Pass>>,
    /// How many events were folded into this state: for a state replayed
    /// from a journal, the journal's length, and the number of each event
    /// as it is recorded (followers of a live run skip what they had).
    pub applied: u64,
    /// What `decide` looks at, kept with `steps`.
    index: ReadyIndex,
}

impl RunState {
    pub fn new(plan: &Plan) -> Self {
        let n = plan.steps.len();
        let steps = vec![StepState::Pending; n];
        RunState {
            index: ReadyIndex::new(plan, &steps),
            steps,
            outputs: vec![BTreeMap::new(); n],
            notes: vec![BTreeMap::new(); n],
            attempts: vec![0; n],
            attempt_base: vec![0; n],
            votes: vec![Vec::new(); n],
            pass: 1,
            imported: None,
            earlier: vec![Vec::new(); n],
            started_at: None,
            clock_from: None,
            cancelled: false,
            timed_out: false,
            finished: None,
            finished_at: None,
            applied: 0,
        }
    }

    /// The state after `events`, from the start.
    pub fn replay<'a>(plan: &Plan, events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut state = RunState::new(plan);
        for event in events {
            state.apply(plan, event);
        }
        state
    }

    pub fn step(&self, id: StepId) -> &StepState {
        &self.steps[id.0]
    }

    /// Folds one event in. Events name steps by index into the plan the run
    /// started with; an index out of range is ignored, never a panic.
    pub fn apply(&mut self, plan: &Plan, event: &Event) {
        self.applied += 1;
        let class = |steps: &[StepState], s: usize| Some((s, Class::of(steps.get(s)?)));
        match event {
            Event::Reset { steps, .. } => {
                let unique: std::collections::BTreeSet<usize> = steps.iter().copied().collect();
                let before: Vec<(usize, Class)> = unique
                    .into_iter()
                    .filter_map(|s| class(&self.steps, s))
                    .collect();
                self.fold(plan, event);
                for (step, was) in before {
                    self.index.changed(step, was, &self.steps);
                }
            }
            Event::StepStarted { step, .. }
            | Event::StepSucceeded { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepSkipped { step, .. } => {
                let before = class(&self.steps, *step);
                self.fold(plan, event);
                if let Some((step, was)) = before {
                    self.index.changed(step, was, &self.steps);
                }
            }
            _ => self.fold(plan, event),
        }
    }

    fn fold(&mut self, plan: &Plan, event: &Event) {
        match event {
            Event::RunStarted { at } => {
                self.started_at = Some(*at);
                self.clock_from = Some(*at);
            }
            Event::StepStarted { step, attempt, at } => {
                if let Some(s) = self.steps.get_mut(*step) {
                    // An attempt started again after an interruption keeps its
                    // first start, so that a wait continues to its deadline.
                    let since = match s {
                        StepState::Running { attempt: a, since } if a == attempt => *since,
                        _ => {
                            // A new attempt of an approval asks everyone again.
                            self.votes[*step].clear();
                            *at
                        }
                    };
                    *s = StepState::Running {
                        attempt: *attempt,
                        since,
                    };
                    self.attempts[*step] = self.attempts[*step].max(*attempt);
                }
            }
            Event::StepSucceeded { step, outputs, .. } => {
                if let Some(s) = self.steps.get_mut(*step) {
                    *s = StepState::Succeeded;
                    self.outputs[*step] = outputs.clone();
                }
            }
            Event::StepFailed { step, at, error } => {
                let Some(compiled) = plan.steps.get(*step) else {
                    return;
                };
                let used = self.attempts[*step]
                    .saturating_sub(self.attempt_base[*step])
                    .max(1);
                let stopping = self.cancelled || self.timed_out;
                self.steps[*step] = match compiled.retry {
                    Some(retry) if used <= retry.attempts && !stopping => {
                        let wait =
                            retry.every.as_millis() as f64 * retry.backoff.powi(used as i32 - 1);
                        StepState::Retrying {
                            attempt: self.attempts[*step] + 1,
                            at: at.saturating_add(wait.min(u64::MAX as f64) as u64),
                        }
                    }
                    _ => StepState::Failed {
                        error: error.clone(),
                    },
                };
            }
            Event::StepSkipped { step, reason } => {
                if let Some(s) = self.steps.get_mut(*step) {
                    *s = StepState::Skipped {
                        reason: reason.clone(),
                    };
                }
            }
            Event::StepNoted { step, key, value } => {
                if let Some(notes) = self.notes.get_mut(*step) {
                    notes.insert(key.clone(), value.clone());
                }
            }
            Event::CancelRequested { .. } => self.cancelled = true,
            Event::RunTimedOut { .. } => self.timed_out = true,
            Event::Reset { steps, at } => {
                for &step in steps {
                    if step < self.steps.len() && self.steps[step] != StepState::Pending {
                        let first = self.attempt_base[step] + 1;
                        self.earlier[step].push(Pass {
                            pass: self.pass,
                            state: self.steps[step].clone(),
                            attempts: (first.min(self.attempts[step]), self.attempts[step]),
                        });
                    }
                    if step < self.steps.len() {
                        self.steps[step] = StepState::Pending;
                        self.outputs[step].clear();
                        self.votes[step].clear();
                        self.attempt_base[step] = self.attempts[step];
                    }
                }
                self.pass += 1;
                self.clock_from = Some(*at);
                self.cancelled = false;
                self.timed_out = false;
                self.finished = None;
                self.finished_at = None;
            }
            Event::RunFinished { outcome, at } => {
                self.finished = Some(*outcome);
                self.finished_at = Some(*at);
            }
            Event::Approval {
                step,
                at,
                by,
                account,
                verdict,
            } => {
                if let Some(votes) = self.votes.get_mut(*step) {
                    votes.push(Vote {
                        by: by.clone(),
                        account: account.clone(),
                        at: *at,
                        verdict: verdict.clone(),
                    });
                }
            }
            Event::Imported { from, .. } => self.imported = Some(from.clone()),
            Event::Steered { .. } => {}
        }
    }

    /// Steps of the plan an approval is awaited for.
    pub fn awaiting_approval<'p>(&self, plan: &'p Plan) -> Vec<&'p crate::compile::Step> {
        plan.steps
            .iter()
            .filter(|s| s.kind.id == StepKind::Approve)
            .filter(|s| matches!(self.step(s.id), StepState::Running { .. }))
            .collect()
    }

    pub fn running(&self) -> usize {
        self.index.running()
    }

    /// Whether every step of `phase` has settled.
    pub fn phase_settled(&self, phase: Phase) -> bool {
        self.index.phase_settled(phase)
    }

    /// Pending steps whose dependencies have all settled as they need,
    /// with no condition: they start, in plan order, as room allows.
    pub fn plain_steps(&self) -> impl Iterator<Item = usize> + '_ {
        self.index.plain()
    }

    /// The other steps that may start or be skipped now, in plan order:
    /// pending with every dependency settled but a condition to evaluate or
    /// a dependency that did not succeed, and steps waiting to retry.
    pub fn examine_steps(&self) -> impl Iterator<Item = usize> + '_ {
        self.index.examine()
    }

    /// The index as computed afresh from the steps' states: for tests that
    /// check the one kept event by event.
    #[cfg(test)]
    pub fn index_is_current(&self, plan: &Plan) -> bool {
        self.index == ReadyIndex::new(plan, &self.steps)
    }
}

/// How an outcome reads in a sentence.
pub fn outcome_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::RolledBack => "rolled back",
        Outcome::Cancelled => "cancelled",
    }
}

/// How a step's state reads in a sentence.
pub fn state_word(state: &StepState) -> &'static str {
    match state {
        StepState::Pending => "pending",
        StepState::Running { .. } => "running",
        StepState::Retrying { .. } => "waiting to retry",
        StepState::Succeeded => "succeeded",
        StepState::Failed { .. } => "failed",
        StepState::Skipped { .. } => "skipped",
    }
}
