//! The engine's decisions, pure: given the plan and the journal of events so
//! far, what happens next. No I/O, no clock, no tokio there; the driver
//! (`driver.rs`) performs the decisions and records what happened as events.

pub mod approval;
mod decide;
mod driver;
mod journal;
mod ready;
mod running;
mod state;

pub use decide::{decide, field_of, step_field, Decision};
pub use driver::{
    drive, drive_from, Choices, Clock, Control, DriveError, Driver, Ended, Notes, StepCall,
    StepResult, StepRunner, SKIPPED_BY_HAND,
};
pub use journal::{
    Deadline, Journal, LogBuffer, LogLine, RecordedParam, RunId, RunMeta, StepLog, StoreError,
};
pub use state::{outcome_word, state_word, Event, Millis, Outcome, RunState, StepState};

#[cfg(test)]
mod driver_support;
#[cfg(test)]
mod driver_tests;
#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod notes_tests;
#[cfg(test)]
mod ready_tests;
#[cfg(test)]
mod tests;
