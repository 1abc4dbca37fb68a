//! What steps do to the world. `steps/` holds the step adapters and the
//! `StepRunner` (`steps::LocalRunner`) that evaluates a step's properties
//! and calls them; beside it, the protocol clients (`postgres/`, `kube/`,
//! `redis/`, `http`, `tls`, `notify`) and what starts and contains programs
//! (`command`, `spawn`, `child`, `groups`, `contain`, `procs`), each a plain
//! function or type with its own tests.

mod child;
pub mod command;
pub mod contain;
pub mod files;
pub mod groups;
pub mod http;
pub mod kube;
pub mod mask;
pub mod notify;
pub mod output_file;
pub mod postgres;
pub mod procs;
pub mod redis;
pub mod spawn;
pub mod step;
pub mod steps;
pub mod tls;
