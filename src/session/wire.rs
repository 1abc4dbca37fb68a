//! What goes over the state directory's socket (`STATE/runbook.sock`), the
//! way into the process that holds the store: one request, one answer, each
//! a line of JSON. The socket carries no identity of its own: the server
//! learns the caller's Unix user from the kernel (`SO_PEERCRED`).

use super::records::AttemptLog;
use super::report::RunView;
use super::steer::{Approved, Cancelled};
use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

pub use crate::store::private::SOCKET;

/// The most a request may hold: a few hundred bytes, but a submitted run
/// carries its runbook (at most 2 MiB, up to six times that as JSON) and
/// its terminal's environment.
pub const REQUEST_LIMIT: u64 = 32 << 20;

/// The most an answer may hold (a view of 80,000 steps takes about 20 MB;
/// every run of a busy directory, more).
pub const ANSWER_LIMIT: u64 = 512 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Every run (`run: None`) or one.
    Status {
        run: Option<u64>,
    },
    /// What each attempt of run `run`'s steps (or of one step) printed.
    Logs {
        run: u64,
        step: Option<String>,
    },
    /// Approve `step` of `run`; `by` is the name given with `--as` (where
    /// the holder allows names), the account is the caller's, as the
    /// kernel says.
    Approve {
        run: u64,
        step: String,
        by: Option<String>,
    },
    /// Reject `step` of `run`, saying why: the step fails.
    Reject {
        run: u64,
        step: String,
        by: Option<String>,
        reason: String,
    },
    Cancel {
        run: u64,
    },
    /// Follow the live run `run`: an answer, then `Frame`s until it ends.
    Watch {
        run: u64,
    },
    /// Everything run `run` recorded: what it started with, every event.
    History {
        run: u64,
    },
    /// Start, resume or retry a run in the process that holds the store,
    /// then follow it: an answer (`Started`), then `Frame`s until it ends.
    Submit(Submission),
    /// How the process that holds the store stands (`runbook health`).
    Health,
    /// Run `run` as one document (`runbook export`).
    Export {
        run: u64,
    },
    /// A copy of an exported run, to be kept as a new run for review.
    Import(Box<super::export::Export>),
    /// Stop run `run` as its own terminal's Ctrl-C would: start nothing
    /// new (`now`: stop its running steps too).
    Stop {
        run: u64,
        now: bool,
    },
}

/// A run submitted from another terminal: what to do, and the terminal's
/// environment and working directory, which its programs get.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub what: What,
    pub env: Vec<(String, String)>,
    pub dir: std::path::PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum What {
    /// `runbook run`: the source as read (and checked) by the command.
    Start {
        file: String,
        source: String,
        params: Vec<(String, String)>,
        until: Option<crate::engine::Deadline>,
    },
    Resume {
        run: u64,
        params: Vec<(String, String)>,
        choices: super::Choices,
    },
    Retry {
        run: u64,
        from: String,
        params: Vec<(String, String)>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    /// The run followed: what it started with, and its events so far
    /// (`Frame`s follow, one per line, from the next event on).
    Watching {
        meta: crate::engine::RunMeta,
        events: Vec<crate::engine::Event>,
    },
    History {
        meta: crate::engine::RunMeta,
        events: Vec<crate::engine::Event>,
    },
    /// A submitted run taken: what it started with, and what it recorded
    /// before (a resume's, a retry's); `Frame`s follow until it ends.
    Started {
        meta: crate::engine::RunMeta,
        events: Vec<crate::engine::Event>,
    },
    /// The process that holds the store is stopping or leaving and takes
    /// no new run: it lets the store go shortly.
    Closing,
    /// A `Stop` passed to the run's driver.
    Stopping,
    Exported(Box<super::export::Export>),
    Health(Health),
    /// The copy was kept as run `run`.
    Imported {
        run: u64,
    },
    Runs(Vec<RunView>),
    Logs(Vec<(String, Vec<AttemptLog>)>),
    Approved(Approved),
    Rejected(super::steer::Rejected),
    Cancelled(Cancelled),
    /// The request was refused or failed: the error the command would have
    /// met working on the store itself.
    Failed(Failure),
}

/// How the process that holds a state directory's store stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub pid: u32,
    /// The runs it drives now.
    pub live: Vec<u64>,
    /// How many runbooks it schedules, when it is a server.
    pub scheduled: Option<usize>,
    /// What it cannot do that it should: each a sentence (a runbook it
    /// cannot schedule, and why).
    pub problems: Vec<String>,
}

/// What a live run shows, as it happens, to whoever follows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Frame {
    /// An event, once recorded; `seq` is how many events the run has with
    /// it, so a follower skips what it already had.
    Event {
        seq: u64,
        event: crate::engine::Event,
    },
    /// A line a step printed, secrets already masked.
    Line {
        step: String,
        err: bool,
        text: String,
    },
    /// Why an attempt failed: its kind, sentence and place in the runbook.
    Failure {
        step: usize,
        kind: crate::actions::step::FailureKind,
        message: String,
        at: Option<crate::diagnostic::Span>,
    },
    /// The run's own terminal pressed Ctrl-C (or it got SIGTERM).
    Stopping,
    /// This follower fell behind and missed `missed` frames (the run goes
    /// on; `runbook logs` has every line).
    Missed { missed: u64 },
    /// The drive ended in an error (sent just before `Ended`).
    DriveFailed(DriveFault),
    /// The drive ended: the run finished, or its process stopped it.
    Ended,
}

/// Why a drive ended without the run finishing or being stopped on
/// request, as it crosses the socket (`DriveError`, said).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DriveFault {
    /// Steps left running by an earlier process need a person's choice.
    Interrupted(Vec<String>),
    /// Progress could not be recorded: the store's sentence.
    Store(String),
    /// A choice given when resuming could not be used: why.
    Choice(String),
}

impl From<&super::DriveError> for DriveFault {
    fn from(e: &super::DriveError) -> DriveFault {
        match e {
            super::DriveError::Interrupted(steps) => DriveFault::Interrupted(steps.clone()),
            super::DriveError::Store(e) => DriveFault::Store(e.to_string()),
            super::DriveError::Choice(why) => DriveFault::Choice(why.clone()),
        }
    }
}

/// An [`Error`] as it crosses the socket: its kind (which decides the exit
/// code) and its sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Failure {
    Usage(String),
    InUse(String),
    Store(String),
    NoRun(String),
    Refused(String),
    Unanswered(String),
    Start(String),
    LockHeld(String),
    Internal(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        match e {
            Error::Usage(s) => Failure::Usage(s),
            Error::InUse(s) => Failure::InUse(s),
            Error::Store(s) => Failure::Store(s),
            Error::NoRun(s) => Failure::NoRun(s),
            Error::Refused(s) => Failure::Refused(s),
            Error::Unanswered(s) => Failure::Unanswered(s),
            Error::Start(s) => Failure::Start(s),
            Error::LockHeld(s) => Failure::LockHeld(s),
            Error::Internal(s) => Failure::Internal(s),
            e @ (Error::Read { .. } | Error::Write { .. }) => Failure::Store(e.to_string()),
        }
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::Usage(s) => Error::Usage(s),
            Failure::InUse(s) => Error::InUse(s),
            Failure::Store(s) => Error::Store(s),
            Failure::NoRun(s) => Error::NoRun(s),
            Failure::Refused(s) => Error::Refused(s),
            Failure::Unanswered(s) => Error::Unanswered(s),
            Failure::Start(s) => Error::Start(s),
            Failure::LockHeld(s) => Error::LockHeld(s),
            Failure::Internal(s) => Error::Internal(s),
        }
    }
}

/// Writes `value` as one line.
pub fn write_line<T: Serialize>(out: &mut impl Write, value: &T) -> std::io::Result<()> {
    let mut body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    body.push(b'\n');
    out.write_all(&body)?;
    out.flush()
}

/// Reads one line of at most `limit` bytes and parses it; `Ok(None)` when
/// the other end closed before sending anything.
pub fn read_line<T: for<'de> Deserialize<'de>>(
    input: &mut impl BufRead,
    limit: u64,
) -> std::io::Result<Option<T>> {
    let mut line = Vec::new();
    let read = std::io::Read::take(&mut *input, limit + 1).read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            if read as u64 > limit {
                format!("a message longer than {limit} bytes")
            } else {
                "a message cut short".to_string()
            },
        ));
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_goes_over_as_one_line_and_back() {
        let mut out = Vec::new();
        let sent = Request::Approve {
            run: 7,
            step: "go".into(),
            by: Some("alice".into()),
        };
        write_line(&mut out, &sent).unwrap();
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let back: Request = read_line(&mut out.as_slice(), REQUEST_LIMIT)
            .unwrap()
            .unwrap();
        assert_eq!(back, sent);
    }

    #[test]
    fn too_long_cut_short_and_not_json_are_refused_and_nothing_is_none() {
        let long = format!("{}\n", "x".repeat(100));
        let e = read_line::<Request>(&mut long.as_bytes(), 10).unwrap_err();
        assert_eq!(e.to_string(), "a message longer than 10 bytes");
        let e = read_line::<Request>(&mut &b"{\"Cancel\""[..], 100).unwrap_err();
        assert_eq!(e.to_string(), "a message cut short");
        assert!(read_line::<Request>(&mut &b"[1, 2]\n"[..], 100).is_err());
        assert!(read_line::<Request>(&mut &b""[..], 100).unwrap().is_none());
    }

    #[test]
    fn a_failure_keeps_its_kind_so_the_exit_code_is_the_same() {
        for e in [
            Error::LockHeld("held".into()),
            Error::Refused("no".into()),
            Error::NoRun("none".into()),
        ] {
            let code = e.exit_code();
            let back = Error::from(Failure::from(e));
            assert_eq!(back.exit_code(), code);
        }
    }
}
