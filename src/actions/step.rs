//! What a step is asked to do and what it answers: the contract between the
//! run session's driver, which records every attempt in the journal, and the
//! actions that perform it. `Notes` is how a step records, durably and
//! before it changes anything, what it must not lose.

use crate::compile::Step;
use crate::diagnostic::Span;
use crate::engine::{LogBuffer, RunId, StepState};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The outputs of a step that succeeded, or why it failed.
pub type StepResult = Result<BTreeMap<String, String>, StepError>;

/// Why an attempt failed: one sentence (what the journal keeps), what kind
/// of failure it was, and where in the runbook it points, when one place
/// is what the failure concerns (the `expect` that did not hold, the
/// `database` that refused the login, the value that has no value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub kind: FailureKind,
    pub message: String,
    pub at: Option<Span>,
    /// Whether `at` is settled: a place, or deliberately none (a missing
    /// kubeconfig is no line's fault).
    placed: bool,
}

/// What kind of failure ended an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The step's program ended with a code other than 0, or by a signal.
    Exited,
    /// The step, or what it waited for, took longer than it may.
    TimedOut,
    /// The server could not be reached, or the connection was lost.
    Unreachable,
    /// The server refused the credentials, or a permission is missing.
    Unauthorised,
    /// What the step names does not exist (a deployment, a database, a file).
    NotFound,
    /// The server answered with an error (an SQL error, an API error).
    Rejected,
    /// The check's answer was not what the step expects.
    Expectation,
    /// A value of the step could not be worked out, or cannot be used.
    Value,
    /// Anything else.
    Other,
}

impl FailureKind {
    /// How the source line it points at is labelled.
    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::Exited => "the program failed",
            FailureKind::TimedOut => "timed out",
            FailureKind::Unreachable => "could not be reached",
            FailureKind::Unauthorised => "not authorised",
            FailureKind::NotFound => "not found",
            FailureKind::Rejected => "the server answered with an error",
            FailureKind::Expectation => "the expectation failed",
            FailureKind::Value => "no usable value",
            FailureKind::Other => "failed here",
        }
    }
}

impl StepError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        StepError {
            kind,
            message: message.into(),
            at: None,
            placed: false,
        }
    }

    /// Points the failure at `span`, unless its place is already settled.
    pub fn at(mut self, span: Span) -> Self {
        if !self.placed {
            self.at = Some(span);
            self.placed = true;
        }
        self
    }

    /// Settles that the failure concerns no line of the runbook, unless it
    /// already points somewhere.
    pub fn nowhere(mut self) -> Self {
        self.placed = true;
        self
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for StepError {
    fn from(message: String) -> Self {
        StepError::new(FailureKind::Other, message)
    }
}

impl From<&str> for StepError {
    fn from(message: &str) -> Self {
        StepError::new(FailureKind::Other, message)
    }
}

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
