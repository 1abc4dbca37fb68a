//! What runs beside a drive: the stop signals answered, the requests of
//! other terminals (`approve`, `cancel`) passed to the driver and answered,
//! and the live view (`live.json`) kept for `runbook status` elsewhere.

use super::run::{Notice, Watch};
use super::Control;
use crate::compile::eval::Bindings;
use crate::compile::Plan;
use crate::engine::approval::Approver;
use crate::engine::{RunMeta, RunState};
use crate::store::inbox::Inbox;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
pub(super) async fn answer_ctrl_c(
    tx: tokio::sync::mpsc::UnboundedSender<Control>,
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
            let _ = tx.send(Control::Stop);
        } else {
            let _ = tx.send(Control::Kill);
            return;
        }
    }
}

/// What `runbook status` in another terminal reads while this process
/// holds the store.
pub(super) struct Live {
    pub(super) state_dir: PathBuf,
    pub(super) meta: RunMeta,
    pub(super) plan: Arc<Plan>,
    pub(super) bindings: Arc<Bindings>,
    pub(super) mirror: Arc<Mutex<(RunState, bool)>>,
}

impl Live {
    fn write_if_changed(&self) {
        let Ok(mut m) = self.mirror.lock() else {
            return;
        };
        if !m.1 {
            return;
        }
        m.1 = false;
        let view = super::report::view(&self.meta, &self.plan, &m.0, &self.bindings, true);
        drop(m);
        // The live view is a courtesy to `status` elsewhere: one that would
        // not serialize is not written, never written empty.
        if let Ok(body) = serde_json::to_vec(&view) {
            let _ = crate::store::private::write_view(&self.state_dir, "live.json", &body);
        }
    }
}

/// Five times a second: requests left by `runbook approve` and `runbook
/// cancel` in other terminals, passed to the driver and answered; and the
/// live view for `runbook status`.
pub(super) async fn tend(
    tx: tokio::sync::mpsc::UnboundedSender<Control>,
    inbox: Inbox,
    live: Live,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    use crate::store::inbox::Request;
    let run = live.meta.id.0;
    // A run that ends at once (a resume that only records the end) never
    // needs the view: the first is written a moment in.
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        _ = &mut stop => return,
    }
    loop {
        live.write_if_changed();
        for (name, request, account) in inbox.take(run) {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let control = match request {
                Request::Approve { step, by, .. } => Control::Approve {
                    step,
                    by: Approver { name: by, account },
                    reply,
                },
                Request::Cancel { .. } => Control::Cancel { reply: Some(reply) },
            };
            if tx.send(control).is_err() {
                return;
            }
            let answer = answer
                .await
                .unwrap_or_else(|_| Err("the run stopped before it could answer".into()));
            inbox.answer(&name, &answer);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = &mut stop => return,
        }
    }
}
