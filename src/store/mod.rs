//! Where runs are kept. The interface is the engine's (`engine::Journal`);
//! this layer implements it on sled, and later on PostgreSQL.

mod envelope;
pub mod inbox;
mod sled_store;

pub use crate::engine::{Deadline, Journal, RecordedParam, RunId, RunMeta, StepLog, StoreError};
pub use sled_store::SledStore;
