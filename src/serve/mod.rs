//! The server behind `runbook serve DIR`: starts the directory's scheduled runbooks at their
//! times, for as long as it runs. Each check asks `scheduler::tick` what to
//! do for each runbook, records that in the scheduler's store (flushed)
//! before doing it, and does it: starts `runbook run` processes, asks runs
//! to cancel. The clock is a parameter, so tests move time as they like.

mod ends;
mod overview;
mod runs;
mod scheduled;

use crate::error::Error;
use crate::scheduler::{ms, short_time, tick, Action, EntryState, Ms, Record, What};
use crate::store::{locks, open_schedules, ScheduleStore};
use chrono::{DateTime, Utc};
pub use overview::{overview, Overview, Scheduled};
use runs::Runs;
pub use runs::{state_of, Log};
pub use scheduled::Loader;
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
    /// Whether step programs of the runs submitted to it are contained in
    /// cgroups where runbook may make them.
    pub contain: bool,
}

struct Serve {
    clock: Arc<dyn SchedClock>,
    store: Box<dyn ScheduleStore>,
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
    /// The state directory's own store, held and served: runs submitted
    /// from other terminals run here. `None` while another process holds
    /// it (a run started by hand before the server): tried again each
    /// check, and said once.
    serving: Option<crate::session::Serving>,
    contain: bool,
    /// Why the store is not held, as last said.
    unheld: Option<String>,
    /// What cannot be scheduled, as last kept.
    problems: Vec<String>,
}

/// What `runbook schedule` reads while a scheduler holds its store.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Live {
    pub pid: u32,
    pub history: BTreeMap<String, Vec<Record>>,
    /// The runbooks the server cannot schedule, each with why, as it sees
    /// them (with its environment): `runbook schedule` shows them.
    #[serde(default)]
    pub problems: Vec<String>,
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
    // One spelling of the state directory: a run's process is recognised
    // by it on its command line after a restart.
    let state = crate::store::private::make_dir(&cfg.state)
        .and_then(|()| std::fs::canonicalize(&cfg.state))
        .map_err(|e| {
            Error::Store(format!(
                "cannot use the state directory {}: {}; choose another with --state DIR",
                cfg.state.display(),
                crate::error::io_reason(&e)
            ))
        })?;
    let cfg = ServeConfig { state, ..cfg };
    let store = open_store(&cfg.state.join("scheduler"))?;
    let mut loader = Loader::new(&cfg.dir, true);
    let said = loader.refresh().map_err(Error::Usage)?;
    let lock_dir = locks::lock_dir(&cfg.state);
    let runs = Runs::new(
        cfg.exe.clone(),
        cfg.state.clone(),
        lock_dir.clone(),
        Arc::clone(&cfg.log),
        cfg.tick,
    );
    let (entries, damaged) = store.entries().map_err(Error::Store)?;
    let states: BTreeMap<String, EntryState> = entries.into_iter().collect();
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
        serving: None,
        contain: cfg.contain,
        unheld: None,
        problems: Vec::new(),
    };
    for line in said.iter().chain(&damaged) {
        s.say(line);
    }
    // The socket is served before the server says it serves: a command
    // that reads that line finds it answering.
    s.hold();
    s.note_problems();
    let cannot = match s.loader.problems.len() {
        0 => String::new(),
        1 => "; 1 file cannot be scheduled (said above; `runbook health` and `runbook schedule` list it)".into(),
        n => format!("; {n} files cannot be scheduled (said above; `runbook health` and `runbook schedule` list them)"),
    };
    s.say(&format!(
        "serving {} scheduled runbooks from {} (state {}){cannot}",
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
            // A closed channel means nobody can stop it any more: stop.
            changed = stop.changed() => if changed.is_err() { break },
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

    fn cancel(&self, name: &str, run: u64) {
        if let Err(why) = self.runs.cancel(name, run) {
            self.say(&format!("{name}: {why}"));
        }
    }

    /// Holds the state directory's store and serves its socket, once no
    /// other process holds it.
    fn hold(&mut self) {
        if self.serving.is_some() || self.stopping {
            return;
        }
        match crate::session::Serving::hold(&self.state, self.contain) {
            Ok(serving) => {
                self.serving = Some(serving);
                if self.unheld.take().is_some() {
                    self.say("now serving the state directory's store: runs started here by hand run in this server");
                }
            }
            Err(e) => {
                let why = e.to_string();
                if self.unheld.as_ref() != Some(&why) {
                    self.say(&format!(
                        "runs started by hand in this state directory do not run in this server while {why}"
                    ));
                    self.unheld = Some(why);
                }
            }
        }
    }

    /// One check: reload what changed, then each runbook's due fires.
    fn check(&mut self) -> Result<(), Error> {
        self.hold();
        match self.loader.refresh() {
            Ok(said) => said.iter().for_each(|line| self.say(line)),
            Err(why) => self.say(&why),
        }
        self.note_problems();
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
            let mut cancels = Vec::new();
            for action in actions {
                match action {
                    Action::Record(r) => records.push(r),
                    Action::Start { fire, cutoff, .. } => {
                        if let Some(active) = &mut st.active {
                            active.started_at = Some(Utc::now().timestamp_millis());
                        }
                        starts.push((fire, cutoff));
                    }
                    Action::Cancel { run: Some(run), .. } => cancels.push(run),
                    // Not known yet: asked once the run says its number.
                    Action::Cancel { run: None, .. } => {}
                }
            }
            // What was decided is durable before it is done.
            if st != before || !records.is_empty() {
                self.save(&entry.name, &st, &records)?;
            }
            for run in cancels {
                self.cancel(&entry.name, run);
            }
            for (fire, cutoff) in starts {
                self.start(&entry, &mut st, fire, cutoff)?;
            }
            self.resume_if_unblocked(&entry.name, &entry.locks)?;
        }
        Ok(())
    }

    fn start(
        &mut self,
        entry: &crate::scheduler::Entry,
        st: &mut EntryState,
        fire: Ms,
        cutoff: Option<Ms>,
    ) -> Result<(), Error> {
        // The run's own clock is the real one: give it the window's close
        // as the time left from now.
        let until = cutoff.map(|c| {
            let left = chrono::Duration::milliseconds(c - self.now());
            let at = (Utc::now() + left).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            (at, format!("its window closed at {}", short_time(c)))
        });
        let started = self
            .runs
            .start(&entry.name, &entry.file, &entry.source, until);
        let record = match started {
            Ok((pid, last_good)) => {
                let mut catch_up = false;
                if let Some(active) = &mut st.active {
                    active.pid = Some(pid);
                    catch_up = active.catch_up;
                }
                if let Some(copy) = last_good {
                    self.say(&format!(
                        "{}: {} no longer checks; running its last good version, kept in {}",
                        entry.name,
                        entry.file.display(),
                        copy.display()
                    ));
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
        self.store.save(name, st, records).map_err(Error::Store)?;
        self.states.insert(name.to_string(), st.clone());
        for r in records {
            self.say(&format!("{name}: {}", r.sentence()));
        }
        if !records.is_empty() {
            let recent = self.recent.entry(name.to_string()).or_default();
            recent.extend(records.iter().cloned());
            let extra = recent.len().saturating_sub(RECENT);
            recent.drain(..extra);
            self.write_live();
        }
        Ok(())
    }

    /// `STATE/scheduler.json`, for `runbook schedule` while this server
    /// holds the scheduler's store: recent history and what it cannot
    /// schedule.
    fn write_live(&self) {
        let live = Live {
            pid: std::process::id(),
            history: self.recent.clone(),
            problems: self.problems.clone(),
        };
        let written = serde_json::to_vec_pretty(&live)
            .map_err(std::io::Error::other)
            .and_then(|body| crate::store::private::write_whole(&self.state, LIVE_FILE, &body));
        if let Err(e) = written {
            self.say(&format!(
                "cannot write {}: {e}",
                self.state.join(LIVE_FILE).display()
            ));
        }
    }

    /// What cannot be scheduled, as the loader says, kept for the health
    /// answer and `runbook schedule` whenever it changes.
    fn note_problems(&mut self) {
        let now: Vec<String> = self.loader.problems.values().cloned().collect();
        if let Some(serving) = &self.serving {
            serving.set_problems(self.loader.entries().len(), now.clone());
        }
        if now != self.problems {
            self.problems = now;
            self.write_live();
        }
    }

    fn finished(&self, fire: Ms, run: Option<u64>, outcome: String) -> Record {
        Record {
            at: self.now(),
            fire: Some(fire),
            what: What::Finished { run, outcome },
        }
    }

    async fn shut_down(mut self, mut stop: watch::Receiver<u32>) -> Result<(), Error> {
        self.stopping = true;
        if let Some(serving) = &self.serving {
            serving.stop_runs(false);
        }
        let submitted = self
            .serving
            .as_ref()
            .map(|s| s.live_runs())
            .unwrap_or_default();
        if self.runs.is_empty() && submitted.is_empty() {
            if let Some(mut serving) = self.serving.take() {
                serving.idle().await;
                serving.finish().await;
            }
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
                if let (1, Some(serving)) = (sent, &self.serving) {
                    serving.stop_runs(true);
                }
                sent += 1;
            }
            if self.runs.is_empty() {
                break;
            }
            tokio::select! {
                Some(event) = self.runs.rx.recv() => self.on_event(event)?,
                // Closed: nobody can ask for more; wait for the runs.
                changed = stop.changed(), if sent < 2 => if changed.is_err() { sent = 2 },
            }
        }
        // The runs submitted to this server, stopped the same way.
        if let Some(mut serving) = self.serving.take() {
            loop {
                tokio::select! {
                    () = serving.idle() => break,
                    changed = stop.changed(), if sent < 2 => match changed {
                        Ok(()) if *stop.borrow_and_update() >= 2 => {
                            sent = 2;
                            self.say("stopping the runs' running steps now");
                            serving.stop_runs(true);
                        }
                        Ok(()) => {}
                        Err(_) => sent = 2,
                    },
                }
            }
            serving.finish().await;
        }
        self.say("stopped");
        Ok(())
    }
}

/// Opens the scheduler's store, waiting a moment for a `runbook schedule`
/// that reads it.
fn open_store(path: &Path) -> Result<Box<dyn ScheduleStore>, Error> {
    let start = std::time::Instant::now();
    loop {
        match open_schedules(path) {
            Err(why) if why.contains("in use") && start.elapsed() < Duration::from_secs(2) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other.map_err(Error::Store),
        }
    }
}
