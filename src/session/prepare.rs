//! Preparing a run to be driven: a new one, one continued where it stopped
//! (`resume`) or one run again from a step (`retry`). The same for a run of
//! this process's own command and for one submitted through the socket
//! from another terminal: the store is already open, the environment and
//! the person are given.

use super::open::{keep_source, plan_state_and_events, rebind, store_error, CompileAhead};
use super::Choices;
use crate::actions::groups::{GroupNotes, Noted};
use crate::actions::steps::unsupported;
use crate::compile::eval::{bind_for_run, Bindings};
use crate::compile::{Phase, Plan, StepId, Type};
use crate::engine::{
    outcome_word, Deadline, RecordedParam, RunId, RunMeta, RunState, Steering, StepState,
    StoreError,
};
use crate::error::Error;
use crate::store::locks::{self, Held, Holder, LockError};
use crate::store::RunStore;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where a run is prepared, and for whom.
pub(super) struct Preparing<'a> {
    pub(super) state_dir: &'a Path,
    pub(super) store: &'a dyn RunStore,
    /// The environment of the terminal the run is started from: secrets
    /// and `env()` are read from it.
    pub(super) env: &'a (dyn Fn(&str) -> Option<String> + Sync),
    /// The account that starts, resumes or retries it.
    pub(super) by: String,
}

/// A run ready to be driven, holding its named locks.
pub(super) struct Prepared {
    pub(super) meta: RunMeta,
    pub(super) plan: Arc<Plan>,
    pub(super) bindings: Bindings,
    /// The parameters as recorded (secrets as markers): for what is shown.
    pub(super) shown: Arc<Bindings>,
    pub(super) how: How,
    /// What the run recorded before this drive (a resume's or a retry's).
    pub(super) past: Vec<crate::engine::Event>,
    /// The named locks, held until the drive ends.
    pub(super) held: Held,
}

/// What a drive starts from besides the journal.
pub(super) struct How {
    pub(super) choices: Choices,
    /// Who resumed or retried the run, and how: recorded first.
    pub(super) steered: Option<(String, Steering)>,
    /// `retry --from`: the steps to run again.
    pub(super) reset: Option<Vec<usize>>,
    /// The run's state, replayed from its journal.
    pub(super) state: RunState,
}

impl Preparing<'_> {
    /// A new run of `plan`, compiled from `source`, the text read from
    /// `file` (the text the journal records is the text that runs).
    pub(super) fn start(
        &self,
        file: &str,
        source: &str,
        plan: Plan,
        given: &[(String, String)],
        until: Option<Deadline>,
    ) -> Result<Prepared, Error> {
        refuse_unsupported(&plan)?;
        let bindings =
            bind_for_run(&plan, given, self.env).map_err(|e| Error::Usage(e.join("\n       ")))?;
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
        let mut held = take_locks(&plan, self.state_dir, None)?;
        let meta = self
            .store
            .create_run(file, source, recorded, now_ms(), until, Some(self.by.clone()))
            .map_err(|e| match e {
                e @ (StoreError::Short { .. } | StoreError::Corrupt { .. }) => Error::Store(format!(
                    "{e}. No new run is written into it; to run now, use another state directory (--state DIR)"
                )),
                e => store_error(e),
            })?;
        keep_source(self.state_dir, &meta);
        super::kept_plan::keep(self.state_dir, meta.id.0, &meta.source, &plan);
        held.note(&holder(&plan, self.state_dir, Some(meta.id.0)));
        let how = How {
            choices: Choices::default(),
            steered: None,
            reset: None,
            state: RunState::new(&plan),
        };
        Ok(prepared(meta, plan, bindings, how, Vec::new(), held))
    }

    /// Run `run`, continued where it stopped.
    pub(super) fn resume(
        &self,
        run: u64,
        given: &[(String, String)],
        choices: Choices,
        ahead: CompileAhead,
    ) -> Result<Prepared, Error> {
        let meta = self.store.run(RunId(run)).map_err(store_error)?;
        let (plan, state, past) = plan_state_and_events(self.state_dir, self.store, &meta, ahead)?;
        refuse_imported(run, &state)?;
        if let Some(outcome) = state.finished {
            return Err(Error::Refused(format!(
                "run {run} has already finished ({}); nothing to resume. `runbook retry {run} --from STEP` runs steps again",
                outcome_word(outcome)
            )));
        }
        refuse_unsupported(&plan)?;
        refuse_while_still_running(self.state_dir, &meta, &plan, &state)?;
        let bindings = rebind(&meta, &plan, given, self.env)?;
        let held = take_locks(&plan, self.state_dir, Some(run))?;
        let how = How {
            steered: Some((
                self.by.clone(),
                Steering::Resumed {
                    rerun: choices.rerun.clone(),
                    skip: choices.skip.clone(),
                    done: choices.done.clone(),
                },
            )),
            choices,
            reset: None,
            state,
        };
        Ok(prepared(meta, plan, bindings, how, past, held))
    }

    /// Run `run`, finished, again from step `from`: the step and everything
    /// after it run again; the outputs of the steps before it are kept.
    pub(super) fn retry(
        &self,
        run: u64,
        from: &str,
        given: &[(String, String)],
        ahead: CompileAhead,
    ) -> Result<Prepared, Error> {
        let meta = self.store.run(RunId(run)).map_err(store_error)?;
        let (plan, state, past) = plan_state_and_events(self.state_dir, self.store, &meta, ahead)?;
        refuse_imported(run, &state)?;
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
        let bindings = rebind(&meta, &plan, given, self.env)?;
        let held = take_locks(&plan, self.state_dir, Some(run))?;
        let how = How {
            choices: Choices::default(),
            steered: Some((
                self.by.clone(),
                Steering::Retried {
                    from: from.to_string(),
                },
            )),
            reset: Some(from_onwards(&plan, step.id)),
            state,
        };
        Ok(prepared(meta, plan, bindings, how, past, held))
    }
}

fn prepared(
    meta: RunMeta,
    plan: Plan,
    bindings: Bindings,
    how: How,
    past: Vec<crate::engine::Event>,
    held: Held,
) -> Prepared {
    let plan = Arc::new(plan);
    let shown = Arc::new(super::report::recorded_bindings(&meta, &plan));
    Prepared {
        meta,
        plan,
        bindings,
        shown,
        how,
        past,
        held,
    }
}

/// The plan's named locks, all or none, held until the drive ends: a lock
/// another run holds is one sentence and `EXIT_BUSY`.
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

/// A copy imported for review is looked at, never driven here.
fn refuse_imported(run: u64, state: &RunState) -> Result<(), Error> {
    match &state.imported {
        Some(from) => Err(Error::Refused(format!(
            "run {run} is a copy imported for review ({from}); it is not resumed or retried here: start a new run of its runbook"
        ))),
        None => Ok(()),
    }
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
    super::Clock::system().now()
}
