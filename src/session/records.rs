//! What is kept of runs, for a person to look at: each run's report
//! (`RunView`), from the journal, or from the live view the process driving
//! a run keeps; and what each attempt of a step printed.

use super::open::{
    has_journal, locked_sentence, open_or_owner, plan_and_state, plan_of, store_error,
    CompileAhead, Opened,
};
use super::report::{recorded_bindings, view, RunView};
use crate::actions::output_file::OutputDir;
use crate::engine::{RunId, StepLog};
use crate::error::Error;
use crate::store::inbox::Owner;
use std::path::Path;

/// The most a live view may hold (80,000 steps take about 20 MB).
const VIEW_LIMIT: u64 = 256 << 20;

/// Runs as they stand.
pub enum Runs {
    /// From the journal: every run, or the one asked for (none yet: empty).
    Recorded(Vec<RunView>),
    /// The run a process drives now, from its live view: while it holds
    /// the store, the other runs cannot be read.
    Live(RunView),
}

/// Every run of `state_dir`, or run `run`.
pub fn runs(state_dir: &Path, run: Option<u64>) -> Result<Runs, Error> {
    if run.is_none() && !has_journal(state_dir) {
        return Ok(Runs::Recorded(Vec::new()));
    }
    let mut ahead = run.map(|id| CompileAhead::start(state_dir, id));
    // Without a run number, a state directory with no journal was answered above.
    let store = match open_or_owner(state_dir, run.unwrap_or_default())? {
        Opened::Store(store) => store,
        Opened::HeldBy(owner) => return live(state_dir, owner, run).map(Runs::Live),
    };
    let metas = match run {
        Some(id) => vec![store.run(RunId(id)).map_err(store_error)?],
        None => store.runs().map_err(store_error)?,
    };
    let mut views = Vec::new();
    for meta in &metas {
        let ahead = ahead.take().unwrap_or_else(CompileAhead::none);
        let (plan, state) = plan_and_state(state_dir, &*store, meta, ahead)?;
        views.push(view(
            meta,
            &plan,
            &state,
            &recorded_bindings(meta, &plan),
            false,
        ));
    }
    Ok(Runs::Recorded(views))
}

/// While a process drives a run, it keeps `live.json` with the run's view.
fn live(state_dir: &Path, owner: Option<Owner>, run: Option<u64>) -> Result<RunView, Error> {
    let live = crate::store::private::read(&state_dir.join("live.json"), VIEW_LIMIT).ok();
    let parsed: Option<serde_json::Value> = live.and_then(|b| serde_json::from_slice(&b).ok());
    let matches = match (&owner, run) {
        (Some(o), Some(r)) => o.run == r,
        (Some(_), None) => true,
        _ => false,
    };
    let view: Option<RunView> = parsed.and_then(|v| serde_json::from_value(v).ok());
    view.filter(|_| matches)
        .ok_or_else(|| Error::InUse(locked_sentence(state_dir, owner)))
}

/// What one attempt of a step printed.
pub struct AttemptLog {
    pub attempt: u32,
    pub log: StepLog,
    /// Whether the attempt ended; one whose runbook stopped before it
    /// ended has only what it printed on its way, on disk.
    pub ended: bool,
}

/// What each attempt of each step of run `run` (or of step `step`)
/// printed, as kept: step names, each with its attempts in order.
pub fn logs(
    state_dir: &Path,
    run: u64,
    step: Option<&str>,
) -> Result<Vec<(String, Vec<AttemptLog>)>, Error> {
    let store = match open_or_owner(state_dir, run)? {
        Opened::Store(store) => store,
        Opened::HeldBy(owner) => {
            return Err(Error::InUse(format!(
                "{}; while it runs, its output is on its terminal",
                locked_sentence(state_dir, owner)
            )))
        }
    };
    let meta = store.run(RunId(run)).map_err(store_error)?;
    let plan = plan_of(&meta)?;
    let steps: Vec<&crate::compile::Step> = match step {
        Some(name) => vec![plan
            .step(name)
            .ok_or_else(|| Error::Usage(format!("run {run} has no step `{name}`")))?],
        None => plan.steps.iter().collect(),
    };
    let mut streamed = OutputDir::new(state_dir).read_run(meta.id);
    let mut kept = Vec::with_capacity(steps.len());
    for s in steps {
        let mut attempts: Vec<AttemptLog> = store
            .logs(meta.id, s.id.0)
            .map_err(store_error)?
            .into_iter()
            .map(|(attempt, log)| AttemptLog {
                attempt,
                log,
                ended: true,
            })
            .collect();
        let recorded: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
        for (attempt, set_aside, log) in streamed.remove(&s.id.0).unwrap_or_default() {
            if set_aside || !recorded.contains(&attempt) {
                attempts.push(AttemptLog {
                    attempt,
                    log,
                    ended: false,
                });
            }
        }
        // Stable: an interrupted attempt before the same attempt run again.
        attempts.sort_by_key(|a| (a.attempt, a.ended));
        kept.push((s.name.clone(), attempts));
    }
    Ok(kept)
}
