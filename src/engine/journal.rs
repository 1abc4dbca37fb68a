//! The journal's interface, as the engine's driver needs it: runs with the
//! exact source they started with, and an append-only list of events. The
//! stores implement it (sled now, PostgreSQL later).

use super::Event;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A run's number in its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunId(pub u64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A parameter as the run recorded it: a secret only as where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RecordedParam {
    Value(String),
    /// Resolved again from the environment when the run resumes.
    SecretFromEnv(String),
    /// Given with `-p` when the run started; not kept, so `resume` needs it again.
    SecretGiven,
}

/// What a run started with: the exact source, so that resume runs what was
/// started even if the file changed since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub id: RunId,
    pub file: String,
    pub source: String,
    pub params: Vec<(String, RecordedParam)>,
    pub created_at: u64,
    /// A moment by which the procedure must be over (a maintenance
    /// window's close): then it stops as at the runbook's `timeout`, and its
    /// `on failure` steps run. Kept with the run, so a resume honours it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Deadline>,
    /// The Unix account that started it (none for runs recorded before
    /// this was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

/// A moment a run must be over by, and how to say why it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deadline {
    pub at: u64,
    /// The end of "stopped: ...", e.g. "the maintenance window closed at 04:00 UTC".
    pub why: String,
}

/// What one attempt of a step printed, kept up to a cap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub lines: Vec<LogLine>,
    /// Bytes printed beyond the cap, not kept.
    pub dropped_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Whether the line came from standard error.
    pub err: bool,
    pub text: String,
}

/// Where an attempt's output collects while it runs. The driver holds it
/// too, so that the output of an attempt stopped from outside (timeout,
/// cancel, Ctrl-C) is kept as well.
#[derive(Debug, Clone, Default)]
pub struct LogBuffer(std::sync::Arc<std::sync::Mutex<(StepLog, usize)>>);

impl LogBuffer {
    /// Keeps a line while the attempt has kept less than `cap` bytes;
    /// beyond, counts it.
    pub fn push(&self, err: bool, text: String, cap: usize) {
        if let Ok(mut kept) = self.0.lock() {
            let (log, size) = &mut *kept;
            if *size + text.len() <= cap {
                *size += text.len();
                log.lines.push(LogLine { err, text });
            } else {
                log.dropped_bytes += text.len() as u64;
            }
        }
    }

    pub fn take(&self) -> StepLog {
        self.0
            .lock()
            .map(|mut k| std::mem::take(&mut k.0))
            .unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is in use by another runbook process; wait for it to finish, or stop it, and try again")]
    Locked { path: String },
    #[error("the store at {path} was written by a newer runbook (format {found}, this one reads up to {supported}); use the newer runbook")]
    NewerFormat {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("the store is damaged: {what}; keep a copy of it for the record before you do anything else")]
    Corrupt { what: String },
    #[error("the store is damaged: run {run}'s journal reads back {found} of the {recorded} events it recorded, so it cannot be trusted and nothing will act on it; keep a copy of the store for the record before you do anything else")]
    Short {
        run: RunId,
        recorded: u64,
        found: u64,
    },
    #[error("there is no run {0}; `runbook status` lists the runs")]
    UnknownRun(RunId),
    #[error("the store at {path} cannot be used: {why}")]
    Io { path: String, why: String },
}

/// A journal of runs. Every write is durable (flushed) before it returns.
pub trait Journal {
    fn create_run(
        &self,
        file: &str,
        source: &str,
        params: Vec<(String, RecordedParam)>,
        now: u64,
        until: Option<Deadline>,
        started_by: Option<String>,
    ) -> Result<RunMeta, StoreError>;
    fn run(&self, id: RunId) -> Result<RunMeta, StoreError>;
    fn runs(&self) -> Result<Vec<RunMeta>, StoreError>;
    /// Appends one event and flushes; returns its sequence number.
    fn append(&self, id: RunId, event: &Event) -> Result<u64, StoreError> {
        let seq = self.append_unsynced(id, event)?;
        self.sync()?;
        Ok(seq)
    }
    /// Appends one event; durable only after the next `sync`. The driver
    /// syncs once per turn, before any effect the turn's events announce.
    fn append_unsynced(&self, id: RunId, event: &Event) -> Result<u64, StoreError>;
    /// Makes everything written so far durable.
    fn sync(&self) -> Result<(), StoreError>;
    /// The run's events, in order, each checked.
    fn events(&self, id: RunId) -> Result<Vec<Event>, StoreError>;
    /// Keeps what an attempt printed. Not flushed by itself: the event that
    /// records the attempt's result follows at once and flushes both.
    fn put_log(
        &self,
        id: RunId,
        step: usize,
        attempt: u32,
        log: &StepLog,
    ) -> Result<(), StoreError>;
    /// What each attempt of a step printed, by attempt.
    fn logs(&self, id: RunId, step: usize) -> Result<Vec<(u32, StepLog)>, StoreError>;
}
