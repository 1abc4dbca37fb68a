//! One run driven on this machine. `run`, `resume` and `retry` each prepare
//! it (the store, the named locks, the recorded plan, the bindings), then it
//! is driven the same way: stop signals answered, requests from other
//! terminals answered through the socket, runs they submit driven beside
//! it, and everything shown to whatever watches the run. When another
//! process holds the store, the run is submitted to it instead and
//! followed from here (`submit.rs`). What is said to a person, and with
//! which exit code, is the caller's.

use super::call::BETWEEN;
use super::fanout::Fanout;
use super::host::{Host, Origin};
use super::listen;
use super::open::{
    killed_groups_left, locked_sentence, open_or_owner, open_or_owner_to_write, CompileAhead,
};
use super::prepare::{Prepared, Preparing};
use super::submit::{submit, Accepted, Submitted};
use super::tending::{answer_ctrl_c, Signals};
use super::wire::{DriveFault, What};
use super::{Choices, Ended};
use crate::actions::steps::Line;
use crate::compile::eval::Bindings;
use crate::compile::Plan;
use crate::engine::{Deadline, Event, RunId, RunMeta, RunState};
use crate::error::Error;
use crate::store::owner::{clear_owner, write_owner, Owner};
use crate::store::RunStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a run's process may take to close once its drive has ended.
const LEAVING: Duration = Duration::from_secs(10);

/// What watches a run while it is driven: the terminal's view today.
/// Called from the driver's thread; each call is brief.
pub trait Watch: Send + Sync {
    /// An event, once it is recorded, with the run's state after it.
    fn event(&self, event: &Event, state: &RunState);
    /// A line a step's program printed, secrets already masked.
    fn line(&self, line: Line);
    /// Something the person driving the run should be told.
    fn notice(&self, notice: Notice);
    /// Why an attempt failed, after its event: its kind and where in the
    /// runbook it points.
    fn failure(&self, _step: usize, _failure: &crate::actions::step::StepError) {}
}

/// What the session tells a watcher besides events and lines.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A first Ctrl-C or SIGTERM: nothing new starts, running steps finish.
    Stopping,
    /// Programs this process killed did not end in time: the middle of a
    /// sentence naming them.
    ProgramsLeft { run: RunId, left: String },
    /// The state directory's socket could not be served: why.
    Unreachable { why: String },
    /// This process's own run ended, and it goes on driving `runs`, which
    /// other terminals started in it.
    StillDriving { own: RunId, runs: Vec<u64> },
}

/// The runtime a run is driven on, and the signals it answers, caught from
/// the command's first moment: a Ctrl-C before the first step starts is a
/// graceful stop too, never a kill in the middle of a journal write.
struct Executor {
    runtime: tokio::runtime::Runtime,
    signals: Signals,
}

impl Executor {
    fn new() -> Result<Executor, Error> {
        use tokio::signal::unix::{signal, SignalKind};
        let fail = |e: std::io::Error| Error::Start(format!("cannot start the executor: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(fail)?;
        let signals = {
            let _inside = runtime.enter();
            Signals {
                interrupt: signal(SignalKind::interrupt()).map_err(fail)?,
                terminate: signal(SignalKind::terminate()).map_err(fail)?,
                hangup: signal(SignalKind::hangup()).map_err(fail)?,
            }
        };
        Ok(Executor { runtime, signals })
    }
}

/// A run about to be prepared: the runtime and the signals, caught from the
/// command's first moment, and where the run is kept.
pub struct Session {
    exec: Executor,
    state: PathBuf,
    contain: bool,
}

impl Session {
    /// Catches the stop signals at once (a Ctrl-C before the first step
    /// starts is a graceful stop too). `contain`: step programs go into
    /// cgroups where runbook may make them.
    pub fn new(state: &Path, contain: bool) -> Result<Session, Error> {
        Ok(Session {
            exec: Executor::new()?,
            state: state.to_path_buf(),
            contain,
        })
    }

    /// A new run of `plan`, compiled from `source`, the text read from
    /// `file` (the text the journal records is the text that runs). When
    /// another process holds the store, the run is submitted to it and
    /// driven there.
    pub fn start(
        self,
        file: &Path,
        source: &str,
        plan: Plan,
        given: &[(String, String)],
        until: Option<Deadline>,
    ) -> Result<Begun, Error> {
        let what = What::Start {
            file: file.display().to_string(),
            source: source.to_string(),
            params: given.to_vec(),
            until: until.clone(),
        };
        let store = match self.open_or_submit(None, what)? {
            Opened::Here(store) => store,
            Opened::There(accepted) => return self.follow(accepted),
        };
        let prepared = self.preparing(&*store).start(
            &file.display().to_string(),
            source,
            plan,
            given,
            until,
        )?;
        Ok(Begun::Here(self.ready(store, prepared)))
    }

    /// Run `run`, continued where it stopped.
    pub fn resume(
        self,
        run: u64,
        given: &[(String, String)],
        choices: Choices,
    ) -> Result<Begun, Error> {
        let ahead = CompileAhead::start(&self.state, run);
        let what = What::Resume {
            run,
            params: given.to_vec(),
            choices: choices.clone(),
        };
        let store = match self.open_or_submit(Some(run), what)? {
            Opened::Here(store) => store,
            Opened::There(accepted) => return self.follow(accepted),
        };
        let prepared = self.preparing(&*store).resume(run, given, choices, ahead)?;
        Ok(Begun::Here(self.ready(store, prepared)))
    }

    /// Run `run`, finished, again from step `from`: the step and everything
    /// after it run again; the outputs of the steps before it are kept.
    pub fn retry(self, run: u64, from: &str, given: &[(String, String)]) -> Result<Begun, Error> {
        let ahead = CompileAhead::start(&self.state, run);
        let what = What::Retry {
            run,
            from: from.to_string(),
            params: given.to_vec(),
        };
        let store = match self.open_or_submit(Some(run), what)? {
            Opened::Here(store) => store,
            Opened::There(accepted) => return self.follow(accepted),
        };
        let prepared = self.preparing(&*store).retry(run, from, given, ahead)?;
        Ok(Begun::Here(self.ready(store, prepared)))
    }

    fn preparing<'a>(&'a self, store: &'a dyn RunStore) -> Preparing<'a> {
        Preparing {
            state_dir: &self.state,
            store,
            env: &|name: &str| std::env::var(name).ok(),
            by: crate::store::private::this_account(),
        }
    }

    /// The store, opened here; or, when another process holds it and
    /// serves its socket, the run submitted to that process. A holder
    /// that is starting or closing is waited for, as `ask_or` does.
    fn open_or_submit(&self, run: Option<u64>, what: What) -> Result<Opened, Error> {
        let began = std::time::Instant::now();
        loop {
            let opened = match run {
                Some(run) => open_or_owner(&self.state, run)?,
                None => open_or_owner_to_write(&self.state)?,
            };
            let owner = match opened {
                super::Opened::Store(store) => return Ok(Opened::Here(Arc::from(store))),
                super::Opened::HeldBy(owner) => owner,
            };
            if let Some(accepted) = submit(&self.state, &what)? {
                return Ok(Opened::There(accepted));
            }
            if began.elapsed() > BETWEEN {
                return Err(Error::InUse(locked_sentence(&self.state, owner)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The run the process that holds the store took, followed from here.
    fn follow(self, accepted: Accepted) -> Result<Begun, Error> {
        let Executor { runtime, signals } = self.exec;
        Submitted::new(accepted, &self.state, runtime, signals).map(Begun::There)
    }

    fn ready(self, store: Arc<dyn RunStore>, prepared: Prepared) -> Ready {
        Ready {
            session: self,
            store,
            prepared,
        }
    }
}

/// Where the store is, for a run about to begin.
enum Opened {
    Here(Arc<dyn RunStore>),
    There(Accepted),
}

/// A run begun: driven by this process, or by the process that holds the
/// store, which this one follows.
// One is made per command, and moved once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Begun {
    Here(Ready),
    There(Submitted),
}

/// A run prepared and holding its store and locks, ready to be driven.
pub struct Ready {
    session: Session,
    store: Arc<dyn RunStore>,
    prepared: Prepared,
}

/// How a drive ended, with what the last words need.
pub struct Driven {
    pub run: RunId,
    pub plan: Arc<Plan>,
    /// The run's state at the end, folded from the events recorded.
    pub state: Option<RunState>,
    pub ended: Result<Ended, DriveFault>,
}

impl Ready {
    pub fn meta(&self) -> &RunMeta {
        &self.prepared.meta
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.prepared.plan
    }

    /// The run's parameters as recorded, secrets as markers.
    pub fn shown(&self) -> &Arc<Bindings> {
        &self.prepared.shown
    }

    /// Drives the run in this process until it finishes or is stopped,
    /// and with it every run other terminals submit meanwhile: the process
    /// leaves once the last has ended. On the way out nothing may hold the
    /// process for ever: past a bound (`LEAVING`), it says so and exits.
    pub fn drive(self, watch: Arc<dyn Watch>) -> Result<Driven, Error> {
        let Ready {
            session,
            store,
            prepared,
        } = self;
        let Session {
            exec,
            state: state_dir,
            contain,
        } = session;
        let run = prepared.meta.id;
        let plan = Arc::clone(&prepared.plan);
        let Executor { runtime, signals } = exec;
        let host = Host::new(&state_dir, store, contain, runtime.handle().clone());
        // What this terminal is shown, other terminals may follow.
        let fanout = Fanout::new(Arc::clone(&watch));
        let _ = write_owner(
            &state_dir,
            &Owner {
                pid: std::process::id(),
                run: run.0,
            },
        );
        let socket = match listen::bind(&state_dir) {
            Ok(socket) => Some(socket),
            Err(why) => {
                watch.notice(Notice::Unreachable { why });
                None
            }
        };
        let (state, ended) = runtime.block_on(async {
            tokio::spawn(answer_ctrl_c(
                Arc::clone(&host),
                Arc::clone(&watch),
                signals,
            ));
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let serving = socket
                .map(|socket| tokio::spawn(listen::serve(socket, Arc::clone(&host), stopped)));
            let driven = Arc::clone(&host)
                .drive(prepared, fanout, Origin::Here, None)
                .await;
            // Runs other terminals submitted are driven to their end too.
            host.say_still_driving(&*watch, run);
            host.until_idle().await;
            // No new caller from here; one already answered keeps its answer.
            let _ = stop.send(());
            if let Some(serving) = serving {
                let _ = serving.await;
            }
            driven
        });
        // From here the process is on its way out, and nothing on that way may
        // hold it for ever (a disk that stopped answering, a name lookup that
        // does not return): past the bound, it says so and exits.
        leave_within(LEAVING);
        // Shutting the runtime down drops the attempts still running: their
        // process groups are killed before this process exits.
        runtime.shutdown_timeout(Duration::from_secs(3));
        // A program this process killed (a second Ctrl-C, a timeout, a cancel)
        // is gone before it exits, or named: its note stays, and `resume`
        // refuses while it lives.
        if let Some(left) = killed_groups_left() {
            watch.notice(Notice::ProgramsLeft { run, left });
        }
        clear_owner(&state_dir);
        Ok(Driven {
            run,
            plan,
            state: Some(state),
            ended: ended.map_err(|e| DriveFault::from(&e)),
        })
    }
}

/// Makes sure the process ends within `bound` from now: a thread that, if
/// it is still alive then, says so and exits with `EXIT_ERROR`. What
/// was recorded stays recorded; only the closing words may be lost.
#[allow(unsafe_code)] // `_exit`: see tests/integration/layers.rs
pub fn leave_within(bound: Duration) {
    let _ = std::thread::Builder::new()
        .name("leaving".into())
        .spawn(move || {
            std::thread::sleep(bound);
            // Said from a thread of its own: a stderr that does not take it
            // (a full pipe) must not hold the exit.
            let _ = std::thread::Builder::new().spawn(move || {
                eprintln!(
                    "error: runbook could not finish closing within {} s (is the state directory's disk answering?); it exits now, and everything it recorded is kept",
                    bound.as_secs()
                );
            });
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: _exit ends the process at once; no destructor of ours
            // runs, which is the point: one of them did not return.
            unsafe { libc::_exit(i32::from(crate::error::EXIT_ERROR)) }
        });
}
