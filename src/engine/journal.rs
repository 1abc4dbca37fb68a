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
    ) -> Result<RunMeta, StoreError>;
    fn run(&self, id: RunId) -> Result<RunMeta, StoreError>;
    fn runs(&self) -> Result<Vec<RunMeta>, StoreError>;
    /// Appends one event and flushes; returns its sequence number.
    fn append(&self, id: RunId, event: &Event) -> Result<u64, StoreError>;
    /// The run's events, in order, each checked.
    fn events(&self, id: RunId) -> Result<Vec<Event>, StoreError>;
}
