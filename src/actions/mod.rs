//! What steps do to the world. Each action is a plain async function with
//! its own tests; `local.rs` is the engine's `StepRunner` that evaluates a
//! step's properties and calls them.

mod child;
pub mod cluster;
pub mod command;
pub mod contain;
pub mod data;
pub mod files;
pub mod groups;
pub mod http;
pub mod kube;
pub mod local;
mod log;
pub mod mask;
pub mod notify;
pub mod output_file;
pub mod postgres;
pub mod procs;
pub mod redis;
pub mod shell;
pub mod spawn;
pub mod step;
pub mod tls;
pub mod verify;
