//! The way into the process that holds the store: it serves the state
//! directory's socket (`STATE/runbook.sock`) for as long as it holds the
//! store, and answers `status`, `logs`, `approve`, `cancel` and `watch`
//! from other terminals: for the runs it drives, through their drivers
//! (and what they show, for `watch`); for every other run, from and into
//! the store it holds. Runs submitted from other terminals are taken and
//! driven beside its own (`take.rs`).
//!
//! The socket is private as the state directory is (0600, or 0660 for the
//! group of `RUNBOOK_SHARED_GROUP`), and every caller is checked again by
//! the user the kernel names for it (`SO_PEERCRED`): that user is who an
//! approval records, whatever name `--as` gives.

use super::host::{Driving, Host};
use super::open::store_error;
use super::records::{history_in, logs_in, views_in};
use super::steer::{
    approve_in_journal, approver, cancel_in_journal, reject_in_journal, Cancelled, Rejected,
};
use super::wire::{
    read_line, write_line, Answer, Frame, Request, ANSWER_LIMIT, REQUEST_LIMIT, SOCKET,
};
use super::Control;
use crate::error::Error;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a caller may take to send its request, and the driver to
/// answer one.
const PATIENCE: Duration = Duration::from_secs(10);

/// The bound socket; its file is removed when this is dropped.
pub(super) struct Socket {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `STATE/runbook.sock`. Only the process that holds the store calls
/// this, so a socket file already there was left by one that died: it is
/// replaced.
pub(super) fn bind(state_dir: &Path) -> Result<Socket, String> {
    let path = state_dir.join(SOCKET);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(format!(
                    "{} is there and is not a socket; remove it",
                    path.display()
                ));
            }
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let (address, _dir) = address(state_dir).map_err(|e| format!("{}: {e}", path.display()))?;
    let listener = std::os::unix::net::UnixListener::bind(&address)
        .map_err(|e| format!("cannot serve {}: {e}", path.display()))?;
    let socket = Socket { listener, path };
    crate::store::private::make_private(&socket.path)
        .map_err(|e| format!("cannot make {} private: {e}", socket.path.display()))?;
    socket
        .listener
        .set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", socket.path.display()))?;
    Ok(socket)
}

/// The path to bind or connect to: `STATE/runbook.sock`, or, when that is
/// longer than a socket address holds (107 bytes), the same file reached
/// through the directory's descriptor (`/proc/self/fd/N/runbook.sock`),
/// which is kept open while it is used.
pub(super) fn address(state_dir: &Path) -> std::io::Result<(PathBuf, Option<std::fs::File>)> {
    let path = state_dir.join(SOCKET);
    if path.as_os_str().len() < 100 {
        return Ok((path, None));
    }
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(state_dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd()));
    Ok((short, Some(dir)))
}

/// Answers callers until `stop`; each on a blocking thread of its own, so
/// that reading every run of the store never holds the drive.
pub(super) async fn serve(
    socket: Socket,
    host: Arc<Host>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = socket.listener.try_clone() else {
        return;
    };
    let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, say: not a reason to spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let host = Arc::clone(&host);
                let Ok(stream) = stream.into_std() else { continue };
                tokio::task::spawn_blocking(move || answer(stream, &host));
            }
            _ = &mut stop => break,
        }
    }
    // The socket's file goes before the process says the run ended.
    drop(socket);
}

fn answer(stream: UnixStream, host: &Arc<Host>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(PATIENCE));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let Ok(caller) = rustix::net::sockopt::socket_peercred(&stream) else {
        return;
    };
    let (uid, gid) = (caller.uid.as_raw(), caller.gid.as_raw());
    let Ok(mut reader) = stream.try_clone().map(BufReader::new) else {
        return;
    };
    let answer = match crate::store::private::may_steer(uid, gid) {
        Err(why) => Answer::Failed(Error::Refused(why).into()),
        Ok(()) => match read_line::<Request>(&mut reader, REQUEST_LIMIT) {
            Ok(Some(Request::Watch { run })) => return follow(&stream, host, run),
            Ok(Some(Request::Submit(submission))) => {
                return super::take::take(&stream, host, uid, submission)
            }
            Ok(Some(request)) => handle(request, host, uid),
            // A caller that went away, or that sent no request: nothing done.
            Ok(None) | Err(_) => return,
        },
    };
    let mut out = &stream;
    // An answer bigger than any caller takes, or one that would not
    // serialize, is a failure, said as one: never an empty line.
    let _ = match serde_json::to_vec(&answer) {
        Ok(mut body) if body.len() as u64 <= ANSWER_LIMIT => {
            body.push(b'\n');
            std::io::Write::write_all(&mut out, &body)
        }
        Ok(body) => write_line(
            &mut out,
            &Answer::Failed(
                Error::Internal(format!(
                    "the answer would be {} bytes, too much to send",
                    body.len()
                ))
                .into(),
            ),
        ),
        Err(e) => write_line(
            &mut out,
            &Answer::Failed(
                Error::Internal(format!("the answer could not be written: {e}")).into(),
            ),
        ),
    };
}

fn handle(request: Request, host: &Host, uid: u32) -> Answer {
    let state_dir = &host.state_dir;
    let store = &*host.store;
    let lives: &dyn super::tending::Lives = host;
    let done = match request {
        // Answered by `follow` and `take`, which stream.
        Request::Watch { run } => Err(not_live(host, run)),
        Request::Submit(_) => Err(Error::Internal(
            "a submission reached the wrong handler; please report this".into(),
        )),
        Request::Status { run } => views_in(state_dir, store, run, Some(lives)).map(Answer::Runs),
        Request::History { run } => {
            history_in(store, run).map(|(meta, events)| Answer::History { meta, events })
        }
        Request::Logs { run, step } => {
            logs_in(state_dir, store, run, step.as_deref(), Some(lives)).map(Answer::Logs)
        }
        Request::Approve { run, step, by } => {
            approver(by.as_deref(), uid).and_then(|approver| match host.driving(run) {
                Some(driving) => through_driver(&driving, |reply| Control::Approve {
                    step,
                    by: approver,
                    reply,
                })
                .map(Answer::Approved),
                None => approve_in_journal(state_dir, store, run, &step, &approver)
                    .map(Answer::Approved),
            })
        }
        Request::Reject {
            run,
            step,
            by,
            reason,
        } => approver(by.as_deref(), uid).and_then(|approver| match host.driving(run) {
            Some(driving) => through_driver(&driving, |reply| Control::Reject {
                step,
                by: approver,
                reason,
                reply,
            })
            .map(|()| Answer::Rejected(Rejected::ByItsProcess)),
            None => reject_in_journal(state_dir, store, run, &step, &approver, &reason)
                .map(Answer::Rejected),
        }),
        Request::Cancel { run } => match host.driving(run) {
            Some(driving) => through_driver(&driving, |reply| Control::Cancel {
                reply: Some(reply),
                by: Some(crate::store::private::account(uid)),
            })
            .map(|()| Answer::Cancelled(Cancelled::ByItsProcess)),
            None => cancel_in_journal(state_dir, store, run, &crate::store::private::account(uid))
                .map(Answer::Cancelled),
        },
        Request::Stop { run, now } => stop(host, uid, run, now),
        Request::Health => Ok(Answer::Health(host.health())),
        Request::Export { run } => {
            super::export::export_in(state_dir, store, run).map(|e| Answer::Exported(Box::new(e)))
        }
        // A new run in the store: the holder's user's (or root's) to make.
        Request::Import(export) => super::take::may_start(uid).and_then(|()| {
            super::export::import_in(store, &export, &crate::store::private::account(uid))
                .map(|run| Answer::Imported { run })
        }),
    };
    done.unwrap_or_else(|e| Answer::Failed(e.into()))
}

/// A run's own terminal's Ctrl-C, from the terminal that submitted it:
/// only its process's user may stop a run that way (others cancel).
fn stop(host: &Host, uid: u32, run: u64, now: bool) -> Result<Answer, Error> {
    super::take::may_start(uid)?;
    let Some(driving) = host.driving(run) else {
        return Err(not_live(host, run));
    };
    if !now {
        use super::run::Watch;
        driving.fanout.notice(super::run::Notice::Stopping);
    }
    let control = if now { Control::Kill } else { Control::Stop };
    if driving.tx.send(control).is_err() {
        return Err(Error::Unanswered(format!(
            "run {run} is ending and took no more requests; `runbook status {run}` shows how it ended"
        )));
    }
    Ok(Answer::Stopping)
}

/// Passes a request to the driver of the live run and waits for its answer.
fn through_driver<T>(
    driving: &Driving,
    control: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, String>>) -> Control,
) -> Result<T, Error> {
    let (reply, answered) = tokio::sync::oneshot::channel();
    let run = driving.live.meta.id;
    if driving.tx.send(control(reply)).is_err() {
        return Err(Error::Unanswered(format!(
            "run {run} is ending and took no more requests; `runbook status {run}` shows how it ended"
        )));
    }
    // The driver answers at once (it records the event and goes on); a
    // disk that stopped answering must not hold the caller for ever.
    let mut answered = answered;
    let began = std::time::Instant::now();
    loop {
        match answered.try_recv() {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(why)) => return Err(Error::Refused(why)),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                return Err(Error::Unanswered(format!(
                    "run {run} ended before it answered; `runbook status {run}` shows how it ended"
                )))
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
        }
        if began.elapsed() > PATIENCE {
            return Err(Error::Unanswered(format!(
                "run {run} did not answer within {} s; try again",
                PATIENCE.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `runbook watch`: what the live run has recorded so far, then every
/// frame as it comes, until the drive ends or the follower goes. A follower
/// that stops reading for a minute is let go.
fn follow(stream: &UnixStream, host: &Host, run: u64) {
    let mut out = stream;
    let Some(driving) = host.driving(run) else {
        let _ = write_line(&mut out, &Answer::Failed(not_live(host, run).into()));
        return;
    };
    // Following first, then reading: an event recorded in between comes
    // both ways, and its number says it was had.
    let Some(frames) = driving.fanout.follow() else {
        let _ = write_line(&mut out, &Answer::Failed(not_live(host, run).into()));
        return;
    };
    let events = match host.store.events(driving.live.meta.id) {
        Ok(events) => events,
        Err(e) => {
            let _ = write_line(&mut out, &Answer::Failed(store_error(e).into()));
            return;
        }
    };
    let had = events.len() as u64;
    let watching = Answer::Watching {
        meta: driving.live.meta.clone(),
        events,
    };
    drop(driving);
    if write_line(&mut out, &watching).is_err() {
        return;
    }
    stream_frames(stream, frames, had);
}

/// Every frame as it comes after the first `had` events, until the drive
/// ends or the follower goes.
pub(super) fn stream_frames(
    stream: &UnixStream,
    mut frames: tokio::sync::broadcast::Receiver<Frame>,
    had: u64,
) {
    let mut out = stream;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let frame = match frames.blocking_recv() {
            Ok(Frame::Event { seq, .. }) if seq <= had => continue,
            Ok(frame) => frame,
            Err(RecvError::Lagged(missed)) => Frame::Missed { missed },
            Err(RecvError::Closed) => Frame::Ended,
        };
        let ended = matches!(frame, Frame::Ended);
        if write_line(&mut out, &frame).is_err() || ended {
            return;
        }
    }
}

/// Why run `run` cannot be followed here: no process drives it.
pub(super) fn not_live(host: &Host, run: u64) -> Error {
    match host.store.run(crate::engine::RunId(run)) {
        Err(e) => store_error(e),
        Ok(_) => {
            let driven = super::report::runs_named(&host.live_runs());
            Error::Refused(format!(
                "run {run} is not running (the process that holds the store drives {driven}); `runbook status {run}` shows where it stands"
            ))
        }
    }
}
