//! `runbook run`, `resume` and `retry`: each prepares a run, then drives it
//! the same way, answering Ctrl-C and requests from other terminals.

use super::store::{self, parse_params, plan_and_state, rebind, store_error, CompileAhead};
use super::view::{Mode, View};
use crate::actions::contain::Cgroups;
use crate::actions::groups::{GroupNotes, Noted};
use crate::actions::local::{unsupported, Env, LocalRunner, Sink};
use crate::actions::output_file::OutputDir;
use crate::compile::eval::{bind_for_run, Bindings};
use crate::compile::{Phase, Plan, StepId, Type};
use crate::engine::approval::Approver;
use crate::engine::{
    outcome_word, Deadline, Event, Journal, RecordedParam, RunMeta, RunState, StepState, StoreError,
};
use crate::error::Error;
use crate::session::{drive_from, Choices, Clock, Control, Driver, Ended};
use crate::store::inbox::{clear_owner, write_owner, Inbox, Owner};
use crate::store::locks::{self, Held, Holder, LockError};
use crate::store::SledStore;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Exit codes of the run commands, besides 0, 1 and 2.
pub const EXIT_ROLLED_BACK: u8 = 3;
pub const EXIT_CANCELLED: u8 = 4;
/// A named lock the runbook needs is held by another run.
pub const EXIT_BUSY: u8 = 5;
pub const EXIT_STOPPED: u8 = 130;

/// How long a run's process may take to close once its drive has ended.
const LEAVING: Duration = Duration::from_secs(10);

pub struct RunOptions {
    pub state: PathBuf,
    pub json: bool,
    /// `run --until`: when the procedure must be over (a new run only).
    pub until: Option<Deadline>,
    /// Whether step programs are contained in cgroups where runbook may
    /// make them (`RUNBOOK_CGROUPS`, `auto` unless `off`).
    pub contain: bool,
}

/// The runtime a run is driven on, and the signals it answers, caught from
/// the command's first moment: a Ctrl-C before the first step starts is a
/// graceful stop too, never a kill in the middle of a journal write.
struct Executor {
    runtime: tokio::runtime::Runtime,
    signals: Signals,
}

struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Executor {
    fn new() -> Result<Executor, Error> {
        use tokio::signal::unix::{signal, SignalKind};
        let fail = |e: std::io::Error| Error::Run(format!("cannot start the executor: {e}"));
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

/// `runbook run FILE -p k=v`.
pub fn start(path: &Path, params: &[String], opts: &RunOptions) -> Result<u8, Error> {
    let exec = Executor::new()?;
    let given = parse_params(params)?;
    // Read once: the text the journal records is the text compiled and run
    // (a file saved meanwhile must not run unrecorded).
    let source = crate::error::read_source(path)?;
    let Some(plan) = super::compile_read(path, &source)? else {
        return Ok(super::EXIT_DIAGNOSTICS);
    };
    refuse_unsupported(&plan)?;
    let env = |name: &str| std::env::var(name).ok();
    let bindings =
        bind_for_run(&plan, &given, &env).map_err(|e| Error::Usage(e.join("\n       ")))?;
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
    let mut held = take_locks(&plan, opts, None)?;
    let store = store::open_to_write(&opts.state)?;
    let meta = store
        .create_run(
            &path.display().to_string(),
            &source,
            recorded,
            now_ms(),
            opts.until.clone(),
        )
        .map_err(|e| match e {
            e @ (StoreError::Short { .. } | StoreError::Corrupt { .. }) => Error::Run(format!(
                "{e}. No new run is written into it; to run now, use another state directory (--state DIR)"
            )),
            e => store_error(e),
        })?;
    store::keep_source(&opts.state, &meta);
    held.note(&holder(&plan, opts, Some(meta.id.0)));
    let how = How {
        choices: Choices::default(),
        reset: None,
        state: RunState::new(&plan),
    };
    drive_run(exec, store, meta, plan, bindings, how, opts)
}

/// `--until TIME` as a deadline kept with the run.
pub fn parse_until(until: Option<&str>, reason: Option<String>) -> Result<Option<Deadline>, Error> {
    let Some(text) = until else {
        return Ok(None);
    };
    let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        Error::Usage(format!(
            "--until {text} is not a time: {e}; write it as RFC 3339, e.g. 2026-11-28T04:00:00Z"
        ))
    })?;
    let ms = at.timestamp_millis();
    if ms <= now_ms() as i64 {
        return Err(Error::Usage(format!("--until {text} has already passed")));
    }
    let why =
        reason.unwrap_or_else(|| format!("the time it had to be over by (--until {text}) passed"));
    Ok(Some(Deadline { at: ms as u64, why }))
}

/// The plan's named locks, all or none, held until this process ends the
/// drive: a lock another run holds is one sentence and `EXIT_BUSY`.
fn take_locks(plan: &Plan, opts: &RunOptions, run: Option<u64>) -> Result<Held, Error> {
    let dir = locks::lock_dir(&opts.state);
    locks::acquire(&dir, &plan.settings.locks, &holder(plan, opts, run)).map_err(|e| match e {
        LockError::Busy(why) => Error::Busy(format!(
            "{why}; run it when that has finished (`runbook serve` waits for it within the window)"
        )),
        LockError::Io(why) => Error::Run(why),
    })
}

fn holder(plan: &Plan, opts: &RunOptions, run: Option<u64>) -> Holder {
    Holder {
        runbook: plan.name.clone(),
        run,
        pid: std::process::id(),
        state: opts.state.display().to_string(),
        since: now_ms() as i64,
    }
}

/// `runbook resume RUN`.
pub fn resume(
    run: u64,
    params: &[String],
    choices: Choices,
    opts: &RunOptions,
) -> Result<u8, Error> {
    let exec = Executor::new()?;
    let ahead = CompileAhead::start(&opts.state, run);
    let store = store::open(&opts.state, run)?;
    let meta = store.run(crate::engine::RunId(run)).map_err(store_error)?;
    let (plan, state) = plan_and_state(&opts.state, &store, &meta, ahead)?;
    if let Some(outcome) = state.finished {
        return Err(Error::Run(format!(
            "run {run} has already finished ({}); nothing to resume. `runbook retry {run} --from STEP` runs steps again",
            outcome_word(outcome)
        )));
    }
    refuse_unsupported(&plan)?;
    refuse_while_still_running(&opts.state, &meta, &plan, &state)?;
    let bindings = rebind(&meta, &plan, &parse_params(params)?)?;
    let _held = take_locks(&plan, opts, Some(run))?;
    let how = How {
        choices,
        reset: None,
        state,
    };
    drive_run(exec, store, meta, plan, bindings, how, opts)
}

/// `runbook retry RUN --from STEP`: the step and everything after it run
/// again; the outputs of the steps before it are kept.
pub fn retry(run: u64, from: &str, params: &[String], opts: &RunOptions) -> Result<u8, Error> {
    let exec = Executor::new()?;
    let ahead = CompileAhead::start(&opts.state, run);
    let store = store::open(&opts.state, run)?;
    let meta = store.run(crate::engine::RunId(run)).map_err(store_error)?;
    let (plan, state) = plan_and_state(&opts.state, &store, &meta, ahead)?;
    if state.finished.is_none() {
        return Err(Error::Run(format!(
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
    let bindings = rebind(&meta, &plan, &parse_params(params)?)?;
    let _held = take_locks(&plan, opts, Some(run))?;
    let how = How {
        choices: Choices::default(),
        reset: Some(from_onwards(&plan, step.id)),
        state,
    };
    drive_run(exec, store, meta, plan, bindings, how, opts)
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
    Err(Error::Run(format!(
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
    Err(Error::Run(format!(
        "this runbook has steps this version cannot run yet: {}; `runbook plan` shows what a run would do",
        list.join(", ")
    )))
}

fn now_ms() -> u64 {
    Clock::system().now()
}

/// What a drive starts from besides the journal.
struct How {
    choices: Choices,
    /// `retry --from`: the steps to run again.
    reset: Option<Vec<usize>>,
    /// The run's state, replayed from its journal by the caller.
    state: RunState,
}

/// Drives the run in this process until it finishes or is stopped, and
/// says how it ended and what to do next.
fn drive_run(
    exec: Executor,
    store: SledStore,
    meta: RunMeta,
    plan: Plan,
    bindings: Bindings,
    how: How,
    opts: &RunOptions,
) -> Result<u8, Error> {
    let run = meta.id;
    let plan = Arc::new(plan);
    let mode = Mode::pick(opts.json);
    let shown = Arc::new(super::runs::recorded_bindings(&meta, &plan));
    let mut view = View::new(mode, Arc::clone(&plan), run, Arc::clone(&shown));
    view.until = meta.until.clone();
    let view = Arc::new(Mutex::new(view));
    let choices = how.choices;
    let say = |text: &str| {
        if let Ok(v) = view.lock() {
            v.say(text);
        }
    };
    say(&format!(
        "run {run}: {} ({}); if it is interrupted, continue it with: runbook resume {run}",
        plan.name, meta.file
    ));
    let _ = write_owner(
        &opts.state,
        &Owner {
            pid: std::process::id(),
            run: run.0,
        },
    );
    let sink_view = Arc::clone(&view);
    let sink: Sink = Arc::new(move |line| {
        if let Ok(v) = sink_view.lock() {
            v.line(line);
        }
    });
    let env: Env = Arc::new(|name: &str| std::env::var(name).ok());
    let runner = Arc::new(
        LocalRunner::new(bindings.clone(), env, sink)
            .scrubbing(&plan)
            .for_plan(&plan)
            .noting_groups(
                opts.state.join("running"),
                opts.contain.then(Cgroups::find).flatten(),
            )
            .keeping_output(OutputDir::new(&opts.state)),
    );
    let mut state = how.state;
    if let Some(steps) = how.reset {
        let reset = Event::Reset {
            steps,
            at: now_ms(),
        };
        store.append(run, &reset).map_err(store_error)?;
        state.apply(&plan, &reset);
        if let Ok(mut v) = view.lock() {
            v.event(&reset, &state);
        }
    }
    // A copy of the state, kept by folding each event (cheap), from which
    // `live.json` is written now and then for `runbook status` elsewhere,
    // and the last words are said.
    let mirror = Arc::new(Mutex::new((state.clone(), true)));
    let observe = |event: &Event, state: &RunState| {
        if let Ok(mut v) = view.lock() {
            v.event(event, state);
        }
        if let Ok(mut m) = mirror.lock() {
            m.0.apply(&plan, event);
            m.1 = true;
        }
    };
    let env_now = |name: &str| std::env::var(name).ok();
    let clock = Clock::system();
    let driver = Driver {
        plan: Arc::clone(&plan),
        journal: &store,
        run,
        bindings: &bindings,
        env: &env_now,
        runner,
        clock: &clock,
        observe: &observe,
        until: meta.until.clone(),
    };
    let Executor { runtime, signals } = exec;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ended = runtime.block_on(async {
        tokio::spawn(answer_ctrl_c(tx.clone(), Arc::clone(&view), signals));
        let live = Live {
            state_dir: opts.state.clone(),
            meta: meta.clone(),
            plan: Arc::clone(&plan),
            bindings: Arc::clone(&shown),
            mirror: Arc::clone(&mirror),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let tending = tokio::spawn(tend(tx, Inbox::new(&opts.state), live, stopped));
        let ended = drive_from(&driver, state, &choices, rx).await;
        // Lets the answer to a last request (a cancel, say) reach its sender.
        let _ = stop.send(());
        let _ = tending.await;
        ended
    });
    // From here the process is on its way out, and nothing on that way may
    // hold it for ever (a disk that stopped answering, a name lookup that
    // does not return): past the bound, it says so and exits.
    super::leave_within(LEAVING);
    // Shutting the runtime down drops the attempts still running: their
    // process groups are killed before this process exits.
    runtime.shutdown_timeout(Duration::from_secs(3));
    // A program this process killed (a second Ctrl-C, a timeout, a cancel)
    // is gone before it exits, or named: its note stays, and `resume`
    // refuses while it lives.
    if let Some(stuck) = store::killed_groups_left() {
        if let Ok(v) = view.lock() {
            v.say(&format!(
                "these programs {stuck}; `runbook resume {run}` waits until they have ended"
            ));
        }
    }
    clear_owner(&opts.state);
    let _ = std::fs::remove_file(opts.state.join("live.json"));
    if let Ok(mut v) = view.lock() {
        v.close();
    }
    let state = mirror.lock().ok().map(|m| m.0.clone());
    // Once the run is over, the journal holds what every attempt printed.
    if matches!(ended, Ok(Ended::Finished(_))) {
        OutputDir::new(&opts.state).forget_run(run);
    }
    // The process ends after this: freeing the plan would only cost time
    // (about 2.5 ms for 5,000 steps).
    std::mem::forget(Arc::clone(&plan));
    super::run_end::finish(run.0, &plan, state.as_ref(), ended, mode == Mode::Json)
}

/// First Ctrl-C (or SIGTERM): start nothing new,
/// let running steps finish. Second: stop them now (they stay interrupted in
/// the journal for `resume`). A hangup (the SSH session dropped) does not
/// stop the run: it goes on, and `runbook status` shows it.
async fn answer_ctrl_c(
    tx: tokio::sync::mpsc::UnboundedSender<Control>,
    view: Arc<Mutex<View>>,
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
            if let Ok(v) = view.lock() {
                v.say("stopping: no new step starts; running steps finish and are recorded (Ctrl-C or SIGTERM again to stop them now)");
            }
            let _ = tx.send(Control::Stop);
        } else {
            let _ = tx.send(Control::Kill);
            return;
        }
    }
}

/// What `runbook status` in another terminal reads while this process
/// holds the store.
struct Live {
    state_dir: PathBuf,
    meta: RunMeta,
    plan: Arc<Plan>,
    bindings: Arc<Bindings>,
    mirror: Arc<Mutex<(RunState, bool)>>,
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
        let view = super::runs::view(&self.meta, &self.plan, &m.0, &self.bindings, true);
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
async fn tend(
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
