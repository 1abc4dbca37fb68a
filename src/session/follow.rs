//! `runbook watch RUN` from another terminal: the process that drives the
//! run sends what it recorded so far, then everything its own terminal is
//! shown, as it happens, until the run ends or that process stops.

use super::call::{ask_or, connect, send, Reached};
use super::open::{plan_and_state, plan_of, store_error, CompileAhead};
use super::records::unexpected;
use super::report::recorded_bindings;
use super::wire::{read_line, Answer, Frame, Request, ANSWER_LIMIT};
use crate::actions::step::StepError;
use crate::compile::eval::Bindings;
use crate::compile::Plan;
use crate::engine::{outcome_word, Event, RunId, RunMeta};
use crate::error::Error;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A live run being followed.
pub struct Following {
    pub meta: RunMeta,
    pub plan: Arc<Plan>,
    /// The parameters as recorded (secrets as markers).
    pub shown: Arc<Bindings>,
    /// What the run recorded before it was followed, oldest first.
    pub past: Vec<Event>,
    reader: BufReader<UnixStream>,
}

/// What the run shows next.
pub enum Seen {
    Event(Event),
    Line {
        step: String,
        err: bool,
        text: String,
    },
    Failure {
        step: usize,
        error: StepError,
    },
    /// The run's own terminal asked it to stop.
    Stopping,
    /// This follower fell behind and missed that many frames.
    Missed(u64),
    /// The drive ended in an error: why (`Ended` follows).
    DriveFailed(super::wire::DriveFault),
    /// The drive ended: the run finished, or its process stopped it.
    Ended,
    /// The process that drives the run went away without a word (killed).
    Gone,
}

/// Starts following run `run` of `state_dir`, which a process drives now.
pub fn watch(state_dir: &Path, run: u64) -> Result<Following, Error> {
    let request = Request::Watch { run };
    let began = std::time::Instant::now();
    loop {
        let Some(stream) = connect(state_dir)? else {
            // No process serves the directory: the run is not live.
            return Err(not_running(state_dir, run));
        };
        let mut reader = BufReader::new(stream);
        match send(&mut reader, state_dir, &request, Duration::from_secs(60))? {
            Reached::Answered(Answer::Watching { meta, events }) => {
                let plan = Arc::new(plan_of(&meta)?);
                let shown = Arc::new(recorded_bindings(&meta, &plan));
                // Frames may be hours apart (an approval waits): no bound.
                let _ = reader.get_ref().set_read_timeout(None);
                return Ok(Following {
                    meta,
                    plan,
                    shown,
                    past: events,
                    reader,
                });
            }
            Reached::Answered(other) => return Err(unexpected(other)),
            // That process was on its way out: look again, a while.
            Reached::Ended | Reached::Nobody if began.elapsed() < Duration::from_secs(12) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Reached::Ended | Reached::Nobody => return Err(not_running(state_dir, run)),
        }
    }
}

impl Following {
    /// The next thing the run shows; blocks until there is one.
    pub fn next_shown(&mut self) -> Seen {
        match read_line::<Frame>(&mut self.reader, ANSWER_LIMIT) {
            Ok(Some(frame)) => seen(frame),
            Ok(None) | Err(_) => Seen::Gone,
        }
    }
}

/// What a frame shows.
pub(super) fn seen(frame: Frame) -> Seen {
    match frame {
        Frame::Event { event, .. } => Seen::Event(event),
        Frame::Line { step, err, text } => Seen::Line { step, err, text },
        Frame::Failure {
            step,
            kind,
            message,
            at,
        } => {
            let error = StepError::new(kind, message);
            Seen::Failure {
                step,
                error: match at {
                    Some(span) => error.at(span),
                    None => error.nowhere(),
                },
            }
        }
        Frame::Stopping => Seen::Stopping,
        Frame::Missed { missed } => Seen::Missed(missed),
        Frame::DriveFailed(fault) => Seen::DriveFailed(fault),
        Frame::Ended => Seen::Ended,
    }
}

/// Why run `run` cannot be followed when no process serves the directory.
fn not_running(state_dir: &Path, run: u64) -> Error {
    let said = ask_or(
        state_dir,
        run,
        &Request::Status { run: Some(run) },
        Duration::from_secs(60),
        |answer| match answer {
            Answer::Runs(_) => Ok(format!(
                "run {run} is not running; `runbook status {run}` shows where it stands"
            )),
            other => Err(unexpected(other)),
        },
        |store| {
            let meta = store.run(RunId(run)).map_err(store_error)?;
            let (_, state) = plan_and_state(state_dir, &*store, &meta, CompileAhead::none())?;
            Ok(match state.finished {
                Some(outcome) => format!(
                    "run {run} has finished ({}); `runbook status {run}` shows how, `runbook logs {run}` what it printed",
                    outcome_word(outcome)
                ),
                None => format!(
                    "run {run} is not running: no process drives it; `runbook resume {run}` continues it"
                ),
            })
        },
        &mut || {},
    );
    match said {
        Ok(sentence) => Error::Refused(sentence),
        Err(e) => e,
    }
}
