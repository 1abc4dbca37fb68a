//! One run driven on this machine. `run`, `resume` and `retry` each prepare
//! it (the store, the named locks, the recorded plan, the bindings), then it
//! is driven the same way: stop signals answered, requests from other
//! terminals passed to the driver, the live view kept for `status`
//! elsewhere, and everything shown to whatever watches the run. What is
//! said to a person, and with which exit code, is the caller's.

use super::fanout::Fanout;
use super::listen::{self, Holding};
use super::open::{
    keep_source, killed_groups_left, open, open_to_write, plan_and_state, rebind, store_error,
    CompileAhead,
};
use super::tending::{answer_ctrl_c, Live, Signals};
use super::{drive_from, Choices, Clock, DriveError, Driver, Ended};
use crate::actions::contain::Cgroups;
use crate::actions::groups::{GroupNotes, Noted};
use crate::actions::output_file::OutputDir;
use crate::actions::steps::{unsupported, Env, Line, LocalRunner, Sink};
use crate::compile::eval::{bind_for_run, Bindings};
use crate::compile::{Phase, Plan, StepId, Type};
use crate::engine::{
    outcome_word, Deadline, Event, RecordedParam, RunId, RunMeta, RunState, Steering, StepState,
    StoreError,
};
use crate::error::Error;
use crate::store::locks::{self, Held, Holder, LockError};
use crate::store::owner::{clear_owner, write_owner, Owner};
use crate::store::RunStore;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
    /// `file` (the text the journal records is the text that runs).
    pub fn start(
        self,
        file: &Path,
        source: &str,
        plan: Plan,
        given: &[(String, String)],
        until: Option<Deadline>,
    ) -> Result<Ready, Error> {
        refuse_unsupported(&plan)?;
        let env = |name: &str| std::env::var(name).ok();
        let bindings =
            bind_for_run(&plan, given, &env).map_err(|e| Error::Usage(e.join("\n       ")))?;
        let recorded = given
            .iter()
            .map(|(name, value)| {
                let secret = plan
                    .params
                    .iter()
                    .any(|p| p.name == *name && p.ty == Type::Secret);
                let kept = if secret {
                    RecordedParam::SecretGiven
                } else {
                    RecordedParam::Value(value.clone())
                };
                (name.clone(), kept)
            })
            .collect();
        let mut held = take_locks(&plan, &self.state, None)?;
        let store = open_to_write(&self.state)?;
        let meta = store
            .create_run(
                &file.display().to_string(),
                source,
                recorded,
                now_ms(),
                until,
                Some(crate::store::private::this_account()),
            )
            .map_err(|e| match e {
                e @ (StoreError::Short { .. } | StoreError::Corrupt { .. }) => Error::Store(format!(
                    "{e}. No new run is written into it; to run now, use another state directory (--state DIR)"
                )),
                e => store_error(e),
            })?;
        keep_source(&self.state, &meta);
        super::kept_plan::keep(&self.state, meta.id.0, &meta.source, &plan);
        held.note(&holder(&plan, &self.state, Some(meta.id.0)));
        let how = How {
            choices: Choices::default(),
            steered: None,
            reset: None,
            state: RunState::new(&plan),
        };
        Ok(self.ready(store, meta, plan, bindings, how, held))
    }

    /// Run `run`, continued where it stopped.
    pub fn resume(
        self,
        run: u64,
        given: &[(String, String)],
        choices: Choices,
    ) -> Result<Ready, Error> {
        let ahead = CompileAhead::start(&self.state, run);
        let store = open(&self.state, run)?;
        let meta = store.run(RunId(run)).map_err(store_error)?;
        let (plan, state) = plan_and_state(&self.state, &*store, &meta, ahead)?;
        if let Some(outcome) = state.finished {
            return Err(Error::Refused(format!(
                "run {run} has already finished ({}); nothing to resume. `runbook retry {run} --from STEP` runs steps again",
                outcome_word(outcome)
            )));
        }
        refuse_unsupported(&plan)?;
        refuse_while_still_running(&self.state, &meta, &plan, &state)?;
        let bindings = rebind(&meta, &plan, given)?;
        let held = take_locks(&plan, &self.state, Some(run))?;
        let how = How {
            steered: Some(Steering::Resumed {
                rerun: choices.rerun.clone(),
                skip: choices.skip.clone(),
                done: choices.done.clone(),
            }),
            choices,
            reset: None,
            state,
        };
        Ok(self.ready(store, meta, plan, bindings, how, held))
    }

    /// Run `run`, finished, again from step `from`: the step and everything
    /// after it run again; the outputs of the steps before it are kept.
    pub fn retry(self, run: u64, from: &str, given: &[(String, String)]) -> Result<Ready, Error> {
        let ahead = CompileAhead::start(&self.state, run);
        let store = open(&self.state, run)?;
        let meta = store.run(RunId(run)).map_err(store_error)?;
        let (plan, state) = plan_and_state(&self.state, &*store, &meta, ahead)?;
        if state.finished.is_none() {
            return Err(Error::Refused(format!(
                "run {run} has not finished; continue it with `runbook resume {run}`"
            )));
        }
        let Some(step) = plan.step(from) else {
            let names = plan.steps.iter().map(|s| s.name.as_str());
            let hint = crate::compile::names::closest(from, names)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(Error::Usage(format!(
                "run {run} has no step `{from}`{hint}"
            )));
        };
        refuse_unsupported(&plan)?;
        let bindings = rebind(&meta, &plan, given)?;
        let held = take_locks(&plan, &self.state, Some(run))?;
        let how = How {
            choices: Choices::default(),
            steered: Some(Steering::Retried {
                from: from.to_string(),
            }),
            reset: Some(from_onwards(&plan, step.id)),
            state,
        };
        Ok(self.ready(store, meta, plan, bindings, how, held))
    }

    fn ready(
        self,
        store: Box<dyn RunStore>,
        meta: RunMeta,
        plan: Plan,
        bindings: Bindings,
        how: How,
        held: Held,
    ) -> Ready {
        let plan = Arc::new(plan);
        let shown = Arc::new(super::report::recorded_bindings(&meta, &plan));
        Ready {
            session: self,
            store,
            meta,
            plan,
            bindings,
            shown,
            how,
            _held: held,
        }
    }
}

/// A run prepared and holding its store and locks, ready to be driven.
pub struct Ready {
    session: Session,
    store: Box<dyn RunStore>,
    meta: RunMeta,
    plan: Arc<Plan>,
    bindings: Bindings,
    /// The parameters as recorded (secrets as markers): for what is shown.
    shown: Arc<Bindings>,
    how: How,
    /// The named locks, held until the drive ends.
    _held: Held,
}

/// How a drive ended, with what the last words need.
pub struct Driven {
    pub run: RunId,
    pub plan: Arc<Plan>,
    /// The run's state at the end, folded from the events recorded.
    pub state: Option<RunState>,
    pub ended: Result<Ended, DriveError>,
}

impl Ready {
    pub fn meta(&self) -> &RunMeta {
        &self.meta
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// The run's parameters as recorded, secrets as markers.
    pub fn shown(&self) -> &Arc<Bindings> {
        &self.shown
    }

    /// Drives the run in this process until it finishes or is stopped. On
    /// the way out nothing may hold the process for ever: past a bound
    /// (`LEAVING`), it says so and exits.
    pub fn drive(self, watch: Arc<dyn Watch>) -> Result<Driven, Error> {
        let Ready {
            session,
            store,
            meta,
            plan,
            bindings,
            shown,
            how,
            _held,
        } = self;
        let Session {
            exec,
            state: state_dir,
            contain,
        } = session;
        let run = meta.id;
        // Shared with the socket's callers, who read other runs meanwhile.
        let store: Arc<dyn RunStore> = Arc::from(store);
        // What this terminal is shown, other terminals may follow.
        let fanout = Fanout::new(watch);
        let watch: Arc<dyn Watch> = Arc::clone(&fanout) as Arc<dyn Watch>;
        let _ = write_owner(
            &state_dir,
            &Owner {
                pid: std::process::id(),
                run: run.0,
            },
        );
        let sink_watch = Arc::clone(&watch);
        let sink: Sink = Arc::new(move |line| sink_watch.line(line));
        let env: Env = Arc::new(|name: &str| std::env::var(name).ok());
        let runner = Arc::new(
            LocalRunner::new(bindings.clone(), env, sink)
                .scrubbing(&plan)
                .for_plan(&plan)
                .noting_groups(
                    state_dir.join("running"),
                    contain.then(Cgroups::find).flatten(),
                )
                .keeping_output(OutputDir::new(&state_dir)),
        );
        let mut state = how.state;
        if let Some(steering) = how.steered {
            let steered = Event::Steered {
                at: now_ms(),
                by: crate::store::private::this_account(),
                how: steering,
            };
            store.append(run, &steered).map_err(store_error)?;
            state.apply(&plan, &steered);
            watch.event(&steered, &state);
        }
        if let Some(steps) = how.reset {
            let reset = Event::Reset {
                steps,
                at: now_ms(),
            };
            store.append(run, &reset).map_err(store_error)?;
            state.apply(&plan, &reset);
            watch.event(&reset, &state);
        }
        // A copy of the state, kept by folding each event (cheap), from which
        // other terminals are answered through the socket, and the last
        // words are said.
        let mirror = Arc::new(Mutex::new(state.clone()));
        let observe = |event: &Event, state: &RunState| {
            watch.event(event, state);
            if let Ok(mut m) = mirror.lock() {
                m.apply(&plan, event);
            }
        };
        let env_now = |name: &str| std::env::var(name).ok();
        let clock = Clock::system();
        let driver = Driver {
            plan: Arc::clone(&plan),
            journal: &*store,
            run,
            bindings: &bindings,
            env: &env_now,
            runner,
            clock: &clock,
            observe: &observe,
            failed: &|step, failure| watch.failure(step, failure),
            until: meta.until.clone(),
        };
        let Executor { runtime, signals } = exec;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let socket = match listen::bind(&state_dir) {
            Ok(socket) => Some(socket),
            Err(why) => {
                watch.notice(Notice::Unreachable { why });
                None
            }
        };
        let ended = runtime.block_on(async {
            tokio::spawn(answer_ctrl_c(tx.clone(), Arc::clone(&watch), signals));
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let serving = socket.map(|socket| {
                let holding = Arc::new(Holding {
                    state_dir: state_dir.clone(),
                    store: Arc::clone(&store),
                    live: Live {
                        meta: meta.clone(),
                        plan: Arc::clone(&plan),
                        bindings: Arc::clone(&shown),
                        mirror: Arc::clone(&mirror),
                    },
                    tx,
                    fanout: Arc::clone(&fanout),
                });
                tokio::spawn(listen::serve(socket, holding, stopped))
            });
            let ended = drive_from(&driver, state, &how.choices, rx).await;
            fanout.end();
            // No new caller from here; one already answered keeps its answer.
            let _ = stop.send(());
            if let Some(serving) = serving {
                let _ = serving.await;
            }
            ended
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
        let state = mirror.lock().ok().map(|m| m.clone());
        // Once the run is over, the journal holds what every attempt printed.
        if matches!(ended, Ok(Ended::Finished(_))) {
            OutputDir::new(&state_dir).forget_run(run);
        }
        Ok(Driven {
            run,
            plan,
            state,
            ended,
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

/// The plan's named locks, all or none, held until this process ends the
/// drive: a lock another run holds is one sentence and `EXIT_BUSY`.
fn take_locks(plan: &Plan, state: &Path, run: Option<u64>) -> Result<Held, Error> {
    let dir = locks::lock_dir(state);
    locks::acquire(&dir, &plan.settings.locks, &holder(plan, state, run)).map_err(|e| match e {
        LockError::Busy(why) => Error::LockHeld(format!(
            "{why}; run it when that has finished (`runbook serve` waits for it within the window)"
        )),
        LockError::Io(why) => Error::Store(why),
    })
}

fn holder(plan: &Plan, state: &Path, run: Option<u64>) -> Holder {
    Holder {
        runbook: plan.name.clone(),
        run,
        pid: std::process::id(),
        state: state.display().to_string(),
        since: now_ms() as i64,
    }
}

/// The step, every step that waits on it (directly or not), and the
/// `on failure` steps, which are decided again.
fn from_onwards(plan: &Plan, from: StepId) -> Vec<usize> {
    let mut seen = vec![false; plan.steps.len()];
    let mut dfs = petgraph::visit::Dfs::new(&plan.graph, from.node());
    while let Some(node) = dfs.next(&plan.graph) {
        seen[node.index()] = true;
    }
    plan.steps
        .iter()
        .filter(|s| seen[s.id.0] || s.phase == Phase::OnFailure)
        .map(|s| s.id.0)
        .collect()
}

/// A step interrupted by a crash may have left its program running (a
/// SIGKILL of runbook does not reach it). Starting the step again beside it,
/// or deciding about it, must wait until it has ended.
fn refuse_while_still_running(
    state_dir: &Path,
    meta: &RunMeta,
    plan: &Plan,
    state: &RunState,
) -> Result<(), Error> {
    let notes = GroupNotes::new(state_dir.join("running"));
    let still_running = || -> Vec<(&str, Noted)> {
        plan.steps
            .iter()
            .filter(|s| matches!(state.step(s.id), StepState::Running { .. }))
            .filter_map(|s| Some((s.name.as_str(), notes.still_running(meta.id, &s.name)?)))
            .collect()
    };
    // A program caught in the middle of its exit (its memory given back,
    // the kernel still counting it) is given up to a second to be gone.
    let began = std::time::Instant::now();
    let mut running = still_running();
    while !running.is_empty()
        && running
            .iter()
            .all(|(_, noted)| matches!(noted, Noted::Running(group) if group.ending()))
        && began.elapsed() < Duration::from_secs(1)
    {
        std::thread::sleep(Duration::from_millis(20));
        running = still_running();
    }
    let running: Vec<String> = running
        .into_iter()
        .map(|(name, noted)| match noted {
            Noted::Running(group) => format!("`{name}` ({})", group.describe()),
            Noted::Starting => format!("`{name}` (being started)"),
        })
        .collect();
    if running.is_empty() {
        notes.tidy(meta.id);
        return Ok(());
    }
    Err(Error::InUse(format!(
        "run {} was interrupted, but the programs of these steps are still running: {}; wait for them to end or stop them (`kill -- -PGID`; for a cgroup, `echo 1 > CGROUP/cgroup.kill`), then resume; or cancel the run, which stops them",
        meta.id,
        running.join(", ")
    )))
}

fn refuse_unsupported(plan: &Plan) -> Result<(), Error> {
    let missing = unsupported(plan);
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing
        .iter()
        .map(|(s, why)| format!("`{}` ({why})", s.name))
        .collect();
    Err(Error::Refused(format!(
        "this runbook has steps this version cannot run yet: {}; `runbook plan` shows what a run would do",
        list.join(", ")
    )))
}

pub(super) fn now_ms() -> u64 {
    Clock::system().now()
}

/// What a drive starts from besides the journal.
struct How {
    choices: Choices,
    /// Who resumed or retried the run, and how: recorded first.
    steered: Option<Steering>,
    /// `retry --from`: the steps to run again.
    reset: Option<Vec<usize>>,
    /// The run's state, replayed from its journal by the caller.
    state: RunState,
}
