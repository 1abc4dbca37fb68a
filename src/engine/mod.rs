//! The engine's decisions, pure: given the plan and the journal of events so
//! far, what happens next. No I/O, no clock, no tokio here; the driver (to
//! come) performs the decisions and records what happened as events.

mod decide;
mod driver;
mod journal;
mod state;

pub use decide::{decide, Decision};
pub use driver::{drive, Clock, DriveError, StepResult, StepRunner};
pub use journal::{Journal, RecordedParam, RunId, RunMeta, StoreError};
pub use state::{Event, Millis, Outcome, RunState, StepState};

#[cfg(test)]
mod driver_tests;
#[cfg(test)]
mod tests;
