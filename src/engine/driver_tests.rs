//! The driver against an in-memory journal and steps that only pretend.

use super::*;
use crate::compile::eval::Bindings;
use crate::compile::{check, Plan, Step};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct MemoryJournal {
    events: Mutex<Vec<Event>>,
}

impl Journal for MemoryJournal {
    fn create_run(
        &self,
        file: &str,
        source: &str,
        params: Vec<(String, RecordedParam)>,
        now: u64,
    ) -> Result<RunMeta, StoreError> {
        Ok(RunMeta {
            id: RunId(1),
            file: file.into(),
            source: source.into(),
            params,
            created_at: now,
        })
    }
    fn run(&self, _: RunId) -> Result<RunMeta, StoreError> {
        self.create_run("", "", Vec::new(), 0)
    }
    fn runs(&self) -> Result<Vec<RunMeta>, StoreError> {
        Ok(Vec::new())
    }
    fn append(&self, _: RunId, event: &Event) -> Result<u64, StoreError> {
        let mut events = self.events.lock().map_err(|_| StoreError::Corrupt {
            what: "poisoned".into(),
        })?;
        events.push(event.clone());
        Ok(events.len() as u64 - 1)
    }
    fn events(&self, _: RunId) -> Result<Vec<Event>, StoreError> {
        Ok(self.events.lock().map(|e| e.clone()).unwrap_or_default())
    }
}

/// Each step takes `delay`, and fails when its name starts with "bad".
struct Pretend {
    delay: Duration,
    calls: Mutex<Vec<String>>,
}

impl StepRunner for Pretend {
    fn run(&self, step: Step, _attempt: u32) -> Pin<Box<dyn Future<Output = StepResult> + Send>> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(step.name.clone());
        }
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if step.name.starts_with("bad") {
                Err("pretended failure".into())
            } else {
                Ok(BTreeMap::new())
            }
        })
    }
}

fn plan(body: &str) -> Arc<Plan> {
    Arc::new(check(&format!("runbook t {{\n{body}\n}}\n")).expect("checks"))
}

async fn drive_with(
    plan: Arc<Plan>,
    journal: &MemoryJournal,
    runner: Arc<Pretend>,
) -> Result<Outcome, DriveError> {
    let clock = Clock::new(0);
    drive(
        plan,
        journal,
        RunId(1),
        &Bindings::default(),
        &|_| None,
        runner,
        &clock,
    )
    .await
}

fn pretend(ms: u64) -> Arc<Pretend> {
    Arc::new(Pretend {
        delay: Duration::from_millis(ms),
        calls: Mutex::new(Vec::new()),
    })
}

#[tokio::test(start_paused = true)]
async fn a_run_goes_to_its_end_with_parallel_steps() {
    let plan = plan(
        "  wait a { duration 1s }\n  wait b { duration 1s }\n  wait c after a, b { duration 1s }",
    );
    let journal = MemoryJournal::default();
    let runner = pretend(1000);
    let started = tokio::time::Instant::now();
    let outcome = drive_with(plan, &journal, Arc::clone(&runner))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(2000),
        "a and b ran together"
    );
    let events = journal.events(RunId(1)).expect("events");
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            outcome: Outcome::Succeeded,
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_step_over_its_timeout_fails() {
    let plan = plan("  wait slow {\n    duration 1s\n    timeout 500ms\n  }");
    let journal = MemoryJournal::default();
    let outcome = drive_with(plan, &journal, pretend(10_000))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::Failed);
    let events = journal.events(RunId(1)).expect("events");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::StepFailed { error, .. } if error == "timed out after 500ms")));
}

#[tokio::test(start_paused = true)]
async fn resume_never_reruns_a_finished_step_and_reruns_a_safe_interrupted_one() {
    let plan = plan("  wait a { duration 1s }\n  wait b after a { duration 1s }");
    let journal = MemoryJournal::default();
    // An earlier process recorded: a finished, b started, then died.
    for event in [
        Event::RunStarted { at: 0 },
        Event::StepStarted {
            step: 0,
            attempt: 1,
            at: 0,
        },
        Event::StepSucceeded {
            step: 0,
            at: 1,
            outputs: BTreeMap::new(),
        },
        Event::StepStarted {
            step: 1,
            attempt: 1,
            at: 2,
        },
    ] {
        journal.append(RunId(1), &event).expect("appends");
    }
    let runner = pretend(10);
    let outcome = drive_with(plan, &journal, Arc::clone(&runner))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(
        *runner.calls.lock().expect("calls"),
        ["b"],
        "a is never run again"
    );
}

#[tokio::test(start_paused = true)]
async fn resume_stops_and_asks_about_an_interrupted_step_that_changes_systems() {
    let plan = plan("  run migrate {\n    command \"./migrate\"\n  }");
    let journal = MemoryJournal::default();
    journal
        .append(RunId(1), &Event::RunStarted { at: 0 })
        .expect("appends");
    journal
        .append(
            RunId(1),
            &Event::StepStarted {
                step: 0,
                attempt: 1,
                at: 0,
            },
        )
        .expect("appends");
    let runner = pretend(10);
    let err = drive_with(plan, &journal, Arc::clone(&runner))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "these steps were interrupted while running and may have done part of their work: migrate; resume with --rerun STEP or --skip STEP for each"
    );
    assert!(
        runner.calls.lock().expect("calls").is_empty(),
        "nothing ran"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_rolled_back_through_the_driver() {
    let plan = plan("  wait bad_check { duration 1s }\n  deploy d {\n    deployment \"api\"\n    image \"api:2\"\n  }\n  rollback-if back when bad_check.failed {\n    undo d\n  }");
    let journal = MemoryJournal::default();
    let outcome = drive_with(plan, &journal, pretend(10))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::RolledBack);
}
