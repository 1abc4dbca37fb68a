//! How `serve` learns the end of the runs it started: a run's number when
//! its process says it, its end (recorded from the run's own journal, or
//! continued with `resume`), and, after a restart, the runs an earlier
//! scheduler started and did not see end.

use super::runs::{state_of, RunEvent};
use super::Serve;
use crate::engine::{outcome_word, Event, Outcome, RunId};
use crate::error::Error;
use crate::scheduler::{Active, EntryState, Record, Waiting, What};
use crate::session::{alive, open_or_owner, Opened};
use crate::store::owner::read_owner;
use crate::store::{locks, RunStore};
use std::path::Path;

impl Serve {
    pub(super) fn on_event(&mut self, event: RunEvent) -> Result<(), Error> {
        match event {
            RunEvent::Known { name, run } => self.known(&name, run),
            RunEvent::Ended { name, code, last } => self.ended(&name, code, last),
        }
    }

    fn known(&mut self, name: &str, run: u64) -> Result<(), Error> {
        let mut st = self.states.get(name).cloned().unwrap_or_default();
        let Some(active) = &mut st.active else {
            return Ok(());
        };
        if active.run.is_some() {
            return Ok(()); // a resumed run says its number again
        }
        active.run = Some(run);
        let record = Record {
            at: self.now(),
            fire: Some(active.fire),
            what: What::Started {
                run: Some(run),
                catch_up: active.catch_up,
            },
        };
        let cancel = active.cancelling;
        self.save(name, &st, &[record])?;
        if cancel {
            self.cancel(name, run);
        }
        Ok(())
    }

    /// A run process ended: record how the run ended, or continue it.
    pub(super) fn ended(
        &mut self,
        name: &str,
        code: Option<i32>,
        last: Option<String>,
    ) -> Result<(), Error> {
        self.runs.forget(name);
        let mut st = self.states.get(name).cloned().unwrap_or_default();
        let Some(mut active) = st.active.clone() else {
            return Ok(());
        };
        let dir = state_of(&self.runs.state, name);
        let busy = code == Some(i32::from(crate::error::EXIT_BUSY));
        // A process that ended before it said its number may still have
        // created its run: the newest one since it was started.
        let run = active.run.or_else(|| run_since(&dir, active.started_at));
        let Some(run) = run else {
            st.active = None;
            if busy || active.pid.is_none() || self.stopping {
                // It never ran (another run took a lock first, the
                // scheduler stopped before starting it, or stops now): the
                // fire waits again, within its window.
                return self.wait_again(name, st, &active);
            }
            let why = last.unwrap_or_else(|| exit_words(code));
            let record = self.finished(active.fire, None, format!("did not start: {why}"));
            return self.save(name, &st, &[record]);
        };
        active.run = Some(run);
        let record = match run_outcome(&dir, run) {
            Ok(Some(outcome)) => {
                st.active = None;
                let detail = match (outcome, &last) {
                    (Outcome::Succeeded, _) | (_, None) => String::new(),
                    (_, Some(last)) => format!(" ({last})"),
                };
                let outcome = format!("{}{detail}", outcome_word(outcome));
                self.finished(active.fire, Some(run), outcome)
            }
            Ok(None) if self.stopping => {
                st.active = Some(active);
                self.save(name, &st, &[])?;
                self.say(&format!("{name}: run {run} stopped at a checkpoint; it is resumed when the scheduler starts again"));
                return Ok(());
            }
            Ok(None) if busy => {
                // `resume` found a lock taken (a run by hand): tried again
                // once the lock is free.
                let why = last.unwrap_or_else(|| "a lock it needs is held".into());
                active.blocked = Some(why.clone());
                st.active = Some(active.clone());
                Record {
                    at: self.now(),
                    fire: Some(active.fire),
                    what: What::Waiting {
                        why: format!("continuing run {run} waits: {why}"),
                    },
                }
            }
            Ok(None) if !active.resumed => {
                active.resumed = true;
                st.active = Some(active);
                return self.resume(name, &mut st, run);
            }
            Ok(None) | Err(_) => {
                let why = match run_outcome(&dir, run) {
                    Err(e) => e,
                    Ok(_) => last.unwrap_or_else(|| "it stopped before it finished".into()),
                };
                let why = format!(
                    "{why}; see `runbook status {run} --state {}`",
                    dir.display()
                );
                active.needs_operator = Some(why.clone());
                st.active = Some(active.clone());
                Record {
                    at: self.now(),
                    fire: Some(active.fire),
                    what: What::NeedsOperator {
                        run: Some(run),
                        why,
                    },
                }
            }
        };
        self.save(name, &st, &[record])
    }

    fn wait_again(&mut self, name: &str, mut st: EntryState, active: &Active) -> Result<(), Error> {
        if st.waiting.is_none() {
            st.waiting = Some(Waiting {
                fire: active.fire,
                cutoff: active.cutoff,
                catch_up: active.catch_up,
                why: String::new(),
            });
        }
        self.save(name, &st, &[])
    }

    /// `runbook resume RUN` for a run that stopped unfinished.
    pub(super) fn resume(
        &mut self,
        name: &str,
        st: &mut EntryState,
        run: u64,
    ) -> Result<(), Error> {
        let Some(active) = &mut st.active else {
            return Ok(());
        };
        active.blocked = None;
        let fire = active.fire;
        let what = match self.runs.resume(name, run) {
            Ok(pid) => {
                active.pid = Some(pid);
                What::Resumed { run }
            }
            Err(why) => {
                active.needs_operator = Some(why.clone());
                What::NeedsOperator {
                    run: Some(run),
                    why,
                }
            }
        };
        let record = Record {
            at: self.now(),
            fire: Some(fire),
            what,
        };
        let st = st.clone();
        self.save(name, &st, &[record])
    }

    /// A run whose continuing waited for a lock goes on once it is free.
    pub(super) fn resume_if_unblocked(
        &mut self,
        name: &str,
        locks_of: &[String],
    ) -> Result<(), Error> {
        let Some(mut st) = self.states.get(name).cloned() else {
            return Ok(());
        };
        let Some(active) = &st.active else {
            return Ok(());
        };
        let (Some(run), Some(_)) = (active.run, &active.blocked) else {
            return Ok(());
        };
        if self.runs.is_running(name) || locks::probe(&self.lock_dir, locks_of).is_some() {
            return Ok(());
        }
        self.resume(name, &mut st, run)
    }

    /// A run that waits for an operator may have been finished by hand.
    pub(super) fn settle_if_done(
        &self,
        name: &str,
        st: &mut EntryState,
        records: &mut Vec<Record>,
    ) {
        let Some(active) = &st.active else { return };
        let (Some(run), Some(_)) = (active.run, &active.needs_operator) else {
            return;
        };
        if let Ok(Some(outcome)) = run_outcome(&state_of(&self.runs.state, name), run) {
            let outcome = format!(
                "{} (after it waited for an operator)",
                outcome_word(outcome)
            );
            records.push(self.finished(active.fire, Some(run), outcome));
            st.active = None;
        }
    }

    /// On start: the runs an earlier scheduler started and did not see end.
    pub(super) fn recover(&mut self) -> Result<(), Error> {
        let names: Vec<String> = self.states.keys().cloned().collect();
        for name in names {
            let mut st = self.states[&name].clone();
            let Some(mut active) = st.active.clone() else {
                continue;
            };
            if active.needs_operator.is_some() {
                continue;
            }
            let dir = state_of(&self.runs.state, &name);
            // The run's process says which run it drives; a stale file (the
            // process was killed) still names the run.
            let owner = read_owner(&dir).filter(|o| Some(o.pid) == active.pid);
            active.run = active.run.or(owner.as_ref().map(|o| o.run));
            // Each start of the scheduler may continue a run once.
            active.resumed = false;
            st.active = Some(active.clone());
            self.save(&name, &st, &[])?;
            match driver_of(&dir, active.pid) {
                Some(pid) => {
                    let run = active
                        .run
                        .map(|r| format!("run {r}"))
                        .unwrap_or("its run".into());
                    self.say(&format!(
                        "{name}: {run} is still running (process {pid}); watching it"
                    ));
                    self.runs.adopt(&name, pid);
                }
                None => {
                    if let Err(e) = self.ended(&name, None, None) {
                        self.say(&format!("{name}: {e}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The process that drives a run in `dir`: `pid` if it is one, else any
/// runbook process whose command line names the directory (one started
/// just before the scheduler stopped, whose number was not kept).
fn driver_of(dir: &Path, pid: Option<u32>) -> Option<u32> {
    if let Some(pid) = pid.filter(|p| drives(*p, dir)) {
        return Some(pid);
    }
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| drives(*pid, dir))
}

/// Whether `pid` is a runbook process on this state directory (not
/// another program that got the number after the run's process died, nor
/// another user's process that names the directory to be taken for it).
fn drives(pid: u32, dir: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let wanted = dir.as_os_str().as_encoded_bytes();
    alive(pid) && same_user(pid) && cmdline.split(|b| *b == 0).any(|arg| arg == wanted)
}

/// Whether process `pid`'s real user is this process's.
fn same_user(pid: u32) -> bool {
    crate::actions::procs::real_uid(pid) == Some(rustix::process::getuid().as_raw())
}

fn exit_words(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("its process exited with status {code}"),
        None => "its process ended without an exit status (a signal killed it)".into(),
    }
}

/// Opens a run's store as the other commands do, waiting out for a moment
/// a `status` or `logs` that holds it for milliseconds (`run`: the run
/// looked for, named if the store is missing).
fn open_runs(state: &Path, run: u64) -> Result<Box<dyn RunStore>, String> {
    match open_or_owner(state, run).map_err(|e| e.to_string())? {
        Opened::Store(store) => Ok(store),
        Opened::HeldBy(_) => Err(format!(
            "the runs at {} are held by another process",
            state.display()
        )),
    }
}

/// How the run ended, or `None` while it has not.
fn run_outcome(state: &Path, run: u64) -> Result<Option<Outcome>, String> {
    let store = open_runs(state, run)?;
    let events = store.events(RunId(run)).map_err(|e| e.to_string())?;
    let mut outcome = None;
    for event in events {
        match event {
            Event::RunFinished { outcome: o, .. } => outcome = Some(o),
            Event::Reset { .. } => outcome = None,
            _ => {}
        }
    }
    Ok(outcome)
}

/// The newest run of the store created at or after `since`.
fn run_since(state: &Path, since: Option<i64>) -> Option<u64> {
    let since = since?;
    let store = open_runs(state, 0).ok()?;
    let runs = store.runs().ok()?;
    runs.iter()
        .filter(|m| m.created_at as i64 >= since)
        .map(|m| m.id.0)
        .max()
}
