//! The engine's decisions, pure: given the plan and the journal of events so
//! far, what happens next. No I/O, no clock, no tokio here; the run session's
//! driver (`session/driver.rs`) performs the decisions and records what
//! happened as events.

pub mod approval;
mod decide;
mod journal;
mod ready;
mod state;

pub use decide::{decide, field_of, step_field, Decision};
pub use journal::{
    Deadline, Journal, LogBuffer, LogLine, RecordedParam, RunId, RunMeta, StepLog, StoreError,
};
pub use state::{
    outcome_word, state_word, Event, Millis, Outcome, Pass, RunState, Steering, StepState, Verdict,
    Vote,
};

#[cfg(test)]
mod tests;
