//! `runbook watch RUN`: a live run followed from another terminal, shown
//! as its own terminal shows it, with the same last words and exit code.
//! A run this command submitted to the process that holds the store is
//! followed the same way (`submitted.rs`).

use super::view::{Mode, View};
use crate::actions::steps::Line;
use crate::compile::Plan;
use crate::engine::{RunState, StepState};
use crate::error::Error;
use crate::session::{DriveFault, Ended, Seen};
use std::path::Path;
use std::sync::Arc;

pub fn watch(state_dir: &Path, run: u64, json: bool) -> Result<u8, Error> {
    let mut following = crate::session::watch(state_dir, run)?;
    let mode = Mode::pick(json);
    let plan = Arc::clone(&following.plan);
    let meta = following.meta.clone();
    let view = View::of_run(mode, Arc::clone(&plan), &meta, Arc::clone(&following.shown));
    view.say(&format!(
        "watching run {run}: {} ({}); Ctrl-C stops watching, not the run",
        plan.name, meta.file
    ));
    let mut shown = Followed::new(view, &plan, std::mem::take(&mut following.past));
    let over = loop {
        if let Some(over) = shown.show(following.next_shown(), run) {
            break over;
        }
    };
    shown.finish(run, over, mode == Mode::Json)
}

/// A run followed from this terminal: its view, and its state folded from
/// what it shows.
pub(super) struct Followed {
    view: View,
    plan: Arc<Plan>,
    state: RunState,
    fault: Option<DriveFault>,
}

/// How following a run ended.
pub(super) enum Over {
    /// Its drive ended (the run finished, or was stopped).
    Ended,
    /// The process that drove it went away without a word.
    Gone,
}

impl Followed {
    /// What the run did before, shown as it was, then what it does.
    pub(super) fn new(mut view: View, plan: &Arc<Plan>, past: Vec<crate::engine::Event>) -> Self {
        let mut state = RunState::new(plan);
        for event in past {
            state.apply(plan, &event);
            view.event(&event, &state);
        }
        Followed {
            view,
            plan: Arc::clone(plan),
            state,
            fault: None,
        }
    }

    pub(super) fn say(&mut self, text: &str) {
        self.view.say(text);
    }

    /// Shows `seen`; `Some` once there is nothing more to show.
    pub(super) fn show(&mut self, seen: Seen, run: u64) -> Option<Over> {
        match seen {
            Seen::Event(event) => {
                self.state.apply(&self.plan, &event);
                self.view.event(&event, &self.state);
            }
            Seen::Line { step, err, text } => self.view.line(Line {
                step: &step,
                err,
                text: &text,
            }),
            Seen::Failure { step, error } => self.view.failure(step, &error),
            Seen::Stopping => self.view.say(
                "the run was asked to stop: no new step starts; running steps finish and are recorded",
            ),
            Seen::Missed(missed) => self.view.say(&format!(
                "(this terminal fell behind and missed {missed} lines; `runbook logs {run}` has them)"
            )),
            Seen::DriveFailed(fault) => self.fault = Some(fault),
            Seen::Ended => return Some(Over::Ended),
            Seen::Gone => return Some(Over::Gone),
        }
        None
    }

    /// The last words, as the run's own terminal says them.
    pub(super) fn finish(mut self, run: u64, over: Over, json: bool) -> Result<u8, Error> {
        self.view.close();
        let state = self.state;
        if matches!(over, Over::Gone) && state.finished.is_none() {
            return Err(Error::Unanswered(format!(
                "run {run}'s process went away (killed?) before the run finished; `runbook status {run}` shows where it stopped, `runbook resume {run}` continues it"
            )));
        }
        let ended = match (self.fault, state.finished) {
            (Some(fault), _) => Err(fault),
            (None, Some(outcome)) => Ok(Ended::Finished(outcome)),
            (None, None) => Ok(Ended::Stopped {
                interrupted: self
                    .plan
                    .steps
                    .iter()
                    .filter(|s| matches!(state.step(s.id), StepState::Running { .. }))
                    .map(|s| s.name.clone())
                    .collect(),
            }),
        };
        super::run_end::finish(run, &self.plan, Some(&state), ended, json)
    }
}
