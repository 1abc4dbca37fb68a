//! What runs beside a drive: the stop signals answered, and the run as
//! other terminals see it through the socket (`listen.rs`).

use super::run::{Notice, Watch};
use super::Control;
use crate::compile::eval::Bindings;
use crate::compile::Plan;
use crate::engine::{RunId, RunMeta, RunState};
use std::sync::{Arc, Mutex};

/// The signals a run answers, caught from the command's first moment.
pub(super) struct Signals {
    pub(super) interrupt: tokio::signal::unix::Signal,
    pub(super) terminate: tokio::signal::unix::Signal,
    pub(super) hangup: tokio::signal::unix::Signal,
}

/// First Ctrl-C (or SIGTERM): start nothing new,
/// let running steps finish. Second: stop them now (they stay interrupted in
/// the journal for `resume`). A hangup (the SSH session dropped) does not
/// stop the run: it goes on, and `runbook status` shows it.
///
/// Every run this process drives is told: its own, and those other
/// terminals submitted to it.
pub(super) async fn answer_ctrl_c(
    host: Arc<super::host::Host>,
    watch: Arc<dyn Watch>,
    mut signals: Signals,
) {
    let mut stops = 0;
    loop {
        tokio::select! {
            _ = signals.interrupt.recv() => {}
            _ = signals.terminate.recv() => {}
            _ = signals.hangup.recv() => continue,
        }
        stops += 1;
        if stops == 1 {
            watch.notice(Notice::Stopping);
            host.stop_all(|| Control::Stop);
        } else {
            host.stop_all(|| Control::Kill);
            return;
        }
    }
}

/// The runs a process drives, as `status` and `logs` through the socket
/// see them.
pub(super) trait Lives {
    /// Run `run`'s view as it stands, if it is driven here.
    fn view_of(&self, run: RunId) -> Option<super::report::RunView>;
    /// The attempt step `step` of run `run` is running now, if any.
    fn running_attempt(&self, run: RunId, step: usize) -> Option<u32>;
}

impl Lives for super::host::Host {
    fn view_of(&self, run: RunId) -> Option<super::report::RunView> {
        self.driving(run.0)?.live.view_of(run)
    }

    fn running_attempt(&self, run: RunId, step: usize) -> Option<u32> {
        self.driving(run.0)?.live.running_attempt(run, step)
    }
}

/// A run this process drives, as other terminals see it through the
/// socket: its state kept current by folding each event as it is recorded.
pub(super) struct Live {
    pub(super) meta: RunMeta,
    pub(super) plan: Arc<Plan>,
    /// The parameters as recorded (secrets as markers).
    pub(super) bindings: Arc<Bindings>,
    pub(super) mirror: Arc<Mutex<RunState>>,
}

impl Live {
    /// Run `run`'s view as it stands, if it is this one.
    pub(super) fn view_of(&self, run: RunId) -> Option<super::report::RunView> {
        if run != self.meta.id {
            return None;
        }
        let state = self.mirror.lock().ok()?.clone();
        Some(super::report::view(
            &self.meta,
            &self.plan,
            &state,
            &self.bindings,
            true,
        ))
    }

    /// The attempt step `step` of run `run` is running now, if it is this
    /// run and the step is running.
    pub(super) fn running_attempt(&self, run: RunId, step: usize) -> Option<u32> {
        if run != self.meta.id {
            return None;
        }
        let state = self.mirror.lock().ok()?;
        match state.steps.get(step) {
            Some(crate::engine::StepState::Running { attempt, .. }) => Some(*attempt),
            _ => None,
        }
    }
}
