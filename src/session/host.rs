//! The process that holds a state directory's store drives every run
//! started in it: its own command's, and those submitted through the
//! socket from other terminals (`runbook run` beside a live run). Each is
//! driven on the same runtime, journaled into the same store, and seen by
//! the socket's callers through the host's table of live runs.

use super::fanout::Fanout;
use super::prepare::{now_ms, Prepared};
use super::run::{Notice, Watch};
use super::tending::Live;
use super::{drive_from, Clock, Control, DriveError, Driver, Ended};
use crate::actions::contain::Cgroups;
use crate::actions::output_file::OutputDir;
use crate::actions::spawn::Environment;
use crate::actions::steps::{Env, LocalRunner, Sink};
use crate::engine::{Event, RunId, RunState};
use crate::store::RunStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;

/// What the process that holds the store drives.
pub(super) struct Host {
    pub(super) state_dir: PathBuf,
    pub(super) store: Arc<dyn RunStore>,
    contain: bool,
    pub(super) runtime: tokio::runtime::Handle,
    table: Mutex<Table>,
    /// Told each time a drive ends.
    ended: tokio::sync::Notify,
    /// What a server says is wrong (runbooks it cannot schedule): for the
    /// health answer.
    problems: Mutex<Problems>,
}

/// A server's own account of itself, for the health answer.
#[derive(Debug, Clone, Default)]
pub(super) struct Problems {
    pub(super) scheduled: Option<usize>,
    pub(super) problems: Vec<String>,
}

#[derive(Default)]
struct Table {
    live: BTreeMap<u64, Arc<Driving>>,
    /// Ctrl-C (or SIGTERM) reached this process: no new run is taken.
    stopping: bool,
    /// The process is leaving: no new run is taken.
    closed: bool,
    /// Runs taken and being prepared, not yet driven: the process waits
    /// for them too.
    reserved: usize,
    /// The runs being resumed or retried among them: no second drive of
    /// one may begin meanwhile.
    claimed: std::collections::BTreeSet<u64>,
}

/// A run taken and being prepared: until it is driven (or dropped, when
/// preparing it failed), the process does not leave.
pub(super) struct Reservation {
    host: Arc<Host>,
    run: Option<u64>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut t) = self.host.table.lock() {
            t.reserved -= 1;
            if let Some(run) = self.run {
                t.claimed.remove(&run);
            }
        }
        self.host.ended.notify_waiters();
    }
}

/// A run driven now.
pub(super) struct Driving {
    pub(super) live: Live,
    pub(super) tx: UnboundedSender<Control>,
    /// The run as its followers see it.
    pub(super) fanout: Arc<Fanout>,
}

/// Where a run was started from: this process's own command, or another
/// terminal, whose environment and working directory its programs get.
pub(super) enum Origin {
    Here,
    Submitted { env: Arc<Environment>, dir: PathBuf },
}

impl Origin {
    /// The variables the run's secrets, `env()` and defaults are read from.
    pub(super) fn env(&self) -> Env {
        match self {
            Origin::Here => Arc::new(|name: &str| std::env::var(name).ok()),
            Origin::Submitted { env, .. } => {
                let env = Arc::clone(env);
                Arc::new(move |name: &str| env.get(name))
            }
        }
    }
}

/// Why a run could not be taken.
pub(super) enum NotTaken {
    /// The process is stopping or leaving.
    Closing,
    /// The run is driven here already (or about to be).
    Driven(u64),
}

impl Host {
    pub(super) fn new(
        state_dir: &Path,
        store: Arc<dyn RunStore>,
        contain: bool,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Host> {
        Arc::new(Host {
            state_dir: state_dir.to_path_buf(),
            store,
            contain,
            runtime,
            table: Mutex::new(Table::default()),
            ended: tokio::sync::Notify::new(),
            problems: Mutex::new(Problems::default()),
        })
    }

    /// What the server says of itself now.
    pub(super) fn set_problems(&self, problems: Problems) {
        if let Ok(mut p) = self.problems.lock() {
            *p = problems;
        }
    }

    /// How this process stands, for the health answer.
    pub(super) fn health(&self) -> super::wire::Health {
        let p = self.problems.lock().map(|p| p.clone()).unwrap_or_default();
        super::wire::Health {
            pid: std::process::id(),
            live: self.live_runs(),
            scheduled: p.scheduled,
            problems: p.problems,
        }
    }

    /// The live run `run`, if this process drives it.
    pub(super) fn driving(&self, run: u64) -> Option<Arc<Driving>> {
        self.table.lock().ok()?.live.get(&run).cloned()
    }

    /// The runs driven now, by number.
    pub(super) fn live_runs(&self) -> Vec<u64> {
        self.table
            .lock()
            .map(|t| t.live.keys().copied().collect())
            .unwrap_or_default()
    }

    /// A run taken (a new one, or `run` to resume or retry), unless the
    /// process is stopping or leaving, or drives that run already.
    pub(super) fn reserve(self: &Arc<Self>, run: Option<u64>) -> Result<Reservation, NotTaken> {
        let Ok(mut t) = self.table.lock() else {
            return Err(NotTaken::Closing);
        };
        if t.stopping || t.closed {
            return Err(NotTaken::Closing);
        }
        if let Some(run) = run {
            if t.live.contains_key(&run) || !t.claimed.insert(run) {
                return Err(NotTaken::Driven(run));
            }
        }
        t.reserved += 1;
        Ok(Reservation {
            host: Arc::clone(self),
            run,
        })
    }

    /// Ctrl-C or SIGTERM: every run driven here is told (`Stop` starts
    /// nothing new, `Kill` stops running steps), and no new run is taken.
    pub(super) fn stop_all(&self, control: fn() -> Control) {
        let live: Vec<Arc<Driving>> = match self.table.lock() {
            Ok(mut t) => {
                t.stopping = true;
                t.live.values().cloned().collect()
            }
            Err(_) => return,
        };
        for driving in live {
            let _ = driving.tx.send(control());
        }
    }

    /// Waits until no run is driven, then takes no more.
    pub(super) async fn until_idle(&self) {
        loop {
            let notified = self.ended.notified();
            {
                let Ok(mut t) = self.table.lock() else { return };
                if t.live.is_empty() && t.reserved == 0 {
                    t.closed = true;
                    return;
                }
            }
            notified.await;
        }
    }

    /// Drives one run to its end (or until it is stopped), journaled
    /// before every effect; its followers see it through `fanout`, whose
    /// first watcher is the terminal that started it, if it is this one.
    /// Returns its state at the end and how the drive ended.
    pub(super) async fn drive(
        self: Arc<Self>,
        prepared: Prepared,
        fanout: Arc<Fanout>,
        origin: Origin,
        reserved: Option<Reservation>,
    ) -> (RunState, Result<Ended, DriveError>) {
        let Prepared {
            meta,
            plan,
            bindings,
            shown,
            how,
            past: _,
            held,
        } = prepared;
        let run = meta.id;
        let watch: Arc<dyn Watch> = Arc::clone(&fanout) as Arc<dyn Watch>;
        let sink_watch = Arc::clone(&watch);
        let sink: Sink = Arc::new(move |line| sink_watch.line(line));
        let env = origin.env();
        let mut runner = LocalRunner::new(bindings.clone(), Arc::clone(&env), sink)
            .scrubbing(&plan)
            .for_plan(&plan)
            .noting_groups(
                self.state_dir.join("running"),
                self.contain.then(Cgroups::find).flatten(),
            )
            .keeping_output(OutputDir::new(&self.state_dir));
        if let Origin::Submitted { env, dir } = &origin {
            runner = runner.started_from(Arc::clone(env), dir);
        }
        let runner = Arc::new(runner);
        let store = Arc::clone(&self.store);
        let mut state = how.state;
        // Who resumed or retried it, and what runs again, recorded first.
        let mut first = Vec::new();
        if let Some((by, steering)) = how.steered {
            first.push(Event::Steered {
                at: now_ms(),
                by,
                how: steering,
            });
        }
        if let Some(steps) = how.reset {
            first.push(Event::Reset {
                steps,
                at: now_ms(),
            });
        }
        for event in first {
            if let Err(e) = store.append(run, &event) {
                let ended = Err(DriveError::Store(e));
                fanout.drive_failed(&ended);
                fanout.end();
                return (state, ended);
            }
            state.apply(&plan, &event);
            watch.event(&event, &state);
        }
        // A copy of the state, kept by folding each event (cheap), from
        // which other terminals are answered through the socket.
        let mirror = Arc::new(Mutex::new(state.clone()));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let driving = Arc::new(Driving {
            live: Live {
                meta: meta.clone(),
                plan: Arc::clone(&plan),
                bindings: shown,
                mirror: Arc::clone(&mirror),
            },
            tx,
            fanout: Arc::clone(&fanout),
        });
        if let Ok(mut t) = self.table.lock() {
            t.live.insert(run.0, Arc::clone(&driving));
            // A Ctrl-C that came while this run was being prepared.
            if t.stopping {
                let _ = driving.tx.send(Control::Stop);
            }
        }
        drop(reserved);
        let observe = |event: &Event, state: &RunState| {
            watch.event(event, state);
            if let Ok(mut m) = mirror.lock() {
                m.apply(&plan, event);
            }
        };
        let lookup = |name: &str| env(name);
        let clock = Clock::system();
        let driver = Driver {
            plan: Arc::clone(&plan),
            journal: &*store,
            run,
            bindings: &bindings,
            env: &lookup,
            runner,
            clock: &clock,
            observe: &observe,
            failed: &|step, failure| watch.failure(step, failure),
            until: meta.until.clone(),
            starter: meta.started_by.clone(),
        };
        let ended = drive_from(&driver, state, &how.choices, rx).await;
        // The notes of the programs it killed (a timeout, a cancel) are
        // cleared once those are gone, when the runner goes: wait for that
        // first, a bounded while.
        let _ = tokio::task::spawn_blocking(|| {
            crate::actions::spawn::wait_killed_gone(std::time::Duration::from_secs(5))
        })
        .await;
        drop(driver);
        fanout.drive_failed(&ended);
        fanout.end();
        // The named locks go with the drive.
        drop(held);
        if let Ok(mut t) = self.table.lock() {
            t.live.remove(&run.0);
        }
        self.ended.notify_waiters();
        // Once the run is over, the journal holds what every attempt printed.
        if matches!(ended, Ok(Ended::Finished(_))) {
            OutputDir::new(&self.state_dir).forget_run(run);
        }
        let state = mirror
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        (state, ended)
    }

    /// Tells the process's own terminal which runs it goes on driving.
    pub(super) fn say_still_driving(&self, watch: &dyn Watch, own: RunId) {
        let runs = self.live_runs();
        if !runs.is_empty() {
            watch.notice(Notice::StillDriving { own, runs });
        }
    }
}
