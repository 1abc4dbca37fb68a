//! The ready index against what it replaces: `decide` as it was, scanning
//! every step on every turn. After every event of seeded random runs
//! (with retries, cancels and resets), the index kept event by event must
//! equal one computed afresh, and `decide` must decide what the scan does.

use super::{simulate_cases, Draws};
use crate::compile::eval::Bindings;
use crate::compile::{check, Phase, Plan, StepId};
use crate::engine::decide::{main_outcome, readiness, stop_main, Readiness};
use crate::engine::*;
use std::collections::BTreeMap;

/// `decide` before the ready index: every step looked at, every turn.
pub(super) fn decide_by_scan(plan: &Plan, state: &RunState, now: Millis) -> Vec<Decision> {
    let running = state
        .steps
        .iter()
        .filter(|s| matches!(s, StepState::Running { .. }))
        .count();
    let settled = |phase: Phase| {
        plan.steps
            .iter()
            .filter(|s| s.phase == phase)
            .all(|s| state.steps[s.id.0].settled())
    };
    if state.finished.is_some() {
        return Vec::new();
    }
    if state.cancelled {
        return if running == 0 {
            vec![Decision::Finish(Outcome::Cancelled)]
        } else {
            Vec::new()
        };
    }
    let bindings = Bindings::default();
    let advance = |phase: Phase| {
        let mut capacity = plan.settings.concurrency.saturating_sub(running);
        let mut decisions = Vec::new();
        let mut wake: Option<Millis> = None;
        for step in plan.steps.iter().filter(|s| s.phase == phase) {
            match state.step(step.id) {
                StepState::Pending => match readiness(plan, state, step, &bindings, &|_| None) {
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
    };
    if state.timed_out && !settled(Phase::Main) {
        return stop_main(plan, state);
    }
    if !settled(Phase::Main) {
        return advance(Phase::Main);
    }
    let outcome = if state.timed_out {
        Outcome::Failed
    } else {
        main_outcome(plan, state)
    };
    if outcome == Outcome::Failed && !settled(Phase::OnFailure) {
        return advance(Phase::OnFailure);
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

/// The index kept event by event is the one computed afresh, and `decide`
/// decides what the scan does.
pub(super) fn assert_same_as_scan(plan: &Plan, folded: &RunState, now: Millis, what: &str) {
    assert!(folded.index_is_current(plan), "{what}: the index drifted");
    assert_eq!(
        decide(plan, folded, &Bindings::default(), &|_| None, now),
        decide_by_scan(plan, folded, now),
        "{what}: decide and the scan disagree"
    );
}

/// Wait steps with dependencies, conditions and retries, some on failure.
fn random_plan(rng: &mut Draws) -> Option<Plan> {
    let n = 2 + rng.next(14) as usize;
    let mut body = format!("  concurrency {}\n", 1 + rng.next(4));
    let mut failure = Vec::new();
    for i in 0..n {
        let mut header = format!("wait s{i}");
        if i > 0 && rng.next(3) > 0 {
            header.push_str(&format!(" after s{}", rng.next(i as u64)));
            if i > 2 && rng.next(2) == 0 {
                header.push_str(&format!(", s{}", rng.next(i as u64)));
            }
        }
        if i > 1 && rng.next(4) == 0 {
            header.push_str(&format!(" when s{}.failed", rng.next(i as u64 - 1)));
        }
        let retry = if rng.next(3) == 0 {
            "\n    retry 2 every 1s"
        } else {
            ""
        };
        let step = format!("  {header} {{\n    duration 1s{retry}\n  }}\n");
        // A step that waits for nothing may run on failure instead.
        if i >= n - 2
            && !header.contains(" after ")
            && !header.contains(" when ")
            && rng.next(2) == 0
        {
            failure.push(step);
        } else {
            body.push_str(&step);
        }
    }
    if !failure.is_empty() {
        body.push_str("  on failure {\n");
        for step in failure {
            body.push_str(&step.replace("  ", "    "));
        }
        body.push_str("  }\n");
    }
    check(&format!("runbook sim {{\n{body}}}\n")).ok()
}

/// Records a decision as the driver would.
fn record(decision: &Decision, now: Millis) -> Option<Event> {
    Some(match decision {
        Decision::Start { step, attempt } => Event::StepStarted {
            step: step.0,
            attempt: *attempt,
            at: now,
        },
        Decision::Skip { step, reason } => Event::StepSkipped {
            step: step.0,
            reason: reason.clone(),
        },
        Decision::Finish(outcome) => Event::RunFinished {
            outcome: *outcome,
            at: now,
        },
        Decision::WakeAt(_) => return None,
    })
}

#[test]
fn the_ready_index_decides_what_a_scan_of_every_step_does() {
    #[derive(Default)]
    struct Totals {
        runs: usize,
        resets: usize,
        cancels: usize,
        events: usize,
    }
    let totals = simulate_cases(300, |rng, totals: &mut Totals| {
        let Some(plan) = random_plan(rng) else {
            return;
        };
        let mut state = RunState::new(&plan);
        let mut events = Vec::new();
        let mut now: Millis = 0;
        let fold = |state: &mut RunState, events: &mut Vec<Event>, event: Event| {
            state.apply(&plan, &event);
            events.push(event);
        };
        fold(&mut state, &mut events, Event::RunStarted { at: 0 });
        let mut resets_left = 1 + rng.next(2);
        for round in 0..2_000 {
            let what = format!("round {round}");
            assert_same_as_scan(&plan, &state, now, &what);
            assert!(
                RunState::replay(&plan, &events).index_is_current(&plan),
                "{what}: a replay's index"
            );
            if state.finished.is_some() {
                if resets_left == 0 {
                    break;
                }
                resets_left -= 1;
                // `retry --from`: a random step, what follows it, and the
                // `on failure` steps run again.
                let from = rng.next(plan.steps.len() as u64) as usize;
                let steps: Vec<usize> = (0..plan.steps.len())
                    .filter(|i| *i >= from || plan.steps[*i].phase == Phase::OnFailure)
                    .collect();
                totals.resets += 1;
                fold(&mut state, &mut events, Event::Reset { steps, at: now });
                continue;
            }
            if !state.cancelled && rng.next(40) == 0 {
                totals.cancels += 1;
                fold(&mut state, &mut events, Event::CancelRequested { at: now });
                continue;
            }
            let decisions = decide(&plan, &state, &Bindings::default(), &|_| None, now);
            for d in &decisions {
                if let Some(event) = record(d, now) {
                    fold(&mut state, &mut events, event);
                }
            }
            if let Some(Decision::WakeAt(t)) = decisions.last() {
                now = *t;
                continue;
            }
            if decisions.is_empty() {
                let Some(step) = state
                    .steps
                    .iter()
                    .position(|s| matches!(s, StepState::Running { .. }))
                else {
                    panic!("{what}: stuck");
                };
                now += 1_000;
                let event = if rng.next(3) == 0 {
                    Event::StepFailed {
                        step,
                        at: now,
                        error: "fate".into(),
                    }
                } else {
                    Event::StepSucceeded {
                        step,
                        at: now,
                        outputs: BTreeMap::new(),
                    }
                };
                fold(&mut state, &mut events, event);
            }
        }
        assert!(state.finished.is_some(), "never finished");
        totals.runs += 1;
        totals.events += events.len();
    });
    let Totals {
        runs,
        resets,
        cancels,
        events: events_seen,
    } = totals;
    assert!(runs > 200, "only {runs} runs");
    assert!(
        resets > 200 && cancels > 50,
        "{resets} resets, {cancels} cancels"
    );
    assert!(events_seen > 5_000, "only {events_seen} events");
}

#[test]
fn a_malformed_journal_leaves_the_index_whole() {
    let plan =
        check("runbook t {\n  wait a { duration 1s }\n  wait b after a { duration 1s }\n}\n")
            .expect("checks");
    let mut state = RunState::new(&plan);
    for event in [
        Event::StepSucceeded {
            step: 7,
            at: 0,
            outputs: BTreeMap::new(),
        },
        Event::Reset {
            steps: vec![1, 1, 9],
            at: 0,
        },
        Event::StepSucceeded {
            step: 0,
            at: 0,
            outputs: BTreeMap::new(),
        },
        Event::StepSucceeded {
            step: 0,
            at: 0,
            outputs: BTreeMap::new(),
        },
        Event::Reset {
            steps: vec![0, 0, 1],
            at: 0,
        },
    ] {
        state.apply(&plan, &event);
        assert!(state.index_is_current(&plan), "after {event:?}");
    }
    assert_eq!(
        state.plain_steps().collect::<Vec<_>>(),
        [StepId(0).0],
        "a waits for nothing, b for a"
    );
}
