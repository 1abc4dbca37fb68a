//! The last words of `run`, `resume` and `retry`: how the run ended, what
//! failed, what to do next, and the exit code that says it.

use super::run::{EXIT_CANCELLED, EXIT_ROLLED_BACK, EXIT_STOPPED};
use crate::compile::eval::format_duration;
use crate::compile::schema::StepKind;
use crate::compile::Plan;
use crate::engine::{outcome_word, Outcome, RunState, StepState};
use crate::error::Error;
use crate::session::{Clock, DriveFault, Ended, SKIPPED_BY_HAND};

fn now_ms() -> u64 {
    Clock::system().now()
}

/// The last words: how the run ended, what failed, what to do next.
pub(super) fn finish(
    run: u64,
    plan: &Plan,
    state: Option<&RunState>,
    ended: Result<Ended, DriveFault>,
    json: bool,
) -> Result<u8, Error> {
    let ended = match ended {
        Ok(ended) => ended,
        Err(DriveFault::Interrupted(steps)) => {
            let first = steps.first().cloned().unwrap_or_default();
            return Err(Error::Refused(format!(
                "run {run} cannot go on by itself: these steps were interrupted while running and may have done part of their work: {}. Check what each did, then resume with `runbook resume {run} --rerun {first}` (run it again), `--skip {first}` (leave it undone) or `--done {first}` (you finished it by hand)",
                steps.join(", ")
            )));
        }
        Err(DriveFault::Store(e)) => {
            return Err(Error::Store(format!(
                "run {run} stopped because its progress could not be recorded: {e}. Everything recorded before is kept; fix this, then continue with `runbook resume {run}`"
            )))
        }
        Err(DriveFault::Choice(why)) => return Err(Error::Usage(why)),
    };
    // Up to when it finished: the process that drove it may have gone on
    // driving other runs before these words are said.
    let elapsed = state
        .and_then(|s| Some((s.clock_from?, s.finished_at.unwrap_or_else(now_ms))))
        .map(|(from, to)| format!(" in {}", format_duration(to.saturating_sub(from))))
        .unwrap_or_default();
    let by_hand: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| {
            state.is_some_and(|st| {
                matches!(st.step(s.id), StepState::Skipped { reason } if reason == SKIPPED_BY_HAND)
            })
        })
        .map(|s| s.name.as_str())
        .collect();
    let by_hand = if by_hand.is_empty() {
        String::new()
    } else {
        format!(" (skipped by the operator: {})", by_hand.join(", "))
    };
    let (code, text) = match &ended {
        Ended::Finished(Outcome::Succeeded) => (
            super::EXIT_OK,
            format!("run {run} succeeded{elapsed}{by_hand}"),
        ),
        Ended::Finished(outcome) => {
            let failed: Vec<&crate::compile::Step> = plan
                .steps
                .iter()
                .filter(|s| {
                    state.is_some_and(|st| matches!(st.step(s.id), StepState::Failed { .. }))
                })
                .collect();
            let code = match outcome {
                Outcome::RolledBack => EXIT_ROLLED_BACK,
                Outcome::Cancelled => EXIT_CANCELLED,
                _ => super::EXIT_ERROR,
            };
            let mut text = format!("run {run} {}{elapsed}", ended_word(*outcome));
            if !failed.is_empty() {
                let names: Vec<&str> = failed.iter().map(|s| s.name.as_str()).collect();
                text.push_str(&format!("; failed: {}.", names.join(", ")));
                // An approval prints nothing: point at a step that did.
                if let Some(printed) = failed.iter().find(|s| s.kind.id != StepKind::Approve) {
                    text.push_str(&format!(" Output: `runbook logs {run} {}`;", printed.name));
                }
                text.push_str(&format!(
                    " run again from a step: `runbook retry {run} --from {}`",
                    names[0]
                ));
            }
            (code, text)
        }
        Ended::Stopped { interrupted } => {
            let mut text = format!("run {run} stopped");
            if !interrupted.is_empty() {
                text.push_str(&format!(" (interrupted: {})", interrupted.join(", ")));
            }
            text.push_str(&format!("; continue it with: runbook resume {run}"));
            (EXIT_STOPPED, text)
        }
    };
    if json {
        let word = match &ended {
            Ended::Finished(o) => outcome_word(*o),
            Ended::Stopped { .. } => "stopped",
        };
        super::view::out(&serde_json::json!({"run": run, "ended": word}).to_string());
    } else {
        super::view::out(&text);
    }
    Ok(code)
}

fn ended_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::RolledBack => "was rolled back",
        Outcome::Cancelled => "was cancelled",
    }
}
