//! Where runs are kept. The interface is the engine's (`engine::Journal`);
//! this layer implements it on sled, and later on PostgreSQL.

mod envelope;
pub mod inbox;
pub mod locks;
pub mod private;
pub mod process;
mod schedule_store;
mod sled_open;
mod sled_store;
mod tally;

pub use crate::engine::{Deadline, Journal, RecordedParam, RunId, RunMeta, StepLog, StoreError};
pub use schedule_store::ScheduleStore;
pub use sled_store::SledStore;
