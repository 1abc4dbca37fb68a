//! What happens next, decided from the plan and the state alone.

use super::state::{Millis, Outcome, RunState, StepState};
use crate::compile::eval::{eval_in, Bindings, Value};
use crate::compile::schema::StepKind;
use crate::compile::{Edge, Phase, Plan, Step, StepId};
use crate::syntax::ast::Ident;

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Record the start, then run the step.
    Start { step: StepId, attempt: u32 },
    /// Record that the step will not run, and why.
    Skip { step: StepId, reason: String },
    /// Nothing can start before this time (a retry waits out its backoff).
    WakeAt(Millis),
    /// Record the outcome; the run is over.
    Finish(Outcome),
}

/// The decisions to carry out now, in order. An empty list means: wait for
/// a running step to report.
pub fn decide(
    plan: &Plan,
    state: &RunState,
    bindings: &Bindings,
    env: &dyn Fn(&str) -> Option<String>,
    now: Millis,
) -> Vec<Decision> {
    if state.finished.is_some() {
        return Vec::new();
    }
    if state.cancelled {
        return if state.running() == 0 {
            vec![Decision::Finish(Outcome::Cancelled)]
        } else {
            Vec::new()
        };
    }
    if state.timed_out && !state.phase_settled(Phase::Main) {
        return stop_main(plan, state);
    }
    if !state.phase_settled(Phase::Main) {
        return advance(plan, state, bindings, env, now, Phase::Main);
    }
    let outcome = if state.timed_out {
        Outcome::Failed
    } else {
        main_outcome(plan, state)
    };
    if outcome == Outcome::Failed && !state.phase_settled(Phase::OnFailure) {
        return advance(plan, state, bindings, env, now, Phase::OnFailure);
    }
    let mut decisions: Vec<Decision> = plan
        .steps
        .iter()
        .filter(|s| s.phase == Phase::OnFailure && !state.step(s.id).settled())
        .map(|s| Decision::Skip {
            step: s.id,
            reason: "the run did not fail".into(),
        })
        .collect();
    decisions.push(Decision::Finish(outcome));
    decisions
}

/// After the runbook's timeout: what has not started never will; running
/// steps are the driver's to stop.
pub(super) fn stop_main(plan: &Plan, state: &RunState) -> Vec<Decision> {
    plan.steps
        .iter()
        .filter(|s| s.phase == Phase::Main)
        .filter(|s| {
            matches!(
                state.step(s.id),
                StepState::Pending | StepState::Retrying { .. }
            )
        })
        .map(|s| Decision::Skip {
            step: s.id,
            reason: "the runbook's timeout passed".into(),
        })
        .collect()
}

/// Starts and skips within one phase.
fn advance(
    plan: &Plan,
    state: &RunState,
    bindings: &Bindings,
    env: &dyn Fn(&str) -> Option<String>,
    now: Millis,
    phase: Phase,
) -> Vec<Decision> {
    let mut capacity = plan.settings.concurrency.saturating_sub(state.running());
    let mut decisions = Vec::new();
    let mut wake: Option<Millis> = None;
    // Only the steps the state keeps as ready can start or be skipped: the
    // others wait for a dependency, run or have settled. Of the plain ones
    // (nothing to skip them for) only as many as there is room for matter.
    let mut plain = state.plain_steps().peekable();
    let mut examine = state.examine_steps().peekable();
    loop {
        let next = match (plain.peek(), examine.peek()) {
            (Some(p), Some(e)) if p < e && capacity > 0 => plain.next(),
            (Some(_), None) if capacity > 0 => plain.next(),
            (_, Some(_)) => examine.next(),
            _ => None,
        };
        let Some(i) = next else { break };
        let Some(step) = plan.steps.get(i).filter(|s| s.phase == phase) else {
            continue;
        };
        match state.step(step.id) {
            StepState::Pending => match readiness(plan, state, step, bindings, env) {
                Readiness::Waiting => {}
                Readiness::Skip(reason) => decisions.push(Decision::Skip {
                    step: step.id,
                    reason,
                }),
                Readiness::Ready if capacity > 0 => {
                    capacity -= 1;
                    let attempt = state.attempts[step.id.0] + 1;
                    decisions.push(Decision::Start {
                        step: step.id,
                        attempt,
                    });
                }
                Readiness::Ready => {}
            },
            StepState::Retrying { attempt, at } if *at <= now && capacity > 0 => {
                capacity -= 1;
                decisions.push(Decision::Start {
                    step: step.id,
                    attempt: *attempt,
                });
            }
            StepState::Retrying { at, .. } if *at > now => {
                wake = Some(wake.map_or(*at, |w| w.min(*at)));
            }
            _ => {}
        }
    }
    if decisions.is_empty() {
        decisions.extend(wake.map(Decision::WakeAt));
    }
    decisions
}

pub(super) enum Readiness {
    Waiting,
    Ready,
    Skip(String),
}

pub(super) fn readiness(
    plan: &Plan,
    state: &RunState,
    step: &Step,
    bindings: &Bindings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Readiness {
    let deps = plan.dependencies(step.id);
    if deps.iter().any(|(d, _)| !state.step(*d).settled()) {
        return Readiness::Waiting;
    }
    if let Some((dep, _)) = deps
        .iter()
        .find(|(d, why)| *why == Edge::Succeeded && *state.step(*d) != StepState::Succeeded)
    {
        return Readiness::Skip(format!("`{}` did not succeed", plan.steps[dep.0].name));
    }
    let Some(when) = &step.when else {
        return Readiness::Ready;
    };
    let fields = |path: &[Ident]| step_field(plan, state, path);
    match eval_in(when, bindings, env, &fields) {
        Value::Bool(true) => Readiness::Ready,
        Value::Bool(false) => Readiness::Skip("its condition is false".into()),
        other => Readiness::Skip(format!("its condition could not be decided ({other})")),
    }
}

/// `STEP.succeeded`, `STEP.failed`, `STEP.skipped`, `STEP.output.NAME`.
pub fn step_field(plan: &Plan, state: &RunState, path: &[Ident]) -> Option<Value> {
    let step = plan.step(&path.first()?.name)?;
    field_of(state.step(step.id), &state.outputs[step.id.0], &path[1..])
}

/// One step's field, from its state and outputs.
pub fn field_of(
    s: &StepState,
    outputs: &std::collections::BTreeMap<String, String>,
    field: &[Ident],
) -> Option<Value> {
    Some(match field.first()?.name.as_str() {
        "succeeded" => Value::Bool(*s == StepState::Succeeded),
        "failed" => Value::Bool(matches!(s, StepState::Failed { .. })),
        "skipped" => Value::Bool(matches!(s, StepState::Skipped { .. })),
        "output" => Value::Str(outputs.get(&field.get(1)?.name)?.clone()),
        _ => return None,
    })
}

/// How the procedure ended: succeeded if no step failed; rolled back if a
/// `rollback-if` ran and every failure is one it watched; failed otherwise.
pub(super) fn main_outcome(plan: &Plan, state: &RunState) -> Outcome {
    let failed: Vec<StepId> = plan
        .steps
        .iter()
        .filter(|s| s.phase == Phase::Main && matches!(state.step(s.id), StepState::Failed { .. }))
        .map(|s| s.id)
        .collect();
    if failed.is_empty() {
        return Outcome::Succeeded;
    }
    let rollbacks: Vec<&Step> = plan
        .steps
        .iter()
        .filter(|s| s.kind.id == StepKind::RollbackIf && *state.step(s.id) == StepState::Succeeded)
        .collect();
    let watched = |f: &StepId| {
        rollbacks.iter().any(|r| {
            plan.dependencies(r.id)
                .iter()
                .any(|(d, why)| d == f && *why == Edge::Settled)
        })
    };
    if !rollbacks.is_empty() && failed.iter().all(watched) {
        Outcome::RolledBack
    } else {
        Outcome::Failed
    }
}
