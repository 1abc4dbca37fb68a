//! The integration tests, one binary (as `just` and ripgrep have it): each
//! module drives the real binary (`common::runbook`) or the public API.
//! One binary links once; its tests share two threads, as each binary's did.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's expectation failing is its report
#![allow(unsafe_code)] // tests send signals and limits to the processes they drive

mod common;
mod standin;

mod bad_input;
mod beside;
mod cli;
mod crash;
mod diagnostics;
mod history;
mod holder;
mod kube_steps;
mod kubesim_smoke;
mod layers;
mod postgres;
mod properties;
mod real_cluster;
mod run;
mod security;
mod seed_certificate;
mod seed_checks;
mod seed_deploy;
mod seed_diagnostics;
mod seed_dr;
mod seed_postgres;
mod serve;
mod steer;
mod step_errors;
mod workflows;
