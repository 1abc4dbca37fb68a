//! The engine driven event by event, as examples; and a simulation of
//! random runbooks, drawn by proptest, that checks the invariants after
//! every event.

mod ready;

use super::*;
use crate::compile::eval::Bindings;
use crate::compile::{check, Plan, StepId};
use std::collections::BTreeMap;

fn plan(body: &str) -> Plan {
    let source = format!("runbook t {{\n{body}\n}}\n");
    check(&source).unwrap_or_else(|d| panic!("{d:#?}\n{source}"))
}

fn id(plan: &Plan, name: &str) -> StepId {
    plan.step(name)
        .map(|s| s.id)
        .unwrap_or_else(|| panic!("no step {name}"))
}

/// A run under test: its events, and the decisions of the last round.
struct Run {
    plan: Plan,
    events: Vec<Event>,
    now: Millis,
}

impl Run {
    fn new(plan: Plan) -> Self {
        Run {
            plan,
            events: vec![Event::RunStarted { at: 0 }],
            now: 0,
        }
    }

    fn state(&self) -> RunState {
        RunState::replay(&self.plan, &self.events)
    }

    /// Decides and records the decisions (starts, skips, the finish); returns them.
    fn step(&mut self) -> Vec<Decision> {
        let decisions = decide(
            &self.plan,
            &self.state(),
            &Bindings::default(),
            &|_| None,
            self.now,
        );
        for d in &decisions {
            match d {
                Decision::Start { step, attempt } => self.events.push(Event::StepStarted {
                    step: step.0,
                    attempt: *attempt,
                    at: self.now,
                }),
                Decision::Skip { step, reason } => self.events.push(Event::StepSkipped {
                    step: step.0,
                    reason: reason.clone(),
                }),
                Decision::Finish(outcome) => self.events.push(Event::RunFinished {
                    outcome: *outcome,
                    at: self.now,
                }),
                Decision::WakeAt(_) => {}
            }
        }
        decisions
    }

    fn started(&mut self) -> Vec<String> {
        self.step()
            .iter()
            .filter_map(|d| match d {
                Decision::Start { step, .. } => Some(self.plan.steps[step.0].name.clone()),
                _ => None,
            })
            .collect()
    }

    fn succeed(&mut self, name: &str) {
        let step = id(&self.plan, name).0;
        self.events.push(Event::StepSucceeded {
            step,
            at: self.now,
            outputs: BTreeMap::new(),
        });
    }

    fn fail(&mut self, name: &str) {
        let step = id(&self.plan, name).0;
        self.events.push(Event::StepFailed {
            step,
            at: self.now,
            error: "boom".into(),
        });
    }

    fn outcome(&self) -> Option<Outcome> {
        self.state().finished
    }
}

#[test]
fn independent_steps_start_together_up_to_the_concurrency() {
    let mut run = Run::new(plan(
        "  concurrency 2\n  wait a { duration 1s }\n  wait b { duration 1s }\n  wait c { duration 1s }\n  wait d after a, b, c { duration 1s }",
    ));
    assert_eq!(run.started(), ["a", "b"]);
    assert_eq!(run.started(), Vec::<String>::new(), "both slots are taken");
    run.succeed("a");
    assert_eq!(run.started(), ["c"]);
    run.succeed("b");
    run.succeed("c");
    assert_eq!(run.started(), ["d"]);
    run.succeed("d");
    run.step();
    assert_eq!(run.outcome(), Some(Outcome::Succeeded));
}

#[test]
fn a_failure_skips_what_waits_for_it_and_runs_on_failure() {
    let mut run = Run::new(plan(
        "  wait a { duration 1s }\n  wait b after a { duration 1s }\n  wait c { duration 1s }\n  on failure {\n    wait page { duration 1s }\n  }",
    ));
    assert_eq!(run.started(), ["a", "c"]);
    run.fail("a");
    let decisions = run.step();
    assert_eq!(
        decisions,
        [Decision::Skip {
            step: id(&run.plan, "b"),
            reason: "`a` did not succeed".into()
        }],
        "the other branch goes on"
    );
    run.succeed("c");
    assert_eq!(run.started(), ["page"]);
    run.succeed("page");
    run.step();
    assert_eq!(run.outcome(), Some(Outcome::Failed));
}

const ROLLING: &str = "  deploy production {\n    deployment \"api\"\n    image \"api:2\"\n  }\n  verify error_rate after production {\n    prometheus \"q\"\n    expect value < 1%\n  }\n  rollback-if revert when production.failed or error_rate.failed {\n    undo production\n  }\n  on failure {\n    wait page { duration 1s }\n  }";

#[test]
fn a_failed_verification_is_rolled_back() {
    let mut run = Run::new(plan(ROLLING));
    assert_eq!(run.started(), ["production"]);
    run.succeed("production");
    assert_eq!(run.started(), ["error_rate"]);
    run.fail("error_rate");
    assert_eq!(
        run.started(),
        ["revert"],
        "the rollback waits for the check to settle, failed or not"
    );
    run.succeed("revert");
    let decisions = run.step();
    assert!(decisions.contains(&Decision::Skip {
        step: id(&run.plan, "page"),
        reason: "the run did not fail".into()
    }));
    assert_eq!(run.outcome(), Some(Outcome::RolledBack));
}

#[test]
fn a_healthy_rollout_skips_the_rollback() {
    let mut run = Run::new(plan(ROLLING));
    run.started();
    run.succeed("production");
    run.started();
    run.succeed("error_rate");
    assert_eq!(
        run.step(),
        [Decision::Skip {
            step: id(&run.plan, "revert"),
            reason: "its condition is false".into()
        }]
    );
    run.step();
    assert_eq!(run.outcome(), Some(Outcome::Succeeded));
}

#[test]
fn a_retry_waits_out_its_backoff() {
    let mut run = Run::new(plan(
        "  wait w {\n    duration 1s\n    retry 2 every 10s backoff 2\n  }",
    ));
    assert_eq!(run.started(), ["w"]);
    run.fail("w");
    assert_eq!(run.step(), [Decision::WakeAt(10_000)]);
    run.now = 10_000;
    assert_eq!(
        run.step(),
        [Decision::Start {
            step: StepId(0),
            attempt: 2
        }]
    );
    run.now = 11_000;
    run.fail("w");
    assert_eq!(
        run.step(),
        [Decision::WakeAt(31_000)],
        "the second wait is twice as long"
    );
    run.now = 31_000;
    run.started();
    run.fail("w");
    run.step();
    assert_eq!(
        run.outcome(),
        Some(Outcome::Failed),
        "two retries, then it stays failed"
    );
}

#[test]
fn cancel_starts_nothing_new_and_ends_when_running_steps_report() {
    let mut run = Run::new(plan(
        "  wait a { duration 1s }\n  wait b after a { duration 1s }",
    ));
    run.started();
    run.events.push(Event::CancelRequested { at: 0 });
    assert_eq!(run.step(), []);
    run.succeed("a");
    assert_eq!(run.step(), [Decision::Finish(Outcome::Cancelled)]);
}

#[test]
fn conditions_see_outputs_of_settled_steps() {
    let mut run = Run::new(plan(
        "  run probe {\n    command \"true\"\n  }\n  wait slow when probe.output.stdout == \"slow\" { duration 1s }",
    ));
    run.started();
    let step = id(&run.plan, "probe").0;
    let outputs = BTreeMap::from([("stdout".to_string(), "slow".to_string())]);
    run.events.push(Event::StepSucceeded {
        step,
        at: 0,
        outputs,
    });
    assert_eq!(run.started(), ["slow"]);
}

/// The choices a simulation makes (the runbook's shape, each step's fate),
/// drawn by proptest: a failing case shrinks towards smaller draws, so a
/// smaller runbook and a shorter run, before it is reported.
pub(super) struct Draws {
    values: Vec<u32>,
    at: usize,
}

impl Draws {
    /// A number below `below`. A long run goes round the draws again
    /// rather than drawing zeros, which would mean "fail" and "cancel"
    /// every time.
    pub(super) fn next(&mut self, below: u64) -> u64 {
        let value = match self.values.len() {
            0 => 0,
            len => self.values[self.at % len],
        };
        self.at += 1;
        u64::from(value) % below.max(1)
    }
}

/// Runs `simulate` on `cases` sets of draws from a fixed seed (the same
/// cases every time), each set shrunk by proptest if it fails; returns
/// what the cases added up to, for the tests to check that the simulation
/// kept producing varied runs.
pub(super) fn simulate_cases<T: Default>(cases: u32, simulate: impl Fn(&mut Draws, &mut T)) -> T {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let totals = std::cell::RefCell::new(T::default());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let draws = proptest::collection::vec(proptest::num::u32::ANY, 512);
    let result = runner.run(&draws, |values| {
        simulate(&mut Draws { values, at: 0 }, &mut totals.borrow_mut());
        Ok(())
    });
    if let Err(e) = result {
        panic!("the simulation failed; the smallest draws that fail it: {e}");
    }
    totals.into_inner()
}

/// A random runbook of wait steps: each may wait for earlier ones, react to
/// an earlier one's failure, retry; some steps run on failure.
fn random_runbook(rng: &mut Draws) -> String {
    let n = 2 + rng.next(12) as usize;
    let mut body = format!("  concurrency {}\n", 1 + rng.next(4));
    let mut failure = String::new();
    for i in 0..n {
        let mut header = format!("wait s{i}");
        if i > 0 && rng.next(3) > 0 {
            header.push_str(&format!(" after s{}", rng.next(i as u64)));
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
        if i == n - 1 && rng.next(2) == 0 {
            failure = step.replace("  ", "    ");
        } else {
            body.push_str(&step);
        }
    }
    if !failure.is_empty() && !failure.contains(" after ") && !failure.contains(" when ") {
        body.push_str(&format!("  on failure {{\n{failure}  }}\n"));
    }
    body
}

#[test]
fn simulation_keeps_the_invariants_after_every_event() {
    #[derive(Default)]
    struct Totals {
        outcomes: BTreeMap<String, usize>,
        runs: usize,
        retries: usize,
    }
    let totals = simulate_cases(400, |rng, totals: &mut Totals| {
        let body = random_runbook(rng);
        let Ok(plan) = check(&format!("runbook sim {{\n{body}}}\n")) else {
            return; // a generated runbook may be unreachable; that is the compiler's business
        };
        let mut run = Run::new(plan);
        let mut succeeded_once = std::collections::HashSet::new();
        for _round in 0..10_000 {
            let state = run.state();
            if state.finished.is_some() {
                break;
            }
            let decisions = run.step();
            let after = run.state();
            for d in &decisions {
                if let Decision::Start { step, .. } = d {
                    for (dep, _) in run.plan.dependencies(*step) {
                        assert!(
                            state.step(*dep).settled(),
                            "{step:?} started before {dep:?} settled in\n{body}"
                        );
                    }
                    assert!(
                        !succeeded_once.contains(step),
                        "{step:?} ran again after succeeding in\n{body}"
                    );
                }
            }
            assert!(
                after.running() <= run.plan.settings.concurrency,
                "over the concurrency in\n{body}"
            );
            if let Some(Decision::WakeAt(t)) = decisions.last() {
                run.now = *t;
                continue;
            }
            if decisions.is_empty() {
                // Complete the longest-running step with a random fate.
                let running = after
                    .steps
                    .iter()
                    .position(|s| matches!(s, StepState::Running { .. }));
                let step =
                    running.unwrap_or_else(|| panic!("stuck with nothing running in\n{body}"));
                run.now += 1_000;
                if rng.next(3) == 0 {
                    run.events.push(Event::StepFailed {
                        step,
                        at: run.now,
                        error: "fate".into(),
                    });
                } else {
                    succeeded_once.insert(StepId(step));
                    run.events.push(Event::StepSucceeded {
                        step,
                        at: run.now,
                        outputs: BTreeMap::new(),
                    });
                }
            }
        }
        let end = run.state();
        assert!(end.finished.is_some(), "the run never finished in\n{body}");
        assert!(
            end.steps.iter().all(|s| s.settled()),
            "a step was left unsettled in\n{body}"
        );
        let incremental = run
            .events
            .iter()
            .fold(RunState::new(&run.plan), |mut s, e| {
                s.apply(&run.plan, e);
                s
            });
        assert_eq!(
            incremental.steps, end.steps,
            "replay and fold disagree in\n{body}"
        );
        totals.runs += 1;
        totals.retries += run
            .events
            .iter()
            .filter(|e| matches!(e, Event::StepStarted { attempt, .. } if *attempt > 1))
            .count();
        *totals
            .outcomes
            .entry(format!("{:?}", end.finished))
            .or_default() += 1;
    });
    // The generator must keep producing varied runs, or this test proves little.
    let Totals {
        outcomes,
        runs,
        retries,
    } = totals;
    assert!(runs > 300, "only {runs} runs");
    assert!(retries > 50, "only {retries} retries");
    assert!(outcomes.len() >= 2, "outcomes: {outcomes:?}");
}

#[test]
fn a_reset_keeps_how_each_step_ended_in_the_pass_before() {
    let p = plan("  run a { command \"true\" }\n  run b after a { command \"true\" }");
    let (a, b) = (id(&p, "a").0, id(&p, "b").0);
    let mut s = RunState::new(&p);
    for e in [
        Event::StepStarted {
            step: a,
            attempt: 1,
            at: 0,
        },
        Event::StepSucceeded {
            step: a,
            at: 1,
            outputs: Default::default(),
        },
        Event::StepStarted {
            step: b,
            attempt: 1,
            at: 2,
        },
        Event::StepFailed {
            step: b,
            at: 3,
            error: "exited with code 3".into(),
        },
        Event::Reset {
            steps: vec![b],
            at: 4,
        },
        Event::StepStarted {
            step: b,
            attempt: 2,
            at: 5,
        },
        Event::StepSucceeded {
            step: b,
            at: 6,
            outputs: Default::default(),
        },
    ] {
        s.apply(&p, &e);
    }
    assert_eq!(s.pass, 2);
    assert!(s.earlier[a].is_empty(), "a was not run again");
    assert_eq!(
        s.earlier[b],
        vec![Pass {
            pass: 1,
            state: StepState::Failed {
                error: "exited with code 3".into()
            },
            attempts: (1, 1),
        }]
    );
    assert_eq!(s.step(StepId(b)), &StepState::Succeeded);
}
