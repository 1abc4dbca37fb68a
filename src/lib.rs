//! runbook: operational procedures as code that runs, checkpoints itself and resumes.
//!
//! Layers, each depending only on those before it in this list:
//! `diagnostic` → `syntax` → `error` → `compile` → `engine` → `scheduler` → `store` → `actions` →
//! `session` → `serve` → `cli`. `diagnostic`, `syntax`, `compile`, `engine` and `scheduler` do no I/O and
//! read no clock (`tests/integration/layers.rs`).

// Programs start with clone(2), processes are read from /proc and contained
// in cgroups: there is no other platform to fall back to.
#[cfg(not(target_os = "linux"))]
compile_error!("runbook runs on Linux only: it starts programs with clone(2), reads /proc and contains them in cgroups");

pub mod actions;
pub mod cli;
pub mod compile;
pub mod diagnostic;
pub mod engine;
pub mod error;
pub mod scheduler;
pub mod serve;
pub mod session;
pub mod store;
pub mod syntax;
