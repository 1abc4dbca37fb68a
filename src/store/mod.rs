//! Where runs are kept. What the layers above see is an interface: the
//! engine's `Journal` (runs with their exact source, append-only events,
//! step logs) as a `RunStore`, and the scheduler's `ScheduleStore`; this
//! layer implements both on sled 0.34, the embedded default, and nothing
//! above it names sled. The interface takes `&self` everywhere and is
//! `Send + Sync`, so a store that several processes share (PostgreSQL, later)
//! fits behind it; sled is held by one process at a time, which `open_runs`
//! reports as `StoreError::Locked`.

pub mod accounts;
mod envelope;
pub mod locks;
pub mod owner;
pub mod private;
pub mod process;
mod schedule_store;
mod sled_open;
mod sled_store;
mod tally;

pub use crate::engine::{Deadline, Journal, RecordedParam, RunId, RunMeta, StepLog, StoreError};
use crate::scheduler::{EntryState, Record};
use std::path::Path;

/// The runs of one state directory, whatever keeps them.
pub trait RunStore: Journal + Send + Sync {
    /// What the store repaired when it was opened, as a sentence for the
    /// operator (a damaged snapshot set aside, and where to), if anything.
    fn repaired(&self) -> Option<String>;
}

/// Opens the runs kept in `dir` (`STATE/journal`), made when missing; the
/// caller has checked the state directory (`private::state_dir`).
pub fn open_runs(dir: &Path) -> Result<Box<dyn RunStore>, StoreError> {
    Ok(Box::new(sled_store::SledStore::open(dir)?))
}

/// The process that holds the runs in `dir`, when one does and it can be
/// learned (from the kernel's record of file locks).
pub fn runs_holder(dir: &Path) -> Option<u32> {
    sled_store::SledStore::holder(dir)
}

/// What `runbook serve` keeps between checks and restarts: per scheduled
/// runbook, its `EntryState` and its history, append-only. Every write is
/// durable before it returns. Errors are sentences.
pub trait ScheduleStore: Send + Sync {
    /// One runbook's state, if it was ever saved.
    fn entry(&self, name: &str) -> Result<Option<EntryState>, String>;
    /// Every runbook's state, and the names whose state could not be read.
    fn entries(&self) -> Result<Entries, String>;
    /// Saves a runbook's state and appends its new history records, at once.
    fn save(&self, name: &str, state: &EntryState, records: &[Record]) -> Result<(), String>;
    /// A runbook's last `limit` history records, oldest first.
    fn history(&self, name: &str, limit: usize) -> Result<Vec<Record>, String>;
}

/// Every scheduled runbook's saved state, by name, and the names whose
/// state could not be read (damaged: the scheduler says so and starts them
/// afresh).
pub type Entries = (Vec<(String, EntryState)>, Vec<String>);

/// Opens the scheduler's store at `path` (`STATE/scheduler`), or says in a
/// sentence why not (another scheduler holds it).
pub fn open_schedules(path: &Path) -> Result<Box<dyn ScheduleStore>, String> {
    Ok(Box::new(schedule_store::SledSchedules::open(path)?))
}
