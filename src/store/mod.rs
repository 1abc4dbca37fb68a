//! Where runs are kept. The interface is the engine's (`engine::Journal`);
//! this layer implements it on sled, and later on PostgreSQL.

mod envelope;
mod sled_store;

pub use crate::engine::{Journal, RecordedParam, RunId, RunMeta, StoreError};
pub use sled_store::SledStore;
