//! Asking the process that holds a state directory's store, through its
//! socket; or, when no process serves it, working on the store directly.

use super::listen::address;
use super::open::{locked_sentence, open_or_owner, Opened};
use super::wire::{read_line, write_line, Answer, Request, ANSWER_LIMIT, SOCKET};
use crate::error::Error;
use crate::store::RunStore;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// How a request through the socket went.
pub enum Reached {
    Answered(Answer),
    /// No process serves the socket (none is there, or the one there was
    /// left by a process that died).
    Nobody,
    /// The process took the request and ended before it answered.
    Ended,
}

/// How long a starting or closing holder (the store held, the socket not
/// served) is waited for before the store is said to be in use.
pub(super) const BETWEEN: Duration = Duration::from_secs(12);

/// The variable that bounds how long a command waits for the answer of
/// the process that holds the store (`5s`, `500ms`), in place of the
/// command's own bound.
pub const ANSWER_WITHIN: &str = "RUNBOOK_ANSWER_WITHIN";

fn answer_within(default: Duration) -> Result<Duration, Error> {
    let Some(text) = std::env::var_os(ANSWER_WITHIN).filter(|t| !t.is_empty()) else {
        return Ok(default);
    };
    let text = text.to_string_lossy();
    crate::syntax::parse_duration(&text)
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| {
            Error::Usage(format!(
                "{ANSWER_WITHIN}={text} is not a duration (write it as 5s or 500ms)"
            ))
        })
}

/// Sends `request` to the process serving `state_dir`'s socket and waits
/// up to `within` (or `RUNBOOK_ANSWER_WITHIN`) for the answer.
pub fn ask(state_dir: &Path, request: &Request, within: Duration) -> Result<Reached, Error> {
    let Some(stream) = connect(state_dir)? else {
        return Ok(Reached::Nobody);
    };
    let mut reader = BufReader::new(stream);
    send(&mut reader, state_dir, request, within)
}

/// A connection to the process serving `state_dir`'s socket, or `None`
/// when no process serves it.
pub(super) fn connect(state_dir: &Path) -> Result<Option<UnixStream>, Error> {
    let shown = state_dir.join(SOCKET);
    let (path, _dir) = match address(state_dir) {
        Ok(found) => found,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreachable(&shown, &e)),
    };
    match UnixStream::connect(&path) {
        Ok(stream) => Ok(Some(stream)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(unreachable(&shown, &e)),
    }
}

/// Sends `request` on a connection and reads the first answer, waiting up
/// to `within` (or `RUNBOOK_ANSWER_WITHIN`).
pub(super) fn send(
    reader: &mut BufReader<UnixStream>,
    state_dir: &Path,
    request: &Request,
    within: Duration,
) -> Result<Reached, Error> {
    let within = answer_within(within)?;
    let shown = state_dir.join(SOCKET);
    let stream = reader.get_ref();
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_read_timeout(Some(within));
    let mut out = stream;
    if write_line(&mut out, request).is_err() {
        // The server closed the connection at once: it is on its way out.
        return Ok(Reached::Ended);
    }
    match read_line::<Answer>(reader, ANSWER_LIMIT) {
        Ok(Some(answer)) => Ok(Reached::Answered(answer)),
        Ok(None) => Ok(Reached::Ended),
        Err(e) if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) =>
        {
            Err(Error::Unanswered(format!(
                "the process that holds the store did not answer within {} ({}); is it stopped (SIGSTOP) or its disk not answering? try again",
                crate::compile::eval::format_duration(within.as_millis() as u64),
                shown.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(Error::Internal(format!(
            "the process that holds the store answered what this runbook cannot read ({e}); are both the same version?"
        ))),
        Err(_) => Ok(Reached::Ended),
    }
}

fn unreachable(socket: &Path, e: &std::io::Error) -> Error {
    let why = match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "permission denied: the state directory belongs to another user or group".to_string()
        }
        _ => e.to_string(),
    };
    Error::InUse(format!(
        "cannot reach the process that holds the store through {}: {why}",
        socket.display()
    ))
}

/// Asks the process that serves `state_dir` (its answer read by
/// `answered`), or, when none does, opens the store and does `local` on it.
/// A holder that is starting or closing (the store held, its socket not
/// served yet or any more) is waited for, up to 12 s. `ended` is told when
/// a process took the request and ended before it answered (the request
/// is then done on the store, once that process let it go).
pub fn ask_or<T>(
    state_dir: &Path,
    run: u64,
    request: &Request,
    within: Duration,
    answered: impl FnOnce(Answer) -> Result<T, Error>,
    local: impl FnOnce(Box<dyn RunStore>) -> Result<T, Error>,
    ended: &mut dyn FnMut(),
) -> Result<T, Error> {
    let open = || open_or_owner(state_dir, run);
    ask_or_open(state_dir, request, within, answered, open, local, ended)
}

/// `ask_or`, opening the store with `open` when no process serves it (one
/// that makes a missing store, for a command that writes a new run).
pub(super) fn ask_or_open<T>(
    state_dir: &Path,
    request: &Request,
    within: Duration,
    answered: impl FnOnce(Answer) -> Result<T, Error>,
    open: impl Fn() -> Result<Opened, Error>,
    local: impl FnOnce(Box<dyn RunStore>) -> Result<T, Error>,
    ended: &mut dyn FnMut(),
) -> Result<T, Error> {
    let began = Instant::now();
    let mut said_ended = false;
    loop {
        match ask(state_dir, request, within)? {
            Reached::Answered(answer) => return answered(answer),
            Reached::Ended if !said_ended => {
                said_ended = true;
                ended();
            }
            Reached::Ended | Reached::Nobody => {}
        }
        match open()? {
            Opened::Store(store) => return local(store),
            Opened::HeldBy(owner) if began.elapsed() > BETWEEN => {
                return Err(Error::InUse(locked_sentence(state_dir, owner)))
            }
            Opened::HeldBy(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
