//! runbook: operational procedures as code that runs, checkpoints itself and resumes.
//!
//! Layers, each depending only on those above it in this list:
//! `diagnostic` → `syntax` → `compile` → `engine` → `store` → `cli`.

pub mod cli;
pub mod compile;
pub mod diagnostic;
pub mod engine;
pub mod error;
pub mod store;
pub mod syntax;
