//! Step adapters: what each kind of step does, in terms of the protocol
//! clients beside this folder (`postgres/`, `kube/`, `redis/`, `http`, `tls`,
//! `command`). `dispatch.rs` is the `StepRunner`: it matches on the step's
//! typed action and calls its adapter; `scope.rs`, `log.rs` and `sample.rs`
//! are what the adapters share, and `failure.rs` says what kind of failure
//! each client's error is.

mod dispatch;
mod failure;
mod kube;
mod log;
mod program;
mod sample;
mod scope;
mod shell;
mod sql;
mod verify;

pub use dispatch::{unsupported, LocalRunner};
pub use scope::{Env, Line, Sink, LOG_CAP, OUTPUT_CAP};
