//! Durability before effect, watched from the steps: no attempt begins
//! (its future is first polled) before its start, and every event recorded
//! before it, is durable.

use super::*;
use crate::actions::step::*;
use crate::engine::*;
use crate::session::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Pretends, and notes each attempt that begins before its start is durable.
struct Watching {
    inner: Arc<Pretend>,
    events: Arc<Mutex<Vec<Event>>>,
    durable: Arc<AtomicUsize>,
    too_early: Arc<Mutex<Vec<String>>>,
}

impl StepRunner for Watching {
    fn run(&self, call: StepCall) -> Pin<Box<dyn Future<Output = StepResult> + Send>> {
        let (events, durable) = (Arc::clone(&self.events), Arc::clone(&self.durable));
        let too_early = Arc::clone(&self.too_early);
        let (step, attempt, name) = (call.step.id.0, call.attempt, call.step.name.clone());
        let work = self.inner.run(call);
        Box::pin(async move {
            // The attempt begins here, at its first poll.
            let durable = durable.load(Ordering::SeqCst);
            let written = events.lock().map(|e| e.clone()).unwrap_or_default();
            let start = written.iter().rposition(|e| {
                matches!(e, Event::StepStarted { step: s, attempt: a, .. } if *s == step && *a == attempt)
            });
            if start.is_none_or(|at| at >= durable) {
                if let Ok(mut early) = too_early.lock() {
                    early.push(format!(
                        "{name} began with {durable} of {} events durable",
                        written.len()
                    ));
                }
            }
            work.await
        })
    }
}

/// Twenty steps after one, two at a time, some failing and retried, then
/// one after all of them.
fn fan() -> String {
    let mut body = String::from("  concurrency 2\n  wait first { duration 1s }\n");
    for i in 0..20 {
        let name = if i % 7 == 3 { "bad" } else { "m" };
        body.push_str(&format!(
            "  wait {name}{i} after first {{\n    duration 1s\n    retry 1 every 5ms\n  }}\n"
        ));
    }
    body.push_str("  wait last after first {\n    duration 1s\n  }\n");
    body
}

#[tokio::test(start_paused = true)]
async fn no_attempt_begins_before_what_was_recorded_is_durable() {
    let journal = MemoryJournal::default();
    let pretend = pretend(3);
    let too_early = Arc::new(Mutex::new(Vec::new()));
    let runner = Arc::new(Watching {
        inner: Arc::clone(&pretend),
        events: Arc::clone(&journal.events),
        durable: Arc::clone(&journal.durable),
        too_early: Arc::clone(&too_early),
    });
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let clock = Clock::new(0);
    let bindings = crate::compile::eval::Bindings::default();
    let driver = Driver {
        plan: plan(&fan()),
        journal: &journal,
        run: RunId(1),
        bindings: &bindings,
        env: &|_| None,
        runner,
        clock: &clock,
        observe: &|_, _| {},
        failed: &|_, _| {},
        until: None,
        starter: None,
    };
    let ended = drive(&driver, &Choices::default(), rx)
        .await
        .expect("drives");
    assert_eq!(
        ended,
        Ended::Finished(Outcome::Failed),
        "the bad steps failed twice"
    );
    assert_eq!(*too_early.lock().expect("list"), Vec::<String>::new());
    assert_eq!(
        pretend.calls.lock().expect("calls").len(),
        22 + 3,
        "every step, and a second attempt of each bad one"
    );
    let written = journal.events.lock().expect("events").len();
    assert_eq!(
        journal.durable.load(Ordering::SeqCst),
        written,
        "all durable at the end"
    );
}
