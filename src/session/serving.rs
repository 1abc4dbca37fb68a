//! The store of a state directory held by a server (`runbook serve`) for as
//! long as it runs: its socket served, and every run submitted through it
//! (`runbook run`, `resume`, `retry` from any terminal of its user) driven
//! in the server's process, beside each other.

use super::host::Host;
use super::listen;
use super::open::locked_sentence;
use super::Control;
use crate::error::Error;
use crate::store::owner::read_owner;
use std::path::Path;
use std::sync::Arc;

/// A state directory's store, held and served.
pub struct Serving {
    host: Arc<Host>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl Serving {
    /// Holds `state_dir`'s store and serves its socket; called on the
    /// server's runtime. `contain`: step programs go into cgroups where
    /// runbook may make them.
    /// Held by another process (a run started by hand), it is `InUse`,
    /// said at once: the server tries again later.
    pub fn hold(state_dir: &Path, contain: bool) -> Result<Serving, Error> {
        let store = match crate::store::open_runs(&state_dir.join("journal")) {
            Ok(store) => {
                if let Some(repaired) = store.repaired() {
                    super::notes::note(&repaired);
                }
                store
            }
            Err(crate::engine::StoreError::Locked { .. }) => {
                let owner = read_owner(state_dir).filter(|o| super::open::alive(o.pid));
                return Err(Error::InUse(locked_sentence(state_dir, owner)));
            }
            Err(e) => return Err(super::open::store_error(e)),
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Internal(format!("no runtime to serve the store on: {e}")))?;
        let host = Host::new(state_dir, Arc::from(store), contain, runtime);
        let socket = listen::bind(state_dir).map_err(Error::Start)?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let serving = tokio::spawn(listen::serve(socket, Arc::clone(&host), stopped));
        Ok(Serving {
            host,
            stop: Some(stop),
            serving: Some(serving),
        })
    }

    /// What the server says of itself, for the health answer: how many
    /// runbooks it schedules, and those it cannot, each with why.
    pub fn set_problems(&self, scheduled: usize, problems: Vec<String>) {
        self.host.set_problems(super::host::Problems {
            scheduled: Some(scheduled),
            problems,
        });
    }

    /// The runs driven now, by number.
    pub fn live_runs(&self) -> Vec<u64> {
        self.host.live_runs()
    }

    /// Stops every run driven here, as a run's own Ctrl-C would (`now`: a
    /// second one, their running steps too); no new run is taken.
    pub fn stop_runs(&self, now: bool) {
        self.host.stop_all(if now {
            || Control::Kill
        } else {
            || Control::Stop
        });
    }

    /// Waits until no run is driven here (a bound is the caller's); from
    /// then on no new run is taken.
    pub async fn idle(&self) {
        self.host.until_idle().await;
    }

    /// Stops serving the socket and lets the store go.
    pub async fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            let _ = serving.await;
        }
    }
}
