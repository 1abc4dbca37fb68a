//! A run submitted to the process that holds the store (`runbook run`
//! beside a live run, or under `runbook serve`), followed from this
//! terminal as if it ran here. Ctrl-C asks what to do: detach (the run goes
//! on) or stop it; without a terminal to ask, it stops the run as a run's
//! own Ctrl-C does, and a second one stops its running steps.

use super::view::{Mode, View};
use super::watch::Followed;
use crate::error::Error;
use crate::session::{Heard, Submitted};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

pub(super) fn follow(mut submitted: Submitted, json: bool) -> Result<u8, Error> {
    let mode = Mode::pick(json);
    let plan = Arc::clone(&submitted.plan);
    let meta = submitted.meta.clone();
    let run = meta.id.0;
    let view = View::of_run(mode, Arc::clone(&plan), &meta, Arc::clone(&submitted.shown));
    view.say(&format!(
        "run {run}: {} ({}), driven by the process that holds the store; if it is interrupted, continue it with: runbook resume {run}",
        plan.name, meta.file
    ));
    let mut shown = Followed::new(view, &plan, std::mem::take(&mut submitted.past));
    let ask = std::io::stdin().is_terminal();
    let mut stops = 0;
    let over = loop {
        match submitted.hear() {
            Heard::Shown(seen) => {
                if let Some(over) = shown.show(seen, run) {
                    break over;
                }
            }
            // Nobody reads this terminal any more: the run goes on.
            Heard::HungUp => return Ok(super::EXIT_OK),
            Heard::Interrupted => {
                stops += 1;
                if stops == 1 && ask {
                    match ask_detach_or_stop(run) {
                        Choice::Detach => {
                            shown.say(&format!(
                                "detached: run {run} goes on; `runbook watch {run}` follows it again, `runbook status {run}` shows it"
                            ));
                            return Ok(super::EXIT_OK);
                        }
                        Choice::Stop => submitted.stop(false)?,
                    }
                } else {
                    submitted.stop(stops > 1)?;
                }
            }
        }
    };
    shown.finish(run, over, mode == Mode::Json)
}

enum Choice {
    Detach,
    Stop,
}

/// Asks on the terminal; anything but `s` (or `stop`) detaches, so that an
/// Enter pressed in a hurry never stops a run.
fn ask_detach_or_stop(run: u64) -> Choice {
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\nCtrl-C: run {run} runs in the process that holds the store. Detach and leave it running [d], or stop it (running steps finish, then it stops; `runbook resume {run}` continues it) [s]? "
    );
    let _ = err.flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim() {
        "s" | "S" | "stop" => Choice::Stop,
        _ => Choice::Detach,
    }
}
