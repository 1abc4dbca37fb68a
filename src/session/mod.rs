//! The run session: runs on this machine, driven to their end. The process
//! that holds a state directory's store drives every run started in it (its
//! own, and those other terminals submit through the socket); the driver
//! performs the engine's decisions with tokio, recording every event in the
//! journal before the effect it announces; the steps are performed by the
//! actions behind `StepRunner`.

mod answering;
mod call;
mod driver;
mod export;
mod fanout;
mod follow;
mod host;
mod kept_plan;
mod listen;
mod notes;
mod open;
mod prepare;
mod records;
mod report;
mod run;
mod running;
mod serving;
mod steer;
mod submit;
mod take;
mod tending;
mod wire;

pub use driver::{
    drive, drive_from, Choices, Clock, Control, DriveError, Driver, Ended, SKIPPED_BY_HAND,
};
pub use export::{export, import, read_export, Export};
pub use follow::{watch, Following, Seen};
pub use notes::say_notes_with;
pub use open::{
    alive, has_journal, keep_source, killed_groups_left, locked_sentence, no_store_sentence, open,
    open_or_owner, plan_and_state, plan_of, store_error, CompileAhead, Opened,
};
pub use records::{health, history, logs, runs, AttemptLog};
pub use report::{
    approved, approver, clock, prompt, recorded_bindings, runs_named, view, RunView, StepView,
};
pub use run::{leave_within, Begun, Driven, Notice, Ready, Session, Watch};
pub use serving::Serving;
pub use steer::{approve, cancel, reject, Approved, Cancelled, Rejected, Unanswered, ALLOW_AS};
pub use submit::{Heard, Submitted};
pub use wire::{DriveFault, Health};

#[cfg(test)]
mod tests;
