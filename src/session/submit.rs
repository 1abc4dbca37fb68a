//! `runbook run`, `resume` or `retry` while another process holds the
//! store: the run is submitted to that process through the state
//! directory's socket, with this terminal's environment and working
//! directory, and followed from here as if it ran here. Ctrl-C is the
//! caller's to answer: detach (the run goes on), or stop the run as its
//! own terminal's Ctrl-C would.

use super::call::{connect, send, Reached};
use super::follow::{seen, Seen};
use super::open::plan_of;
use super::records::unexpected;
use super::report::recorded_bindings;
use super::tending::Signals;
use super::wire::{read_line, Answer, Frame, Request, Submission, What, ANSWER_LIMIT};
use crate::compile::eval::Bindings;
use crate::compile::Plan;
use crate::engine::{Event, RunMeta};
use crate::error::Error;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A submission the process that holds the store took.
pub(super) struct Accepted {
    meta: RunMeta,
    past: Vec<Event>,
    reader: BufReader<UnixStream>,
}

/// Submits `what`, with this process's environment and working directory;
/// `None` when no process serves the socket, or the one there is leaving
/// (the caller waits for the store).
pub(super) fn submit(state_dir: &Path, what: &What) -> Result<Option<Accepted>, Error> {
    let Some(stream) = connect(state_dir)? else {
        return Ok(None);
    };
    let dir = std::env::current_dir()
        .map_err(|e| Error::Start(format!("cannot tell which directory this is: {e}")))?;
    // Variables whose name or value is not UTF-8 cannot be carried; a
    // program that needs one is run from a terminal of the holder's.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let request = Request::Submit(Submission {
        what: what.clone(),
        env,
        dir,
    });
    let mut reader = BufReader::new(stream);
    // Preparing a run reads its journal and compiles its runbook: a large
    // one takes seconds.
    match send(&mut reader, state_dir, &request, Duration::from_secs(60))? {
        Reached::Answered(Answer::Started { meta, events }) => {
            // Frames may be hours apart (an approval waits): no bound.
            let _ = reader.get_ref().set_read_timeout(None);
            Ok(Some(Accepted {
                meta,
                past: events,
                reader,
            }))
        }
        Reached::Answered(Answer::Closing) | Reached::Ended | Reached::Nobody => Ok(None),
        Reached::Answered(other) => Err(unexpected(other)),
    }
}

/// A submitted run, followed from this terminal.
pub struct Submitted {
    pub meta: RunMeta,
    pub plan: Arc<Plan>,
    /// The parameters as recorded (secrets as markers).
    pub shown: Arc<Bindings>,
    /// What the run recorded before (a resume's, a retry's), oldest first.
    pub past: Vec<Event>,
    state_dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    signals: Signals,
    frames: tokio::sync::mpsc::UnboundedReceiver<Option<Frame>>,
}

/// What the follower hears next.
pub enum Heard {
    Shown(Seen),
    /// Ctrl-C or SIGTERM reached this command.
    Interrupted,
    /// The terminal went away (SIGHUP).
    HungUp,
}

impl Submitted {
    pub(super) fn new(
        accepted: Accepted,
        state_dir: &Path,
        runtime: tokio::runtime::Runtime,
        signals: Signals,
    ) -> Result<Submitted, Error> {
        let Accepted {
            meta,
            past,
            mut reader,
        } = accepted;
        let plan = Arc::new(plan_of(&meta)?);
        let shown = Arc::new(recorded_bindings(&meta, &plan));
        let (tx, frames) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("following".into())
            .spawn(move || loop {
                match read_line::<Frame>(&mut reader, ANSWER_LIMIT) {
                    Ok(Some(frame)) => {
                        if tx.send(Some(frame)).is_err() {
                            return;
                        }
                    }
                    Ok(None) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                }
            })
            .map_err(|e| Error::Start(format!("cannot follow the run: {e}")))?;
        Ok(Submitted {
            meta,
            plan,
            shown,
            past,
            state_dir: state_dir.to_path_buf(),
            runtime,
            signals,
            frames,
        })
    }

    /// The next thing heard; blocks until there is one.
    pub fn hear(&mut self) -> Heard {
        let Submitted {
            runtime,
            signals,
            frames,
            ..
        } = self;
        runtime.block_on(async {
            tokio::select! {
                frame = frames.recv() => match frame {
                    Some(Some(frame)) => Heard::Shown(seen(frame)),
                    Some(None) | None => Heard::Shown(Seen::Gone),
                },
                _ = signals.interrupt.recv() => Heard::Interrupted,
                _ = signals.terminate.recv() => Heard::Interrupted,
                _ = signals.hangup.recv() => Heard::HungUp,
            }
        })
    }

    /// Stops the run as its own terminal's Ctrl-C would: nothing new
    /// starts (`now`: its running steps are stopped too, left interrupted
    /// for `resume`).
    pub fn stop(&self, now: bool) -> Result<(), Error> {
        let run = self.meta.id.0;
        let request = Request::Stop { run, now };
        match super::call::ask(&self.state_dir, &request, Duration::from_secs(30))? {
            Reached::Answered(Answer::Stopping) => Ok(()),
            Reached::Answered(Answer::Failed(f)) => Err(f.into()),
            Reached::Answered(other) => Err(unexpected(other)),
            Reached::Nobody | Reached::Ended => Err(Error::Unanswered(format!(
                "the process that drives run {run} has gone; `runbook status {run}` shows where it stopped"
            ))),
        }
    }
}
