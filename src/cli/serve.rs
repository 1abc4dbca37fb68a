//! `runbook serve DIR`: starts the directory's scheduled runbooks at their
//! times, for as long as it runs. Each check asks `scheduler::tick` what to
//! do for each runbook, records that in the scheduler's store (flushed)
//! before doing it, and does it: starts `runbook run` processes, asks runs
//! to cancel. The clock is a parameter, so tests move time as they like.

use super::scheduled::Loader;
pub use super::serve_runs::Log;
use super::serve_runs::{alive, state_of, RunEvent, Runs};
use crate::engine::{outcome_word, Event, Journal, Outcome, RunId};
use crate::error::Error;
use crate::scheduler::{ms, short_time, tick, Action, EntryState, Ms, Record, What};
use crate::store::inbox::read_owner;
use crate::store::{locks, ScheduleStore, SledStore};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The scheduler's idea of now.
pub trait SchedClock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl SchedClock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

pub struct ServeConfig {
    pub dir: PathBuf,
    pub state: PathBuf,
    /// The `runbook` binary the runs are started with.
    pub exe: PathBuf,
    /// Real time between two checks.
    pub tick: Duration,
    pub log: Log,
}

struct Serve {
    clock: Arc<dyn SchedClock>,
    store: ScheduleStore,
    loader: Loader,
    states: BTreeMap<String, EntryState>,
    runs: Runs,
    lock_dir: PathBuf,
    log: Log,
    stopping: bool,
    /// Each runbook's last history lines, written to `STATE/scheduler.json`
    /// for `runbook schedule` while this process holds the store.
    recent: BTreeMap<String, Vec<Record>>,
    state: PathBuf,
}

/// What `runbook schedule` reads while a scheduler holds its store.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Live {
    pub pid: u32,
    pub history: BTreeMap<String, Vec<Record>>,
}

pub const LIVE_FILE: &str = "scheduler.json";
const RECENT: usize = 5;

/// Serves until `stop` counts 1 (then nothing new starts and the runs stop
/// at a checkpoint) and every run process has ended; a count of 2 stops
/// their running steps too.
pub async fn serve(
    cfg: ServeConfig,
    clock: Arc<dyn SchedClock>,
    mut stop: watch::Receiver<u32>,
) -> Result<(), Error> {
    let store = ScheduleStore::open(&cfg.state.join("scheduler")).map_err(Error::Run)?;
    let mut loader = Loader::new(&cfg.dir, true);
    let said = loader.refresh().map_err(Error::Run)?;
    let lock_dir = locks::lock_dir(&cfg.state);
    let runs = Runs::new(
        cfg.exe.clone(),
        cfg.state.clone(),
        lock_dir.clone(),
        Arc::clone(&cfg.log),
        cfg.tick,
    );
    let states: BTreeMap<String, EntryState> =
        store.entries().map_err(Error::Run)?.into_iter().collect();
    let recent = states
        .keys()
        .map(|name| {
            (
                name.clone(),
                store.history(name, RECENT).unwrap_or_default(),
            )
        })
        .collect();
    let mut s = Serve {
        recent,
        state: cfg.state.clone(),
        clock,
        store,
        loader,
        states,
        runs,
        lock_dir,
        log: Arc::clone(&cfg.log),
        stopping: false,
    };
    for line in said {
        s.say(&line);
    }
    s.say(&format!(
        "serving {} scheduled runbooks from {} (state {})",
        s.loader.entries().len(),
        cfg.dir.display(),
        cfg.state.display()
    ));
    s.recover()?;
    loop {
        if *stop.borrow() > 0 {
            break;
        }
        s.check()?;
        tokio::select! {
            Some(event) = s.runs.rx.recv() => s.on_event(event)?,
            _ = tokio::time::sleep(cfg.tick) => {}
            _ = stop.changed() => {}
        }
        while let Ok(event) = s.runs.rx.try_recv() {
            s.on_event(event)?;
        }
    }
    s.shut_down(stop).await
}

impl Serve {
    fn say(&self, text: &str) {
        (self.log)(&format!("{} {text}", short_time(ms(self.clock.now()))));
    }

    fn now(&self) -> Ms {
        ms(self.clock.now())
    }

    /// One check: reload what changed, then each runbook's due fires.
    fn check(&mut self) -> Result<(), Error> {
        match self.loader.refresh() {
            Ok(said) => said.iter().for_each(|line| self.say(line)),
            Err(why) => self.say(&why),
        }
        for entry in self.loader.entries() {
            let now = self.now();
            let mut st = self.states.get(&entry.name).cloned().unwrap_or_default();
            let before = st.clone();
            let mut records = Vec::new();
            if st.next_fire.is_some_and(|f| f <= now) {
                self.settle_if_done(&entry.name, &mut st, &mut records);
            }
            let lock_dir = self.lock_dir.clone();
            let busy = move |names: &[String]| locks::probe(&lock_dir, names);
            let actions = tick(&entry, &mut st, now, &busy);
            let mut starts = Vec::new();
            for action in actions {
                match action {
                    Action::Record(r) => records.push(r),
                    Action::Start {
                        fire,
                        cutoff,
                        catch_up,
                    } => starts.push((fire, cutoff, catch_up)),
                    Action::Cancel { run: Some(run), .. } => {
                        if let Err(why) = self.runs.cancel(&entry.name, run) {
                            self.say(&format!("{}: {why}", entry.name));
                        }
                    }
                    // Not known yet: asked once the run says its number.
                    Action::Cancel { run: None, .. } => {}
                }
            }
            // What was decided is durable before a run starts.
            if st != before || !records.is_empty() {
                self.save(&entry.name, &st, &records)?;
            }
            for (fire, cutoff, catch_up) in starts {
                self.start(&entry, &mut st, fire, cutoff, catch_up)?;
            }
        }
        Ok(())
    }

    fn start(
        &mut self,
        entry: &crate::scheduler::Entry,
        st: &mut EntryState,
        fire: Ms,
        cutoff: Option<Ms>,
        catch_up: bool,
    ) -> Result<(), Error> {
        // The run's own clock is the real one: give it the window's close
        // as the time left from now.
        let until = cutoff.map(|c| {
            let left = chrono::Duration::milliseconds(c - self.now());
            let at = (Utc::now() + left).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            (at, format!("its window closed at {}", short_time(c)))
        });
        let started = self.runs.start(&entry.name, &entry.file, until);
        let record = match started {
            Ok(pid) => {
                if let Some(active) = &mut st.active {
                    active.pid = Some(pid);
                }
                let how = if catch_up { " (catching up)" } else { "" };
                self.say(&format!(
                    "{}: the {} fire: starting{how}",
                    entry.name,
                    short_time(fire)
                ));
                None
            }
            Err(why) => {
                st.active = None;
                Some(self.finished(fire, None, format!("did not start: {why}")))
            }
        };
        self.save(&entry.name, st, record.as_slice())
    }

    fn save(&mut self, name: &str, st: &EntryState, records: &[Record]) -> Result<(), Error> {
        self.store.save(name, st, records).map_err(Error::Run)?;
        self.states.insert(name.to_string(), st.clone());
        for r in records {
            self.say(&format!("{name}: {}", r.sentence()));
        }
        if !records.is_empty() {
            let recent = self.recent.entry(name.to_string()).or_default();
            recent.extend(records.iter().cloned());
            let extra = recent.len().saturating_sub(RECENT);
            recent.drain(..extra);
            let live = Live {
                pid: std::process::id(),
                history: self.recent.clone(),
            };
            let body = serde_json::to_vec_pretty(&live).unwrap_or_default();
            if let Err(e) = crate::store::inbox::write_whole(&self.state, LIVE_FILE, &body) {
                self.say(&format!(
                    "cannot write {}: {e}",
                    self.state.join(LIVE_FILE).display()
                ));
            }
        }
        Ok(())
    }

    fn finished(&self, fire: Ms, run: Option<u64>, outcome: String) -> Record {
        Record {
            at: self.now(),
            fire: Some(fire),
            what: What::Finished { run, outcome },
        }
    }

    fn on_event(&mut self, event: RunEvent) -> Result<(), Error> {
        match event {
            RunEvent::Known { name, run } => {
                let mut st = self.states.get(&name).cloned().unwrap_or_default();
                let Some(active) = &mut st.active else {
                    return Ok(());
                };
                if active.run.is_some() {
                    return Ok(()); // a resumed run says its number again
                }
                active.run = Some(run);
                let catch_up = active.fire < self.now() - crate::scheduler::GRACE_MS;
                let record = Record {
                    at: self.now(),
                    fire: Some(active.fire),
                    what: What::Started {
                        run: Some(run),
                        catch_up,
                    },
                };
                let cancel = active.cancelling;
                self.save(&name, &st, &[record])?;
                if cancel {
                    if let Err(why) = self.runs.cancel(&name, run) {
                        self.say(&format!("{name}: {why}"));
                    }
                }
                Ok(())
            }
            RunEvent::Ended { name, code, last } => self.ended(&name, code, last),
        }
    }

    /// A run process ended: record how the run ended, or continue it.
    fn ended(&mut self, name: &str, code: Option<i32>, last: Option<String>) -> Result<(), Error> {
        self.runs.forget(name);
        let mut st = self.states.get(name).cloned().unwrap_or_default();
        let Some(mut active) = st.active.clone() else {
            return Ok(());
        };
        let dir = state_of(self.runs_state(), name);
        let Some(run) = active.run else {
            st.active = None;
            // Another run took a lock between the check and the start: the
            // fire waits again, within its window.
            if code == Some(i32::from(super::run::EXIT_BUSY)) && active.cutoff.is_some() {
                st.waiting = Some(crate::scheduler::Waiting {
                    fire: active.fire,
                    cutoff: active.cutoff,
                    catch_up: false,
                    why: String::new(),
                });
                return self.save(name, &st, &[]);
            }
            let why = last.unwrap_or_else(|| format!("the process exited with {code:?}"));
            let record = self.finished(active.fire, None, format!("did not start: {why}"));
            return self.save(name, &st, &[record]);
        };
        let record = match run_outcome(&dir, run) {
            Ok(Some(outcome)) => {
                st.active = None;
                let detail = match (outcome, &last) {
                    (Outcome::Succeeded, _) | (_, None) => String::new(),
                    (_, Some(last)) => format!(" ({last})"),
                };
                self.finished(
                    active.fire,
                    Some(run),
                    format!("{}{detail}", outcome_word(outcome)),
                )
            }
            Ok(None) if self.stopping => {
                self.say(&format!("{name}: run {run} stopped at a checkpoint; it is resumed when the scheduler starts again"));
                return Ok(());
            }
            Ok(None) if active.needs_operator.is_none() && !active.resumed => {
                active.resumed = true;
                st.active = Some(active.clone());
                self.resume(name, &mut st, run)?;
                return Ok(());
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

    fn runs_state(&self) -> &Path {
        &self.runs.state
    }

    fn resume(&mut self, name: &str, st: &mut EntryState, run: u64) -> Result<(), Error> {
        let Some(active) = &mut st.active else {
            return Ok(());
        };
        let fire = active.fire;
        let record = match self.runs.resume(name, run) {
            Ok(pid) => {
                active.pid = Some(pid);
                Record {
                    at: self.now(),
                    fire: Some(fire),
                    what: What::Resumed { run },
                }
            }
            Err(why) => {
                active.needs_operator = Some(why.clone());
                Record {
                    at: self.now(),
                    fire: Some(fire),
                    what: What::NeedsOperator {
                        run: Some(run),
                        why,
                    },
                }
            }
        };
        let st = st.clone();
        self.save(name, &st, &[record])
    }

    /// A run that waits for an operator may have been finished by hand.
    fn settle_if_done(&self, name: &str, st: &mut EntryState, records: &mut Vec<Record>) {
        let Some(active) = &st.active else { return };
        let (Some(run), Some(_)) = (active.run, &active.needs_operator) else {
            return;
        };
        if let Ok(Some(outcome)) = run_outcome(&state_of(self.runs_state(), name), run) {
            records.push(self.finished(
                active.fire,
                Some(run),
                format!("{} (finished by an operator)", outcome_word(outcome)),
            ));
            st.active = None;
        }
    }

    /// On start: the runs an earlier scheduler started and did not see end.
    fn recover(&mut self) -> Result<(), Error> {
        let names: Vec<String> = self.states.keys().cloned().collect();
        for name in names {
            let mut st = self.states[&name].clone();
            let Some(active) = st.active.clone() else {
                continue;
            };
            if active.needs_operator.is_some() {
                continue;
            }
            let dir = state_of(self.runs_state(), &name);
            // The run's process says which run it drives; a stale file (the
            // process was killed) still names the run.
            let owner = read_owner(&dir).filter(|o| Some(o.pid) == active.pid);
            let run = active.run.or(owner.as_ref().map(|o| o.run));
            let driving = owner.filter(|o| drives(o.pid, &dir));
            if active.run.is_none() && run.is_some() {
                if let Some(a) = &mut st.active {
                    a.run = run;
                }
                self.save(&name, &st, &[])?;
            }
            let active = st.active.clone().unwrap_or(active);
            match (run, driving) {
                (Some(run), Some(owner)) => {
                    self.say(&format!(
                        "{name}: run {run} is still running (process {}); watching it",
                        owner.pid
                    ));
                    self.runs.adopt(&name, owner.pid);
                }
                (Some(run), None) => {
                    // Each start of the scheduler may continue a run once.
                    st.active = Some(crate::scheduler::Active {
                        resumed: false,
                        ..active
                    });
                    self.states.insert(name.clone(), st);
                    self.ended(&name, None, None).or_else(|e| {
                        self.say(&format!("{name}: run {run}: {e}"));
                        Ok::<(), Error>(())
                    })?;
                }
                (None, _) => {
                    st.active = None;
                    let record = self.finished(
                        active.fire,
                        None,
                        "unknown: the scheduler stopped before the run said its number".into(),
                    );
                    self.save(&name, &st, &[record])?;
                }
            }
        }
        Ok(())
    }

    async fn shut_down(mut self, mut stop: watch::Receiver<u32>) -> Result<(), Error> {
        self.stopping = true;
        if self.runs.is_empty() {
            self.say("stopped");
            return Ok(());
        }
        self.say("stopping: nothing new starts; the runs stop at their next checkpoint (send SIGTERM again to stop their running steps now)");
        let mut sent = 0;
        loop {
            let asked = *stop.borrow_and_update();
            while sent < asked.min(2) {
                if sent == 1 {
                    // Two signals sent at once may arrive as one.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    self.say("stopping the runs' running steps now");
                }
                self.runs.terminate_all();
                sent += 1;
            }
            if self.runs.is_empty() {
                break;
            }
            tokio::select! {
                Some(event) = self.runs.rx.recv() => self.on_event(event)?,
                _ = stop.changed() => {}
            }
        }
        self.say("stopped");
        Ok(())
    }
}

/// Whether `pid` is a runbook process on this state directory (not
/// another program that got the number after the run's process died).
fn drives(pid: u32, dir: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let wanted = dir.as_os_str().as_encoded_bytes();
    alive(pid) && cmdline.split(|b| *b == 0).any(|arg| arg == wanted)
}

/// How the run ended, or `None` while it has not.
fn run_outcome(state: &Path, run: u64) -> Result<Option<Outcome>, String> {
    let store = SledStore::open(&state.join("journal")).map_err(|e| e.to_string())?;
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

/// `runbook serve DIR`, on the system clock, until SIGTERM or Ctrl-C.
pub fn run(dir: &Path, state: &Path) -> Result<u8, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Run(format!("cannot start the scheduler: {e}")))?;
    let exe = std::env::current_exe().map_err(|e| {
        Error::Run(format!(
            "cannot find the runbook binary to start runs with: {e}"
        ))
    })?;
    let log: Log = Arc::new(|line: &str| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    });
    let cfg = ServeConfig {
        dir: dir.to_path_buf(),
        state: state.to_path_buf(),
        exe,
        tick: Duration::from_millis(500),
        log,
    };
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let fail = |e: std::io::Error| Error::Run(format!("cannot start the scheduler: {e}"));
        let mut term = signal(SignalKind::terminate()).map_err(fail)?;
        let mut int = signal(SignalKind::interrupt()).map_err(fail)?;
        let (tx, rx) = watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tx.send_modify(|n| *n += 1);
            }
        });
        serve(cfg, Arc::new(SystemClock), rx).await
    })?;
    Ok(super::EXIT_OK)
}
