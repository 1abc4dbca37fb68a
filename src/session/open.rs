//! Opening the store of a state directory, with plain sentences for what can
//! go wrong, and a run's plan compiled from the source it recorded.

use crate::compile::eval::{bind_for_run, Bindings};
use crate::compile::Plan;
use crate::engine::{RecordedParam, RunMeta, RunState, StoreError};
use crate::error::Error;
use crate::store::owner::{read_owner, Owner};
use crate::store::{open_runs, runs_holder, RunStore};
use std::path::{Path, PathBuf};

/// The journal lives in `STATE/journal`.
pub fn open(state: &Path, run: u64) -> Result<Box<dyn RunStore>, Error> {
    match open_or_owner(state, run)? {
        Opened::Store(store) => Ok(store),
        Opened::HeldBy(owner) => Err(Error::InUse(locked_sentence(state, owner))),
    }
}

/// Opening the store to look at or steer run `run` (named if there is no
/// store at all), or learning which process holds it.
pub enum Opened {
    Store(Box<dyn RunStore>),
    HeldBy(Option<Owner>),
}

pub fn open_or_owner(state: &Path, run: u64) -> Result<Opened, Error> {
    if !has_journal(state) {
        return Err(Error::NoRun(no_store_sentence(state, run)));
    }
    open_or_owner_creating(state)
}

pub fn no_store_sentence(state: &Path, run: u64) -> String {
    format!(
        "there is no run {run}: no runbook has run with the state directory {}; is --state right?",
        state.display()
    )
}

/// Whether runs were ever recorded in `state`: commands that only read or
/// steer existing runs create nothing.
pub fn has_journal(state: &Path) -> bool {
    state.join("journal").is_dir()
}

/// The store, made when missing (for `runbook run`, `import`), or which
/// process holds it.
pub(super) fn open_or_owner_to_write(state: &Path) -> Result<Opened, Error> {
    open_or_owner_creating(state)
}

/// The state directory was checked, and made if need be, before any
/// command used it (`private::state_dir`).
fn open_or_owner_creating(state: &Path) -> Result<Opened, Error> {
    // `status`, `logs` and `approve` hold the store for milliseconds: wait
    // them out for up to a second. A process driving a run holds it for
    // as long as the run goes: say so at once.
    let start = std::time::Instant::now();
    loop {
        match open_runs(&state.join("journal")) {
            Ok(store) => {
                if let Some(repaired) = store.repaired() {
                    super::notes::note(&repaired);
                }
                return Ok(Opened::Store(store));
            }
            Err(StoreError::Locked { .. }) => {
                let owner = read_owner(state).filter(|o| alive(o.pid));
                if owner.is_some() || start.elapsed() > std::time::Duration::from_secs(1) {
                    return Ok(Opened::HeldBy(owner));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(store_error(e)),
        }
    }
}

/// Whether another process with this id exists and has not ended (0,
/// which kill(2) reads as "my process group", is none; a zombie, ended but
/// not yet reaped by its parent, is none either).
pub fn alive(pid: u32) -> bool {
    pid != std::process::id() && crate::store::process::alive(pid)
}

pub fn locked_sentence(state: &Path, owner: Option<Owner>) -> String {
    match owner {
        Some(o) => format!(
            "the store at {} is in use by run {} (process {}); wait for it to finish, or use `runbook approve`/`runbook cancel` on that run",
            state.display(),
            o.run,
            o.pid
        ),
        None => match runs_holder(&state.join("journal")) {
            Some(pid) => format!(
                "the store at {} is in use by process {pid}, which did not say which run it drives ({} is missing); wait for it to finish and try again",
                state.display(),
                state.join("owner.json").display()
            ),
            None => format!(
                "the store at {} is in use by another runbook process; wait for it to finish and try again",
                state.display()
            ),
        },
    }
}

/// Waits, up to 5 s, for the process groups this process killed to be gone;
/// if some are not, the middle of a sentence naming them.
pub fn killed_groups_left() -> Option<String> {
    let left = crate::actions::spawn::wait_killed_gone(std::time::Duration::from_secs(5));
    if left.is_empty() {
        return None;
    }
    Some(format!(
        "did not end within 5 s of being killed ({}); they may be stuck in the kernel (a disk or network file system that does not answer)",
        left.join(", ")
    ))
}

pub fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::UnknownRun(_) => Error::NoRun(e.to_string()),
        StoreError::Locked { .. } => Error::InUse(e.to_string()),
        _ => Error::Store(e.to_string()),
    }
}

/// A run's plan, compiled from the exact source it started with.
pub fn plan_of(meta: &RunMeta) -> Result<Plan, Error> {
    compile_recorded(&meta.source, meta.id.0)
}

fn compile_recorded(source: &str, run: u64) -> Result<Plan, Error> {
    crate::compile::check(source).map_err(|_| {
        Error::Refused(format!(
            "run {run} was recorded with a runbook this version of runbook no longer accepts; run it with the version that started it"
        ))
    })
}

/// The plan of `source` on a thread with the main thread's deep stack (see
/// main.rs): the one kept for it (`kept_plan`), or compiled, and then kept
/// for the next time; `None` when no thread is to be had.
fn compile_on_a_thread(
    state: &Path,
    source: String,
    run: u64,
) -> Option<std::thread::JoinHandle<Result<Plan, Error>>> {
    let state = state.to_path_buf();
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            if let Some(plan) = super::kept_plan::read(&state, run, &source) {
                return Ok(plan);
            }
            let plan = compile_recorded(&source, run)?;
            super::kept_plan::keep(&state, run, &source, &plan);
            Ok(plan)
        })
        .ok()
}

/// Where a copy of a run's recorded source is kept, outside the journal,
/// so that `resume`, `retry` and `status` can compile it while the store
/// opens (the embedded store takes 6 to 17 ms to open a journal of 10,000 events, then
/// compiling a large runbook takes longer than reading it). The journal's
/// copy is the one that counts: this one is used only when it is the same,
/// byte for byte.
fn source_copy(state: &Path, run: u64) -> PathBuf {
    state.join("sources").join(format!("{run}.runbook"))
}

/// Keeps the copy (see `source_copy`). Not synced, and failures are
/// ignored: a missing or torn copy only means compiling after the store
/// opens, as without it.
pub fn keep_source(state: &Path, meta: &RunMeta) {
    use std::io::Write;
    let path = source_copy(state, meta.id.0);
    let Some(dir) = path.parent() else { return };
    let tmp = dir.join(format!(
        ".{}.{}.{:016x}.tmp",
        meta.id,
        std::process::id(),
        crate::store::private::random()
    ));
    // A new file, never one already there (nor what a link there points at).
    let written = crate::store::private::make_dir(dir)
        .and_then(|()| crate::store::private::create_new(&tmp))
        .and_then(|mut file| file.write_all(meta.source.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The copy's text, if it is a plain file no bigger than a runbook may be
/// (a pipe or a huge file there is not waited for or read).
fn read_source_copy(state: &Path, run: u64) -> Option<String> {
    let limit = crate::syntax::MAX_SOURCE_BYTES as u64;
    let bytes = crate::store::private::read(&source_copy(state, run), limit).ok()?;
    String::from_utf8(bytes).ok()
}

/// A run's source, compiling from the copy kept beside the journal before
/// the store is even open.
pub struct CompileAhead {
    /// The run asked for; `None` when nothing was to be compiled ahead.
    run: Option<u64>,
    source: String,
    compiling: Option<std::thread::JoinHandle<Result<Plan, Error>>>,
}

impl CompileAhead {
    /// Starts compiling the copy of `run`'s source, if there is one.
    pub fn start(state: &Path, run: u64) -> CompileAhead {
        let source = read_source_copy(state, run).unwrap_or_default();
        let compiling = (!source.is_empty())
            .then(|| compile_on_a_thread(state, source.clone(), run))
            .flatten();
        CompileAhead {
            run: Some(run),
            source,
            compiling,
        }
    }

    /// Nothing compiled ahead: `plan_and_state` compiles after opening.
    pub fn none() -> CompileAhead {
        CompileAhead {
            run: None,
            source: String::new(),
            compiling: None,
        }
    }

    /// Whether this is compiling exactly `meta`'s recorded source.
    fn is_for(&self, meta: &RunMeta) -> bool {
        self.compiling.is_some() && self.run == Some(meta.id.0) && self.source == meta.source
    }
}

/// A run's plan and its state. The recorded source is compiled on a
/// thread of its own while this one reads the journal: for a large
/// runbook the two take about as long, and a resume waits for both. When
/// `ahead` compiled the same source already (started before the store was
/// opened), that plan is used.
pub fn plan_and_state(
    state_dir: &Path,
    store: &dyn RunStore,
    meta: &RunMeta,
    ahead: CompileAhead,
) -> Result<(Plan, RunState), Error> {
    plan_state_and_events(state_dir, store, meta, ahead).map(|(plan, state, _)| (plan, state))
}

/// As `plan_and_state`, with the events the state was replayed from.
pub(super) fn plan_state_and_events(
    state_dir: &Path,
    store: &dyn RunStore,
    meta: &RunMeta,
    ahead: CompileAhead,
) -> Result<(Plan, RunState, Vec<crate::engine::Event>), Error> {
    let compiling = if ahead.is_for(meta) {
        ahead.compiling
    } else {
        // No usable copy (a copy that is not the recorded source is left
        // to finish unheard): the journal's source, and, where a copy was
        // looked for, one kept for the next time.
        if ahead.run == Some(meta.id.0) {
            keep_source(state_dir, meta);
        }
        compile_on_a_thread(state_dir, meta.source.clone(), meta.id.0)
    };
    let events = store.events(meta.id).map_err(store_error);
    let plan = match compiling.map(std::thread::JoinHandle::join) {
        Some(Ok(plan)) => plan,
        Some(Err(_)) => Err(Error::Internal(format!(
            "compiling the runbook of run {} failed unexpectedly; please report this",
            meta.id
        ))),
        // No thread to be had: compile here.
        None => plan_of(meta),
    }?;
    let events = events?;
    let state = RunState::replay(&plan, &events);
    Ok((plan, state, events))
}

/// Bindings for continuing a run: the parameters it recorded, secrets read
/// again (from the environment, or `-p` for those given on the command line).
pub fn rebind(
    meta: &RunMeta,
    plan: &Plan,
    given_now: &[(String, String)],
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Bindings, Error> {
    let mut given = Vec::new();
    let mut errors = Vec::new();
    for (name, recorded) in &meta.params {
        match recorded {
            RecordedParam::Value(v) => given.push((name.clone(), v.clone())),
            RecordedParam::SecretFromEnv(_) => {}
            RecordedParam::SecretGiven => {
                match given_now.iter().find(|(n, _)| n == name) {
                    Some(pair) => given.push(pair.clone()),
                    None => errors.push(format!(
                        "the secret `{name}` was given with -p when run {} started and is not kept; pass it again with -p {name}=...",
                        meta.id
                    )),
                }
            }
        }
    }
    for (name, _) in given_now {
        let recorded = meta.params.iter().find(|(n, _)| n == name);
        if !matches!(recorded, Some((_, RecordedParam::SecretGiven))) {
            errors.push(format!(
                "-p {name}: run {} keeps the parameters it started with; only secrets given with -p are passed again",
                meta.id
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Error::Usage(errors.join("\n       ")));
    }
    bind_for_run(plan, &given, env).map_err(|e| Error::Usage(e.join("\n       ")))
}
