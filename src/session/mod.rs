//! The run session: one run on this machine, driven to its end. The driver
//! performs the engine's decisions with tokio, recording every event in the
//! journal before the effect it announces; the steps are performed by the
//! actions behind `StepRunner`.

mod driver;
mod running;

pub use driver::{
    drive, drive_from, Choices, Clock, Control, DriveError, Driver, Ended, SKIPPED_BY_HAND,
};

#[cfg(test)]
mod driver_support;
#[cfg(test)]
mod driver_tests;
#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod notes_tests;
