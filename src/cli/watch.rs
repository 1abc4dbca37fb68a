//! `runbook watch RUN`: a live run followed from another terminal, shown
//! as its own terminal shows it, with the same last words and exit code.

use super::view::{Mode, View};
use crate::actions::steps::Line;
use crate::engine::{RunState, StepState};
use crate::error::Error;
use crate::session::{Ended, Seen};
use std::path::Path;
use std::sync::Arc;

pub fn watch(state_dir: &Path, run: u64, json: bool) -> Result<u8, Error> {
    let mut following = crate::session::watch(state_dir, run)?;
    let mode = Mode::pick(json);
    let plan = Arc::clone(&following.plan);
    let meta = following.meta.clone();
    let mut view = View::of_run(mode, Arc::clone(&plan), &meta, Arc::clone(&following.shown));
    view.say(&format!(
        "watching run {run}: {} ({}); Ctrl-C stops watching, not the run",
        plan.name, meta.file
    ));
    // What it did before, as it was shown, then what it does.
    let mut state = RunState::new(&plan);
    for event in std::mem::take(&mut following.past) {
        state.apply(&plan, &event);
        view.event(&event, &state);
    }
    let gone = loop {
        match following.next_shown() {
            Seen::Event(event) => {
                state.apply(&plan, &event);
                view.event(&event, &state);
            }
            Seen::Line { step, err, text } => view.line(Line {
                step: &step,
                err,
                text: &text,
            }),
            Seen::Failure { step, error } => view.failure(step, &error),
            Seen::Stopping => view.say(
                "the run's own terminal asked it to stop: no new step starts; running steps finish and are recorded",
            ),
            Seen::Missed(missed) => view.say(&format!(
                "(this terminal fell behind and missed {missed} lines; `runbook logs {run}` has them)"
            )),
            Seen::Ended => break false,
            Seen::Gone => break true,
        }
    };
    view.close();
    if gone && state.finished.is_none() {
        return Err(Error::Unanswered(format!(
            "run {run}'s process went away (killed?) before the run finished; `runbook status {run}` shows where it stopped, `runbook resume {run}` continues it"
        )));
    }
    let ended = match state.finished {
        Some(outcome) => Ended::Finished(outcome),
        None => Ended::Stopped {
            interrupted: plan
                .steps
                .iter()
                .filter(|s| matches!(state.step(s.id), StepState::Running { .. }))
                .map(|s| s.name.clone())
                .collect(),
        },
    };
    super::run_end::finish(run, &plan, Some(&state), Ok(ended), mode == Mode::Json)
}
