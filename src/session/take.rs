//! A run submitted through the socket from another terminal (`runbook run`,
//! `resume`, `retry` while this process holds the store): prepared here as
//! that terminal would have prepared it, with its environment and working
//! directory, driven beside this process's other runs, and streamed back
//! to the terminal until it ends. The terminal may go (detach, a dropped
//! SSH session, kill -9): the run goes on here.

use super::fanout::Fanout;
use super::host::{Host, NotTaken, Origin};
use super::listen::stream_frames;
use super::open::CompileAhead;
use super::prepare::{Prepared, Preparing};
use super::run::{Notice, Watch};
use super::wire::{write_line, Answer, Submission, What};
use crate::actions::spawn::Environment;
use crate::actions::steps::Line;
use crate::engine::{Event, RunState};
use crate::error::Error;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// Whether the user `uid` may start, resume, retry or stop runs here. A
/// run's programs run as the user of the process that holds the store:
/// only that user (or root, who could anyway) may give it programs to run.
/// The group that shares the directory approves, cancels and watches.
pub(super) fn may_start(uid: u32) -> Result<(), Error> {
    use crate::store::private::{me, user};
    if uid == me() || uid == 0 {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "the runs of this state directory run their programs as {}, so only that user may start, resume, retry or stop one here; {} may approve, cancel, watch and look (to run a runbook as yourself, use a state directory of your own: --state DIR)",
        user(me()),
        user(uid)
    )))
}

/// Takes the submission of `uid` and streams its run back on `stream`.
pub(super) fn take(stream: &UnixStream, host: &Arc<Host>, uid: u32, submission: Submission) {
    let mut out = stream;
    if let Err(e) = may_start(uid) {
        let _ = write_line(&mut out, &Answer::Failed(e.into()));
        return;
    }
    // Stopping or leaving: the caller waits for the store to be free.
    let run = match &submission.what {
        What::Start { .. } => None,
        What::Resume { run, .. } | What::Retry { run, .. } => Some(*run),
    };
    let reserved = match host.reserve(run) {
        Ok(reserved) => reserved,
        Err(NotTaken::Closing) => {
            let _ = write_line(&mut out, &Answer::Closing);
            return;
        }
        Err(NotTaken::Driven(run)) => {
            let e = Error::Refused(format!(
                "run {run} is running (process {} drives it); `runbook watch {run}` follows it, `runbook cancel {run}` stops it",
                std::process::id()
            ));
            let _ = write_line(&mut out, &Answer::Failed(e.into()));
            return;
        }
    };
    let (prepared, origin) = match prepare(host, uid, submission) {
        Ok(prepared) => prepared,
        Err(e) => {
            let _ = write_line(&mut out, &Answer::Failed(e.into()));
            return;
        }
    };
    // Followed before it starts: the caller sees every event.
    let fanout = Fanout::new(Arc::new(Unwatched));
    let Some(frames) = fanout.follow() else {
        return;
    };
    let started = Answer::Started {
        meta: prepared.meta.clone(),
        events: prepared.past.clone(),
    };
    let had = prepared.past.len() as u64;
    let drive = Arc::clone(host).drive(prepared, fanout, origin, Some(reserved));
    host.runtime.spawn(async move {
        let _ = drive.await;
    });
    // A caller gone by now (killed) leaves the run going.
    if write_line(&mut out, &started).is_ok() {
        stream_frames(stream, frames, had);
    }
}

fn prepare(host: &Host, uid: u32, submission: Submission) -> Result<(Prepared, Origin), Error> {
    let Submission { what, env, dir } = submission;
    let origin = Origin::Submitted {
        env: Arc::new(Environment::of(&env)),
        dir,
    };
    let lookup = origin.env();
    let preparing = Preparing {
        state_dir: &host.state_dir,
        store: &*host.store,
        env: &|name: &str| lookup(name),
        by: crate::store::private::account(uid),
    };
    let prepared = match what {
        What::Start {
            file,
            source,
            params,
            until,
        } => {
            let plan = compile(source.clone())?;
            preparing.start(&file, &source, plan, &params, until)?
        }
        What::Resume {
            run,
            params,
            choices,
        } => preparing.resume(
            run,
            &params,
            choices,
            CompileAhead::start(&host.state_dir, run),
        )?,
        What::Retry { run, from, params } => preparing.retry(
            run,
            &from,
            &params,
            CompileAhead::start(&host.state_dir, run),
        )?,
    };
    Ok((prepared, origin))
}

/// The submitted source, compiled again here (the command checked it, and
/// said what was wrong; this process trusts no caller), on a thread with
/// the deep stack a large runbook needs (see main.rs).
fn compile(source: String) -> Result<crate::compile::Plan, Error> {
    let refused = || {
        Error::Usage(
            "the runbook does not check clean in the process that holds the store (is it another version of runbook?); `runbook check FILE` says why".into(),
        )
    };
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || crate::compile::check(&source).ok())
        .map_err(|e| Error::Start(format!("cannot compile the runbook: {e}")))?
        .join()
        .ok()
        .flatten()
        .ok_or_else(refused)
}

/// A submitted run has no terminal here: its followers are its terminal.
struct Unwatched;

impl Watch for Unwatched {
    fn event(&self, _: &Event, _: &RunState) {}
    fn line(&self, _: Line) {}
    fn notice(&self, _: Notice) {}
}
