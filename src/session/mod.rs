//! The run session: one run on this machine, driven to its end. The driver
//! performs the engine's decisions with tokio, recording every event in the
//! journal before the effect it announces; the steps are performed by the
//! actions behind `StepRunner`.

mod call;
mod driver;
mod fanout;
mod follow;
mod kept_plan;
mod listen;
mod notes;
mod open;
mod records;
mod report;
mod run;
mod running;
mod steer;
mod tending;
mod wire;

pub use driver::{
    drive, drive_from, Choices, Clock, Control, DriveError, Driver, Ended, SKIPPED_BY_HAND,
};
pub use follow::{watch, Following, Seen};
pub use notes::say_notes_with;
pub use open::{
    alive, has_journal, keep_source, killed_groups_left, locked_sentence, no_store_sentence, open,
    open_or_owner, open_to_write, plan_and_state, plan_of, rebind, store_error, CompileAhead,
    Opened,
};
pub use records::{history, logs, runs, AttemptLog};
pub use report::{approved, approver, clock, prompt, recorded_bindings, view, RunView, StepView};
pub use run::{leave_within, Driven, Notice, Ready, Session, Watch};
pub use steer::{approve, cancel, Approved, Cancelled, Unanswered};

#[cfg(test)]
mod tests;
