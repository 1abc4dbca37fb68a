//! What the driver's tests share: an in-memory journal, steps that only
//! pretend, and drives of them.

mod driver;
mod durable;
mod notes;

use super::*;
use crate::actions::step::*;
use crate::compile::eval::Bindings;
use crate::compile::{check, Plan};
use crate::engine::*;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub(super) struct MemoryJournal {
    pub(super) events: Arc<Mutex<Vec<Event>>>,
    pub(super) logs: Mutex<Vec<(usize, u32, StepLog)>>,
    /// How many of the events a sync has made durable.
    pub(super) durable: Arc<AtomicUsize>,
}

impl Journal for MemoryJournal {
    fn create_run(
        &self,
        file: &str,
        source: &str,
        params: Vec<(String, RecordedParam)>,
        now: u64,
        until: Option<Deadline>,
        started_by: Option<String>,
    ) -> Result<RunMeta, StoreError> {
        Ok(RunMeta {
            id: RunId(1),
            file: file.into(),
            source: source.into(),
            params,
            created_at: now,
            until,
            started_by,
        })
    }
    fn run(&self, _: RunId) -> Result<RunMeta, StoreError> {
        self.create_run("", "", Vec::new(), 0, None, None)
    }
    fn runs(&self) -> Result<Vec<RunMeta>, StoreError> {
        Ok(Vec::new())
    }
    fn sync(&self) -> Result<(), StoreError> {
        let written = self.events.lock().map(|e| e.len()).unwrap_or(0);
        self.durable.store(written, Ordering::SeqCst);
        Ok(())
    }
    fn append_unsynced(&self, _: RunId, event: &Event) -> Result<u64, StoreError> {
        let mut events = self.events.lock().map_err(|_| StoreError::Corrupt {
            what: "poisoned".into(),
        })?;
        events.push(event.clone());
        Ok(events.len() as u64 - 1)
    }
    fn events(&self, _: RunId) -> Result<Vec<Event>, StoreError> {
        Ok(self.events.lock().map(|e| e.clone()).unwrap_or_default())
    }
    fn put_log(
        &self,
        _: RunId,
        step: usize,
        attempt: u32,
        log: &StepLog,
    ) -> Result<(), StoreError> {
        if let Ok(mut logs) = self.logs.lock() {
            logs.push((step, attempt, log.clone()));
        }
        Ok(())
    }
    fn logs(&self, _: RunId, _: usize) -> Result<Vec<(u32, StepLog)>, StoreError> {
        Ok(Vec::new())
    }
}

/// Each step takes `delay`, and fails when its name starts with "bad".
pub(super) struct Pretend {
    pub(super) delay: Duration,
    pub(super) calls: Mutex<Vec<String>>,
}

impl StepRunner for Pretend {
    fn run(&self, call: StepCall) -> Pin<Box<dyn Future<Output = StepResult> + Send>> {
        let step = call.step;
        call.log
            .push(false, format!("hello from {}", step.name), 1024);
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(step.name.clone());
        }
        let delay = self.delay;
        let (mut notes, undone, attempt) = (call.notes, call.undone, call.attempt);
        Box::pin(async move {
            if step.name.starts_with("noting") {
                return noting(&mut notes, attempt).await;
            }
            if step.kind.id == crate::compile::schema::StepKind::Undo {
                let undid: Vec<String> = undone
                    .iter()
                    .map(|(name, notes)| {
                        format!("{name}: {}", notes.get("before").map_or("nothing", |b| b))
                    })
                    .collect();
                return Ok(BTreeMap::from([("undid".to_string(), undid.join(", "))]));
            }
            tokio::time::sleep(delay.saturating_sub(call.elapsed)).await;
            if step.name.starts_with("panic") {
                panic!("pretended panic");
            }
            if step.name.starts_with("bad") {
                Err("pretended failure".into())
            } else {
                Ok(BTreeMap::new())
            }
        })
    }
}

/// A step that notes what it saw first (once per run), fails its first
/// attempt, and reports its note on the second.
async fn noting(notes: &mut Notes, attempt: u32) -> StepResult {
    if notes.get("before").is_none() {
        notes
            .keep("before", &format!("seen by attempt {attempt}"))
            .await?;
    }
    if attempt == 1 {
        return Err("the first attempt fails".into());
    }
    let before = notes.get("before").unwrap_or_default().to_string();
    Ok(BTreeMap::from([("before".to_string(), before)]))
}

pub(super) fn plan(body: &str) -> Arc<Plan> {
    Arc::new(check(&format!("runbook t {{\n{body}\n}}\n")).expect("checks"))
}

pub(super) async fn drive_with(
    plan: Arc<Plan>,
    journal: &MemoryJournal,
    runner: Arc<Pretend>,
) -> Result<Outcome, DriveError> {
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    match steer(plan, journal, runner, &Choices::default(), rx).await? {
        Ended::Finished(outcome) => Ok(outcome),
        Ended::Stopped { .. } => panic!("stopped without being asked to"),
    }
}

pub(super) async fn steer(
    plan: Arc<Plan>,
    journal: &MemoryJournal,
    runner: Arc<Pretend>,
    choices: &Choices,
    controls: tokio::sync::mpsc::UnboundedReceiver<Control>,
) -> Result<Ended, DriveError> {
    steer_at(0, plan, journal, runner, choices, controls).await
}

/// `steer` with the clock starting at `now` (milliseconds), as a resume
/// some time after the journal's events.
pub(super) async fn steer_at(
    now: Millis,
    plan: Arc<Plan>,
    journal: &MemoryJournal,
    runner: Arc<Pretend>,
    choices: &Choices,
    controls: tokio::sync::mpsc::UnboundedReceiver<Control>,
) -> Result<Ended, DriveError> {
    let clock = Clock::new(now);
    let bindings = Bindings::default();
    let driver = Driver {
        plan,
        journal,
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
    drive(&driver, choices, controls).await
}

pub(super) fn pretend(ms: u64) -> Arc<Pretend> {
    Arc::new(Pretend {
        delay: Duration::from_millis(ms),
        calls: Mutex::new(Vec::new()),
    })
}
