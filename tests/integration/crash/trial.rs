//! One SIGKILL trial, from the first run to the end, and its figures.

use super::disrupt::Disruption;
use super::fixture::{resume_args, Fixture};
use super::look::{count, read_ledger, status, Entry, RunStatus};
use super::proc::{copy_dir, settle, step_processes, Ended, Proc};
use super::rng::Rng;
use super::{ASKS, CONTINUE};
use crate::common::{root, scratch};
use std::collections::BTreeSet;
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Killed resumes per trial at most, so that every trial ends.
const KILLED_RESUMES: usize = 8;
const ROUNDS: usize = 60;

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) trials: usize,
    pub(crate) processes: usize,
    pub(crate) kills: usize,
    /// The process had finished before the kill came.
    pub(crate) missed: usize,
    pub(crate) kills_of_resumes: usize,
    /// Kills after which the journal showed a step interrupted.
    pub(crate) with_interrupted: usize,
    /// Kills when no step process was alive: runbook was starting, deciding
    /// or writing its journal.
    pub(crate) no_step_alive: usize,
    /// Kills between a step's end and the record of its success.
    pub(crate) ended_unrecorded: usize,
    /// Kills between the record of a start and the step's first line.
    pub(crate) started_not_begun: usize,
    /// Kills before run 1 was created.
    pub(crate) before_created: usize,
    /// Fresh stores a kill left unusable (the known bug).
    pub(crate) orphans_killed: usize,
    pub(crate) orphans_left_to_end: usize,
    /// Left running for the next process, which had to find them.
    pub(crate) orphans_left_running: usize,
    /// Resumes that refused because a killed run's program still ran.
    pub(crate) refused_while_running: usize,
    pub(crate) ctrl_c: usize,
    pub(crate) ctrl_c_twice: usize,
    pub(crate) stops: usize,
    pub(crate) resumes: usize,
    /// Resumes that refused and named interrupted `ask` steps.
    pub(crate) asked: usize,
    pub(crate) chose_done: usize,
    pub(crate) chose_rerun: usize,
    /// Steps run again after an interruption, by themselves or on --rerun.
    pub(crate) reran_by_themselves: usize,
    pub(crate) reran_on_request: usize,
    pub(crate) slowest_status: Duration,
}

impl Stats {
    pub(crate) fn add(&mut self, other: &Stats) {
        self.trials += other.trials;
        self.processes += other.processes;
        self.kills += other.kills;
        self.missed += other.missed;
        self.kills_of_resumes += other.kills_of_resumes;
        self.with_interrupted += other.with_interrupted;
        self.no_step_alive += other.no_step_alive;
        self.ended_unrecorded += other.ended_unrecorded;
        self.started_not_begun += other.started_not_begun;
        self.before_created += other.before_created;
        self.orphans_killed += other.orphans_killed;
        self.orphans_left_to_end += other.orphans_left_to_end;
        self.orphans_left_running += other.orphans_left_running;
        self.refused_while_running += other.refused_while_running;
        self.ctrl_c += other.ctrl_c;
        self.ctrl_c_twice += other.ctrl_c_twice;
        self.stops += other.stops;
        self.resumes += other.resumes;
        self.asked += other.asked;
        self.chose_done += other.chose_done;
        self.chose_rerun += other.chose_rerun;
        self.reran_by_themselves += other.reran_by_themselves;
        self.reran_on_request += other.reran_on_request;
        self.slowest_status = self.slowest_status.max(other.slowest_status);
    }
}

/// What the harness knows about the last process that drove the run.
#[derive(Default)]
struct Last {
    killed: bool,
    alive: BTreeSet<i32>,
    finished: bool,
    rerun: BTreeSet<String>,
    done: BTreeSet<String>,
}

struct Snapshot {
    status: RunStatus,
    ledger: Vec<Entry>,
}

/// What `status` found.
enum Look {
    Run(Snapshot),
    /// No run 1 yet: the kill came before it was recorded.
    NoRun,
}

struct Trial<'a> {
    fx: &'a Fixture,
    seed: u64,
    index: usize,
    dir: PathBuf,
    state: PathBuf,
    ledger: PathBuf,
    marker: String,
    log: Vec<String>,
    procs: usize,
    /// The widened trials: every kind of disruption, and step programs a
    /// SIGKILL left sometimes still alive when the next process starts.
    widened: bool,
    /// Step programs of the last kill were left running for the next process.
    left_alive: bool,
}

impl Trial<'_> {
    fn fail(&self, why: impl Display) -> ! {
        panic!(
            "crash trial {}: {why}\nrepeat it with RUNBOOK_CRASH_SEED={} RUNBOOK_CRASH_ONLY={}; its files are kept in {} (journal-as-killed: the journal as the last kill left it)\nwhat happened:\n  {}",
            self.index,
            self.seed,
            self.index,
            self.dir.display(),
            self.log.join("\n  ")
        )
    }

    fn note(&mut self, text: String) {
        self.log.push(text);
    }

    fn spawn(&mut self, args: &[String], stats: &mut Stats) -> Proc {
        self.procs += 1;
        stats.processes += 1;
        let tag = format!("p{:02}", self.procs);
        if self.fx.served {
            Proc::served(&self.dir, &tag, args, &self.state)
        } else {
            Proc::spawn(&self.dir, &tag, args)
        }
    }

    /// Runs a process, disrupted as `how` says; after a kill, settles its
    /// steps' processes: killed, left to end, or (widened) left running for
    /// the next process to find.
    fn drive(
        &mut self,
        args: &[String],
        how: Disruption,
        rng: &mut Rng,
        stats: &mut Stats,
    ) -> Ended {
        let proc = self.spawn(args, stats);
        let ended = how.apply(proc, &self.marker);
        let shown = args[2..].join(" ");
        match how {
            Disruption::None => self.note(format!("{shown}: {}", ended.describe())),
            how => self.note(format!("{shown} ({how:?}): {}", ended.describe())),
        }
        let left_before = std::mem::take(&mut self.left_alive);
        if left_before {
            // The programs left running were this process's to find; now
            // they may end.
            if let Err(e) = settle(&self.marker, false) {
                self.fail(e);
            }
        }
        match how {
            Disruption::CtrlC(_) => stats.ctrl_c += 1,
            Disruption::CtrlCTwice(..) => stats.ctrl_c_twice += 1,
            Disruption::Stop(..) => stats.stops += 1,
            _ => {}
        }
        if matches!(how, Disruption::CtrlCTwice(..)) && ended.code() == Some(130) && !left_before {
            let alive = step_processes(&self.marker);
            if !alive.is_empty() {
                self.fail(format!(
                    "after a second Ctrl-C, runbook exited while programs it killed were alive: {alive:?}"
                ));
            }
        }
        if ended.killed() {
            stats.kills += 1;
            if ended.alive.is_empty() {
                stats.no_step_alive += 1;
            }
            let choice = if self.widened {
                rng.below(3)
            } else {
                rng.below(2)
            };
            if !ended.alive.is_empty() {
                match choice {
                    0 => stats.orphans_killed += 1,
                    1 => stats.orphans_left_to_end += 1,
                    _ => stats.orphans_left_running += 1,
                }
                self.note(format!(
                    "  steps alive at the kill: {:?}; {}",
                    ended.alive,
                    ["killed", "left to end", "left running for the next process"][choice as usize]
                ));
            }
            if choice == 2 && !ended.alive.is_empty() {
                self.left_alive = true;
            } else if let Err(e) = settle(&self.marker, choice == 0) {
                self.fail(e);
            }
            // For the record if something fails: the journal as the kill
            // left it, before the next process opens (and recovers) it.
            let kept = self.dir.join("journal-as-killed");
            let _ = std::fs::remove_dir_all(&kept);
            copy_dir(&self.state.join("journal"), &kept);
        } else if how.stops() && ended.code() == Some(0) {
            stats.missed += 1;
        }
        ended
    }

    fn snapshot(&mut self, stats: &mut Stats, _prev: Option<&Snapshot>) -> Look {
        let began = Instant::now();
        let status = match status(&self.state) {
            Ok(s) => s,
            Err(e) => self.fail(format!("the journal does not read back: {e}")),
        };
        stats.slowest_status = stats.slowest_status.max(began.elapsed());
        let ledger = match read_ledger(&self.ledger) {
            Ok(l) => l,
            Err(e) => self.fail(e),
        };
        let Some(status) = status else {
            return Look::NoRun;
        };
        let shown: Vec<String> = status
            .steps
            .iter()
            .filter(|s| s.state != "pending")
            .map(|s| format!("{}={}", s.name, s.state))
            .collect();
        self.note(format!(
            "status: {}; {}; ledger {} lines",
            status.state,
            shown.join(" "),
            ledger.len()
        ));
        Look::Run(Snapshot { status, ledger })
    }

    /// Everything that must hold between the last snapshot and this one.
    fn check(&self, prev: Option<&Snapshot>, now: &Snapshot, last: &Last) {
        let was = |step: &str| prev.map_or("pending", |p| p.status.state_of(step));
        let from = prev.map_or(0, |p| p.ledger.len());
        if now.ledger.len() < from || prev.is_some_and(|p| now.ledger[..from] != p.ledger[..]) {
            self.fail("the ledger lost lines");
        }
        let segment = &now.ledger[from..];
        if !matches!(
            now.status.state.as_str(),
            "succeeded" | "stopped (not finished)"
        ) {
            self.fail(format!("the run is {:?}", now.status.state));
        }
        for s in &now.status.steps {
            let info = self.fx.step(&s.name);
            let allowed = match s.state.as_str() {
                "pending" | "interrupted" | "succeeded" => true,
                "skipped" => info.skipped,
                // A step whose first attempt failed, killed before its next.
                "waiting to retry" => s.name.ends_with("_rt"),
                _ => false,
            };
            if !allowed {
                self.fail(format!("{} is {:?}", s.name, s.state));
            }
            let before = was(&s.name);
            if before == "succeeded" && s.state != "succeeded" {
                self.fail(format!(
                    "{} was recorded as succeeded and is now {:?}: the journal lost it",
                    s.name, s.state
                ));
            }
        }
        for e in segment {
            if was(&e.step) == "succeeded" {
                self.fail(format!(
                    "{} ran again (ledger: {e:?}) after its success was recorded",
                    e.step
                ));
            }
        }
        for info in self.fx.steps.iter().filter(|s| s.ledger) {
            let name = info.name.as_str();
            let starts = count(segment, name, false);
            let ends = count(segment, name, true);
            let before = was(name);
            let state = now.status.state_of(name);
            if starts > 1 {
                self.fail(format!("{name} started {starts} times in one process"));
            }
            if starts == 1 {
                let allowed = before == "pending"
                    || before == "waiting to retry"
                    || (before == "interrupted" && (info.rerun_safe || last.rerun.contains(name)));
                if !allowed {
                    self.fail(format!(
                        "{name} started again though it was {before:?} (rerun-safe: {}, --rerun given: {})",
                        info.rerun_safe,
                        last.rerun.contains(name)
                    ));
                }
            }
            if state == "pending" && count(&now.ledger, name, false) > 0 {
                self.fail(format!(
                    "{name} ran but the journal calls it pending: its start was not recorded first"
                ));
            }
            if state == "succeeded"
                && before != "succeeded"
                && !last.done.contains(name)
                && ends == 0
            {
                self.fail(format!(
                    "{name} was recorded as succeeded without running to its end in that process"
                ));
            }
            if state == "succeeded" && count(&now.ledger, name, true) == 0 {
                self.fail(format!("{name} succeeded but never ran to its end"));
            }
            if last.finished
                && before == "interrupted"
                && (info.rerun_safe || last.rerun.contains(name))
                && starts == 0
            {
                self.fail(format!(
                    "{name} was interrupted and rerun-safe (or --rerun), yet the resume that finished the run did not start it"
                ));
            }
        }
    }

    /// Sorts a kill by what it interrupted, from the snapshot after it.
    fn classify(&self, prev: Option<&Snapshot>, now: &Snapshot, last: &Last, stats: &mut Stats) {
        let interrupted = now.status.in_state("interrupted");
        if interrupted.is_empty() {
            return;
        }
        stats.with_interrupted += 1;
        let from = prev.map_or(0, |p| p.ledger.len());
        let segment = &now.ledger[from..];
        let mut ended_unrecorded = false;
        let mut not_begun = false;
        for name in interrupted
            .iter()
            .filter(|n| self.fx.step(n).ledger && !last.done.contains(*n))
        {
            let start = segment.iter().rfind(|e| e.step == *name && !e.end);
            match start {
                None => not_begun = true,
                Some(s) => {
                    let ended = segment
                        .iter()
                        .any(|e| e.step == *name && e.end && e.pid == s.pid);
                    if ended && !last.alive.contains(&s.pid) {
                        ended_unrecorded = true;
                    }
                }
            }
        }
        stats.ended_unrecorded += usize::from(ended_unrecorded);
        stats.started_not_begun += usize::from(not_begun);
    }
}

/// Tells the other workers to stop taking trials when one fails.
pub(crate) struct Failed<'a>(pub(crate) &'a AtomicBool);

impl Drop for Failed<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// How long a resume may take: from its start to about its end, which
/// comes sooner the more steps already succeeded.
fn resume_span(fx: &Fixture, now: &RunStatus) -> Duration {
    let left = now.steps.len() - now.in_state("succeeded").len();
    let work = fx.full.saturating_sub(fx.startup) * left as u32 / now.steps.len() as u32;
    fx.startup + work
}

/// How to disrupt the next process: a SIGKILL within `span` for the
/// SIGKILL trials, anything for the widened ones.
fn disruption(widened: bool, rng: &mut Rng, span: Duration) -> Disruption {
    if widened {
        Disruption::pick(rng, span)
    } else {
        Disruption::Kill(rng.up_to(span))
    }
}

/// Removes what the runbook's steps keep between attempts.
fn reset(fx: &Fixture) {
    if let Some(dir) = &fx.scratch {
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::create_dir_all(dir);
    }
}

pub(crate) fn trial(fx: &Fixture, seed: u64, index: usize, stats: &mut Stats, widened: bool) {
    let mut rng = Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let rng = &mut rng;
    let kind = match (fx.served, widened) {
        (true, _) => "served",
        (false, true) => "shape",
        (false, false) => "trial",
    };
    let dir = root().join(format!("target/test-scratch/crash-{kind}-{index}"));
    // A test run that was itself killed may have left processes of this
    // trial behind (stopped ones too): they would look like this trial's.
    if let Err(e) = settle(&format!("{}/", dir.display()), true) {
        panic!("crash trial {index}: leftovers of an earlier test run: {e}");
    }
    let dir = scratch(&format!("crash-{kind}-{index}"));
    let mut t = Trial {
        fx,
        seed,
        index,
        state: dir.join("state"),
        ledger: dir.join("ledger"),
        marker: format!("{}/", dir.display()),
        dir,
        log: Vec::new(),
        procs: 0,
        widened,
        left_alive: false,
    };
    if widened {
        t.note(format!(
            "the runbook: {}\n{}",
            fx.file.display(),
            std::fs::read_to_string(&fx.file).unwrap_or_default()
        ));
    }
    let run = fx.run_args(&t.state, &t.ledger);

    // A run, disrupted at a random moment; when it finishes first, a fresh
    // one is disrupted within the time that one took, until one lands.
    let mut limit = fx.full;
    let mut first = loop {
        let _ = std::fs::remove_dir_all(&t.state);
        let _ = std::fs::remove_file(&t.ledger);
        reset(fx);
        let ended = t.drive(&run, disruption(widened, rng, limit), rng, stats);
        if ended.killed() || ended.interrupted() {
            break ended;
        }
        if ended.code() != Some(0) || !ended.stdout.contains("run 1 succeeded") {
            t.fail("an uninterrupted run did not succeed");
        }
        limit = limit.min(ended.elapsed);
    };

    let mut prev: Option<Snapshot> = None;
    let mut last = Last {
        killed: true,
        alive: first.alive.clone(),
        ..Last::default()
    };
    let mut killed_resumes = 0;
    for round in 0.. {
        if round == ROUNDS {
            t.fail(format!("the run did not finish in {ROUNDS} rounds"));
        }
        let now = match t.snapshot(stats, prev.as_ref()) {
            Look::Run(now) => Some(now),
            Look::NoRun => None,
        };
        let Some(now) = now else {
            // Killed before run 1 was recorded: start it again, as a person would.
            if prev.is_some() {
                t.fail("run 1 is gone from the journal");
            }
            if first.stdout.contains("run 1:") {
                t.fail("runbook said `run 1` but the journal has no run 1");
            }
            if !read_ledger(&t.ledger).unwrap_or_default().is_empty() {
                t.fail("steps ran before the run was recorded");
            }
            stats.before_created += 1;
            let how = if rng.one_in(2) {
                disruption(widened, rng, fx.full)
            } else {
                Disruption::None
            };
            first = t.drive(&run, how, rng, stats);
            last = Last {
                killed: first.killed(),
                alive: first.alive.clone(),
                finished: first.code() == Some(0),
                ..Last::default()
            };
            continue;
        };
        if let Some(line) = first.stdout.lines().next() {
            if !line.starts_with(&format!("run 1: {} (", fx.name)) || !line.ends_with(CONTINUE) {
                t.fail(format!("the first line is {line:?}"));
            }
        }
        t.check(prev.as_ref(), &now, &last);
        if last.killed {
            t.classify(prev.as_ref(), &now, &last, stats);
        }
        if now.status.state == "succeeded" {
            prev = Some(now);
            break;
        }

        // Programs of the last kill still run: a resume now must find them
        // and refuse, or find they have just ended.
        if t.left_alive {
            stats.resumes += 1;
            let ended = t.drive(&resume_args(&t.state, &[]), Disruption::None, rng, stats);
            let said = &ended.stderr;
            let refused = ended.code() == Some(1)
                && (said.contains("are still running") || said.contains(ASKS));
            if refused && said.contains("are still running") {
                stats.refused_while_running += 1;
            }
            if !refused && ended.code() != Some(0) {
                t.fail(format!(
                    "a resume beside a killed run's programs: {}",
                    ended.describe()
                ));
            }
            last = Last {
                killed: false,
                finished: ended.code() == Some(0),
                ..Last::default()
            };
            prev = Some(now);
            continue;
        }

        // Resume as a person would: plainly first; if it asks, read the ledger.
        let interrupted = now.status.in_state("interrupted");
        let asking: BTreeSet<String> = interrupted
            .iter()
            .filter(|n| !fx.step(n).rerun_safe)
            .cloned()
            .collect();
        let mut how = if killed_resumes < KILLED_RESUMES && rng.one_in(2) {
            killed_resumes += 1;
            disruption(widened, rng, resume_span(fx, &now.status))
        } else {
            Disruption::None
        };
        let mut choices: Vec<(String, &str)> = Vec::new();
        if !asking.is_empty() {
            stats.resumes += 1;
            let ended = t.drive(&resume_args(&t.state, &[]), Disruption::None, rng, stats);
            let said = ended.stderr.clone();
            if ended.code() != Some(1) || !said.contains(ASKS) {
                t.fail(format!(
                    "resume did not ask about the interrupted steps {asking:?}: {}",
                    ended.describe()
                ));
            }
            stats.asked += 1;
            let named = said
                .split("may have done part of their work: ")
                .nth(1)
                .and_then(|rest| rest.split(". Check").next())
                .unwrap_or_default();
            let named: BTreeSet<String> = named.split(", ").map(str::to_string).collect();
            if named != asking {
                t.fail(format!(
                    "resume named {named:?}, but the interrupted steps that ask are {asking:?}"
                ));
            }
            match (status(&t.state), read_ledger(&t.ledger)) {
                (Ok(Some(s)), Ok(l)) if s == now.status && l == now.ledger => {}
                (s, l) => t.fail(format!(
                    "a resume that asked changed the run: before {:?} and {:?}; after {s:?} and {l:?}",
                    now.status, now.ledger
                )),
            }
            for name in &asking {
                let ended_once = count(&now.ledger, name, true) > 0;
                let choice = if ended_once { "done" } else { "rerun" };
                if ended_once {
                    stats.chose_done += 1;
                } else {
                    stats.chose_rerun += 1;
                }
                choices.push((name.clone(), choice));
            }
        } else if !how.stops() && rng.one_in(4) {
            // Sometimes kill a resume around its first writes.
            how = Disruption::Kill(fx.startup / 2 + rng.up_to(fx.startup / 2 + fx.full / 8));
        }
        stats.resumes += 1;
        let ended = t.drive(&resume_args(&t.state, &choices), how, rng, stats);
        let stopped_by_ctrl_c =
            ended.interrupted() && matches!(how, Disruption::CtrlC(_) | Disruption::CtrlCTwice(..));
        if ended.killed() {
            stats.kills_of_resumes += 1;
        } else if stopped_by_ctrl_c {
        } else if ended.code() != Some(0) || !ended.stdout.contains("run 1 succeeded") {
            t.fail(format!(
                "resume did not finish the run: {}",
                ended.describe()
            ));
        }
        last = Last {
            killed: ended.killed(),
            alive: ended.alive.clone(),
            finished: ended.code() == Some(0),
            rerun: choices
                .iter()
                .filter(|(_, c)| *c == "rerun")
                .map(|(n, _)| n.clone())
                .collect(),
            done: choices
                .iter()
                .filter(|(_, c)| *c == "done")
                .map(|(n, _)| n.clone())
                .collect(),
        };
        prev = Some(now);
    }

    // The end: every step succeeded, each did its work, nothing left to resume.
    let end = prev.expect("a last snapshot");
    for info in &fx.steps {
        let want = if info.skipped { "skipped" } else { "succeeded" };
        if end.status.state_of(&info.name) != want {
            t.fail(format!(
                "the run succeeded with {} {:?}",
                info.name,
                end.status.state_of(&info.name)
            ));
        }
    }
    for info in fx.steps.iter().filter(|s| s.ledger && !s.skipped) {
        let starts = count(&end.ledger, &info.name, false);
        if starts == 0 || count(&end.ledger, &info.name, true) == 0 {
            t.fail(format!("{} never ran to its end", info.name));
        }
        let last_line = end.ledger.iter().rfind(|e| e.step == info.name);
        if !last_line.is_some_and(|e| e.end) {
            t.fail(format!("{}'s last attempt did not end", info.name));
        }
        if info.rerun_safe {
            stats.reran_by_themselves += starts - 1;
        } else {
            stats.reran_on_request += starts - 1;
        }
    }
    if index % 4 == 0 {
        let again = t.drive(&resume_args(&t.state, &[]), Disruption::None, rng, stats);
        if again.code() != Some(1) || !again.stderr.contains("has already finished") {
            t.fail(format!("resuming a finished run: {}", again.describe()));
        }
    }
    stats.trials += 1;
    let _ = std::fs::remove_dir_all(&t.dir);
}
