//! The live run as its followers see it (`runbook watch` in other
//! terminals): everything its own terminal is shown goes to them too, as
//! `Frame`s on a broadcast channel. A follower that falls behind misses
//! frames and is told how many; it never holds the run. With no follower,
//! nothing is copied.

use super::run::{Notice, Watch};
use super::wire::{DriveFault, Frame};
use crate::actions::step::StepError;
use crate::actions::steps::Line;
use crate::engine::{Event, RunState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many frames a follower may fall behind before it misses some.
const BEHIND: usize = 4096;

pub(super) struct Fanout {
    inner: Arc<dyn Watch>,
    frames: broadcast::Sender<Frame>,
    ended: AtomicBool,
}

impl Fanout {
    /// Shows the run to `inner` (the run's own terminal) and to followers.
    pub(super) fn new(inner: Arc<dyn Watch>) -> Arc<Fanout> {
        let (frames, _) = broadcast::channel(BEHIND);
        Arc::new(Fanout {
            inner,
            frames,
            ended: AtomicBool::new(false),
        })
    }

    /// A new follower's frames, from now on; `None` once the drive ended.
    pub(super) fn follow(&self) -> Option<broadcast::Receiver<Frame>> {
        let frames = self.frames.subscribe();
        // Ended is sent after the flag is set: a follower that saw the flag
        // clear gets it.
        (!self.ended.load(Ordering::SeqCst)).then_some(frames)
    }

    /// The drive ended: every follower is told, and goes.
    pub(super) fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        let _ = self.frames.send(Frame::Ended);
    }

    /// A drive that ended in an error: its followers are told why, before
    /// it ends.
    pub(super) fn drive_failed(&self, ended: &Result<super::Ended, super::DriveError>) {
        if let Err(e) = ended {
            self.send(|| Frame::DriveFailed(DriveFault::from(e)));
        }
    }

    fn send(&self, frame: impl FnOnce() -> Frame) {
        if self.frames.receiver_count() > 0 {
            let _ = self.frames.send(frame());
        }
    }
}

impl Watch for Fanout {
    fn event(&self, event: &Event, state: &RunState) {
        self.inner.event(event, state);
        self.send(|| Frame::Event {
            seq: state.applied,
            event: event.clone(),
        });
    }

    fn line(&self, line: Line) {
        self.send(|| Frame::Line {
            step: line.step.to_string(),
            err: line.err,
            text: line.text.to_string(),
        });
        self.inner.line(line);
    }

    fn notice(&self, notice: Notice) {
        if notice == Notice::Stopping {
            self.send(|| Frame::Stopping);
        }
        self.inner.notice(notice);
    }

    fn failure(&self, step: usize, failure: &StepError) {
        self.inner.failure(step, failure);
        self.send(|| Frame::Failure {
            step,
            kind: failure.kind,
            message: failure.message.clone(),
            at: failure.at,
        });
    }
}
