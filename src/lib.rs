//! runbook: operational procedures as code that runs, checkpoints itself and resumes.
//!
//! Layers, each depending only on those before it in this list:
//! `diagnostic` → `syntax` → `error` → `compile` → `engine` → `scheduler` → `store` → `actions` → `cli`.

pub mod actions;
pub mod cli;
pub mod compile;
pub mod diagnostic;
pub mod engine;
pub mod error;
pub mod scheduler;
pub mod store;
pub mod syntax;
