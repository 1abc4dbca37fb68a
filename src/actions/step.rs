//! What a step is asked to do and what it answers: the contract between the
//! run session's driver, which records every attempt in the journal, and the
//! actions that perform it. `Notes` is how a step records, durably and
//! before it changes anything, what it must not lose.

use crate::compile::Step;
use crate::engine::{LogBuffer, RunId, StepState};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The outputs of a step that succeeded, or why it failed.
pub type StepResult = Result<BTreeMap<String, String>, String>;

/// What a runner is asked to do: one attempt of a step.
#[derive(Debug, Clone)]
pub struct StepCall {
    pub run: RunId,
    pub step: Step,
    pub attempt: u32,
    /// Time already spent in this attempt before an interruption: a wait
    /// continues to its first deadline.
    pub elapsed: Duration,
    /// The steps this one depends on, settled: name, state, outputs.
    pub inputs: Vec<(String, StepState, BTreeMap<String, String>)>,
    /// Where the attempt's output goes; the driver keeps it in the journal.
    pub log: LogBuffer,
    /// What this step noted in earlier attempts, and a way to note more.
    pub notes: Notes,
    /// For a step that undoes deploys (`undo STEP`): each deploy step's
    /// name and what it noted (the pod template from before it), whether
    /// it succeeded or not.
    pub undone: Vec<(String, BTreeMap<String, String>)>,
}

/// A running step's request to record a note.
#[derive(Debug)]
pub struct NoteRequest {
    pub(crate) step: usize,
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) reply: oneshot::Sender<Result<(), String>>,
}

/// What a step has noted so far in this run, and a way to note more that
/// is durable before `keep` returns: a step records what it must not lose
/// (the state before its change) before it changes anything.
#[derive(Debug, Clone, Default)]
pub struct Notes {
    step: usize,
    known: BTreeMap<String, String>,
    to_driver: Option<mpsc::UnboundedSender<NoteRequest>>,
}

impl Notes {
    pub(crate) fn recorded(
        step: usize,
        known: BTreeMap<String, String>,
        to_driver: mpsc::UnboundedSender<NoteRequest>,
    ) -> Self {
        Notes {
            step,
            known,
            to_driver: Some(to_driver),
        }
    }

    /// Notes kept in memory only: for a step run outside a run's journal.
    pub fn unrecorded(known: BTreeMap<String, String>) -> Self {
        Notes {
            known,
            ..Notes::default()
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.known.get(key).map(String::as_str)
    }

    /// Records `key = value` in the journal and waits until it is synced.
    pub async fn keep(&mut self, key: &str, value: &str) -> Result<(), String> {
        if let Some(to_driver) = &self.to_driver {
            let (reply, answer) = oneshot::channel();
            let request = NoteRequest {
                step: self.step,
                key: key.to_string(),
                value: value.to_string(),
                reply,
            };
            let lost = || "the run stopped before the step's note could be recorded".to_string();
            to_driver.send(request).map_err(|_| lost())?;
            answer.await.map_err(|_| lost())??;
        }
        self.known.insert(key.to_string(), value.to_string());
        Ok(())
    }
}

/// Performs one attempt of a step. The actions live behind this trait, so
/// the driver can be tested with steps that only pretend.
pub trait StepRunner: Send + Sync + 'static {
    fn run(&self, call: StepCall) -> Pin<Box<dyn Future<Output = StepResult> + Send>>;
}
