//! Where the process group of every running program is noted, so that a
//! `resume` or `cancel` after runbook was killed sees a program it left
//! running (a SIGKILL of runbook does not reach its programs).
//!
//! One file per run, `STATE/running/RUN`, of fixed-size slots. Before a
//! program starts, its slot is reserved: runbook writes `~PGID SINCE STEP`
//! there (its own process group, and when). The new process then writes
//! its pid over `~PGID`, as the first thing it does, before it runs the
//! program (`spawn.rs`). So a program never runs without a note, whenever
//! runbook is killed; a slot still saying `~` is a program that was being
//! started, which `resume` looks for among the processes still in that
//! group that have not called exec yet. When the program has ended and its
//! group is gone, the slot is blanked.
//!
//! Where this process may make cgroups (`contain.rs`), each slot also has
//! a cgroup, which the new process joins right after writing its note: a
//! program is then running while its cgroup holds a process, whatever
//! process group those processes moved to.
//!
//! Written without fsync: a note only has to outlive this process, not the
//! machine, since a reboot ends the program too. The page cache holds it
//! for a process that is killed.

use super::contain::{self, Cgroup, Cgroups, Joining};
use super::procs::{me, members_alive, proc_stat, real_uid, starting_clone, Stat};
use super::spawn::{self, NoteSlot, NOTE, PID_AND_START};
use crate::engine::RunId;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Longest step name kept as it is; a longer one is noted by its hash.
const LONGEST_NAME: usize = 80;

pub struct GroupNotes {
    dir: PathBuf,
    open: Mutex<HashMap<RunId, RunFile>>,
    /// Where programs are contained, if this process may make cgroups.
    cgroups: Option<Cgroups>,
}

/// The file of one run this process writes, which slots are taken, and
/// the directory of the slots' cgroups.
struct RunFile {
    file: Arc<File>,
    used: Vec<Option<String>>,
    cgroups: Option<PathBuf>,
    /// Each slot's cgroup, made and opened for joining once.
    slot_cgroups: Vec<Option<(Cgroup, Arc<Joining>)>>,
    /// Why the run's programs are not contained, where they should be.
    uncontained: Option<String>,
    left: Vec<Left>,
}

impl RunFile {
    /// Frees the slots of programs whose leftovers are gone now.
    fn free_left(&mut self) {
        let mut blank = [b' '; NOTE];
        blank[NOTE - 1] = b'\n';
        let (gone, left): (Vec<Left>, Vec<Left>) = std::mem::take(&mut self.left)
            .into_iter()
            .partition(Left::gone);
        self.left = left;
        for program in gone {
            if let Some(used) = self.used.get_mut(program.slot) {
                *used = None;
                let _ = self.file.write_all_at(&blank, (program.slot * NOTE) as u64);
            }
        }
    }
}

/// A slot reserved for a program about to start.
pub struct Reserved {
    file: Arc<File>,
    slot: usize,
    text: [u8; NOTE],
    /// The slot's cgroup, opened for the program to start in.
    cgroup: Option<(Cgroup, Arc<Joining>)>,
    /// Why it has none where programs are contained.
    uncontained: Option<String>,
}

impl Reserved {
    /// Which slot it is, to release it once the program has ended.
    pub fn index(&self) -> usize {
        self.slot
    }

    /// The cgroup the program will be in, if it is contained.
    pub fn cgroup(&self) -> Option<Cgroup> {
        self.cgroup.as_ref().map(|(c, _)| c.clone())
    }

    /// Why the program will not be in a cgroup of its own, where this
    /// process contains programs and could not make or open one for it.
    pub fn uncontained(&self) -> Option<&str> {
        self.uncontained.as_deref()
    }

    pub fn slot(&self) -> NoteSlot<'_> {
        NoteSlot {
            file: &self.file,
            offset: (self.slot * NOTE) as u64,
            text: self.text,
            join: self.cgroup.as_ref().map(|(_, joining)| &**joining),
        }
    }
}

/// Where the programs of one step of one run are noted: what a program of
/// the step is started with (`CommandSpec::notes`).
#[derive(Clone)]
pub struct StepNotes {
    notes: Arc<GroupNotes>,
    run: RunId,
    step: String,
}

impl std::fmt::Debug for StepNotes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StepNotes({}, {})", self.run, self.step)
    }
}

impl StepNotes {
    pub fn new(notes: Arc<GroupNotes>, run: RunId, step: &str) -> StepNotes {
        StepNotes {
            notes,
            run,
            step: step.to_string(),
        }
    }

    pub fn reserve(&self) -> Result<Reserved, String> {
        self.notes.reserve(self.run, &self.step)
    }

    /// The program of `reserved` has ended (or never started): its slot is
    /// blanked, unless members of its group (`leader`) or processes in its
    /// cgroup are still alive.
    pub fn release(&self, slot: usize, leader: Option<u32>, cgroup: Option<&Cgroup>) {
        let left = Left {
            slot,
            leader,
            cgroup: cgroup.cloned(),
        };
        if left.gone() {
            self.notes.forget(self.run, slot);
        } else if let Ok(mut open) = self.notes.open.lock() {
            if let Some(notes) = open.get_mut(&self.run) {
                notes.left.push(left);
            }
        }
    }
}

/// A program that ended while processes it started were still alive (or
/// still dying, just killed): its slot is freed once they are gone.
struct Left {
    slot: usize,
    leader: Option<u32>,
    cgroup: Option<Cgroup>,
}

impl Left {
    fn gone(&self) -> bool {
        self.leader
            .is_none_or(|pid| !spawn::group_exists(pid as i32))
            && !self.cgroup.as_ref().is_some_and(Cgroup::populated)
    }
}

/// What a slot says of a step's program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noted {
    /// It runs (or its process group still has members).
    Running(Group),
    /// It was being started when runbook was killed, and a clone of
    /// runbook that has not called exec yet may still become it.
    Starting,
}

impl GroupNotes {
    pub fn new(dir: PathBuf) -> Self {
        GroupNotes {
            dir,
            open: Mutex::new(HashMap::new()),
            cgroups: None,
        }
    }

    /// Contains each program in a cgroup below `cgroups` too, if any.
    pub fn containing(mut self, cgroups: Option<Cgroups>) -> Self {
        self.cgroups = cgroups;
        self
    }

    fn path(&self, run: RunId) -> PathBuf {
        self.dir.join(run.to_string())
    }

    /// Where the directory of a run's cgroups is named.
    fn cgroups_note(&self, run: RunId) -> PathBuf {
        self.dir.join(format!("{run}.cgroup"))
    }

    /// A new directory for the cgroups of `run`'s programs, named in its
    /// note; the one an earlier process named is removed where it is empty
    /// (what is still in it belonged to steps that have finished: a step
    /// whose program was left running is not started again while it runs).
    fn make_cgroups(&self, run: RunId) -> Result<PathBuf, String> {
        // Whether or not this process contains programs: slot N of its
        // notes must never be taken for slot N of an earlier process's.
        let note = self.cgroups_note(run);
        if let Some(earlier) = contain::run_dir_named(&note) {
            contain::tidy(&earlier);
        }
        let _ = std::fs::remove_file(&note);
        let cgroups = self.cgroups.as_ref().ok_or_else(String::new)?;
        let dir = cgroups.make_run_dir(run).map_err(|e| {
            format!(
                "its run's cgroup cannot be made: {}",
                crate::error::io_reason(&e)
            )
        })?;
        // Not synced, as the notes (above): a restart ends the cgroup too.
        let named = crate::store::private::write_view(
            &self.dir,
            &format!("{run}.cgroup"),
            dir.as_os_str().as_encoded_bytes(),
        );
        if let Err(e) = named {
            contain::tidy(&dir);
            return Err(format!(
                "its run's cgroup cannot be noted: {}",
                crate::error::io_reason(&e)
            ));
        }
        Ok(dir)
    }

    /// Reserves a slot for `step`'s program and marks it as being started
    /// by this process. The first reservation of a run in this process
    /// starts the run's file afresh: whatever an earlier process noted was
    /// looked at before this one started anything.
    pub fn reserve(&self, run: RunId, step: &str) -> Result<Reserved, String> {
        let cannot = |e: std::io::Error| {
            format!(
                "its program cannot be noted in {}: {}",
                self.dir.display(),
                crate::error::io_reason(&e)
            )
        };
        let mut open = self
            .open
            .lock()
            .map_err(|_| "the notes of running programs are unusable".to_string())?;
        let notes = match open.entry(run) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => {
                use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(crate::store::private::dir_mode())
                    .create(&self.dir)
                    .map_err(cannot)?;
                // Private, and never written through a link planted there.
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(crate::store::private::file_mode())
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(self.dir.join(run.to_string()))
                    .map_err(cannot)?;
                let (cgroups, uncontained) = match self.make_cgroups(run) {
                    Ok(dir) => (Some(dir), None),
                    Err(why) => (None, Some(why).filter(|w| !w.is_empty())),
                };
                new.insert(RunFile {
                    file: Arc::new(file),
                    used: Vec::new(),
                    cgroups,
                    uncontained,
                    slot_cgroups: Vec::new(),
                    left: Vec::new(),
                })
            }
        };
        if !notes.left.is_empty() {
            notes.free_left();
        }
        let key = key(step);
        let slot = match notes.used.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                notes.used.push(None);
                notes.used.len() - 1
            }
        };
        // `~PGID`: being started by a process of that group (the new
        // process stays in it until its note is written); the time is when
        // the slot was reserved, before the program was started.
        let mut text = [b' '; NOTE];
        let pgid = rustix::process::getpgrp().as_raw_nonzero();
        let head = format!("{:>10} {:>16} ", format!("~{pgid}"), spawn::boot_clock_ms());
        text[..PID_AND_START].copy_from_slice(&head.as_bytes()[..PID_AND_START]);
        let n = key.len().min(NOTE - 1 - PID_AND_START);
        text[PID_AND_START..PID_AND_START + n].copy_from_slice(&key.as_bytes()[..n]);
        text[NOTE - 1] = b'\n';
        let offset = (slot * NOTE) as u64;
        // Written here first, so that the slot's block exists and the new
        // process only overwrites it (it cannot fail for a full disk then).
        notes.file.write_all_at(&text, offset).map_err(cannot)?;
        notes.used[slot] = Some(key);
        // A cgroup that cannot be made or opened leaves the program in its
        // process group alone, as where there are no cgroups.
        if notes.slot_cgroups.len() <= slot {
            notes.slot_cgroups.resize(slot + 1, None);
        }
        let mut uncontained = notes.uncontained.clone();
        if notes.slot_cgroups[slot].is_none() {
            if let Some(dir) = &notes.cgroups {
                let made = Cgroup::make(dir.join(slot.to_string())).and_then(|cgroup| {
                    let joining = cgroup.joining()?;
                    Ok((cgroup, Arc::new(joining)))
                });
                match made {
                    Ok(made) => notes.slot_cgroups[slot] = Some(made),
                    Err(e) => {
                        uncontained = Some(format!(
                            "its cgroup cannot be made: {}",
                            crate::error::io_reason(&e)
                        ))
                    }
                }
            }
        }
        let cgroup = notes.slot_cgroups[slot].clone();
        if let Some((cgroup, _)) = &cgroup {
            // Killed for an earlier program of the slot, and empty since.
            contain::forget_killed(cgroup);
        }
        Ok(Reserved {
            file: Arc::clone(&notes.file),
            slot,
            text,
            cgroup,
            uncontained,
        })
    }

    /// The program noted in `slot` ended and its group is gone: the slot is
    /// blanked, for the next program.
    pub fn forget(&self, run: RunId, slot: usize) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        let Some(notes) = open.get_mut(&run) else {
            return;
        };
        if let Some(used) = notes.used.get_mut(slot) {
            *used = None;
            let mut blank = [b' '; NOTE];
            blank[NOTE - 1] = b'\n';
            let _ = notes.file.write_all_at(&blank, (slot * NOTE) as u64);
        }
    }

    /// A run that has ended (cancelled): its notes, and its cgroups that
    /// are empty, are removed; what an earlier process noted of it has been
    /// looked at and stopped.
    pub fn clear(&self, run: RunId) {
        let _ = std::fs::remove_file(self.path(run));
        self.tidy(run);
    }

    /// Removes the empty cgroups an earlier process made for `run`, and
    /// their note once none is left: for a process that takes the run over
    /// (the run's lock held, so none is being joined), whether or not it
    /// starts a program of its own.
    pub fn tidy(&self, run: RunId) {
        let note = self.cgroups_note(run);
        if let Some(dir) = contain::run_dir_named(&note) {
            contain::tidy(&dir);
            if dir.exists() {
                return;
            }
        }
        let _ = std::fs::remove_file(note);
    }

    /// The program an earlier process left running, or was starting, for
    /// `step`, if any.
    pub fn still_running(&self, run: RunId, step: &str) -> Option<Noted> {
        let key = key(step);
        let mut looked_for_clones = false;
        loop {
            // Private, never through a link, and bounded (a run with
            // 80,000 steps running at once notes 10 MB).
            let bytes = crate::store::private::read(&self.path(run), 64 << 20).ok()?;
            let cgroups = contain::run_dir_named(&self.cgroups_note(run));
            let mut found = None;
            // Slot by slot, by offset: slot N's cgroup is `N`.
            for (slot, note) in bytes.chunks(NOTE).enumerate() {
                let Ok(line) = std::str::from_utf8(note) else {
                    continue;
                };
                match parse(line, &key) {
                    Some(Slot::Program(mut group)) => {
                        group.cgroup = cgroups
                            .as_ref()
                            .map(|dir| Cgroup::at(dir.join(slot.to_string())));
                        if group.alive() {
                            return Some(Noted::Running(group));
                        }
                    }
                    Some(Slot::Starting { pgid, since }) => found = Some((pgid, since)),
                    _ => {}
                }
            }
            let (pgid, since) = found?;
            if looked_for_clones {
                // Still `~` after no clone was left: it never ran.
                return None;
            }
            if starting_clone(pgid, since) {
                return Some(Noted::Starting);
            }
            // A clone may have noted itself and run meanwhile: read again.
            looked_for_clones = true;
        }
    }
}

/// What a line of the notes says, for a step's key.
enum Slot {
    Program(Group),
    Starting { pgid: u32, since: u64 },
}

fn parse(line: &str, key: &str) -> Option<Slot> {
    let mut parts = line.split_whitespace();
    let first = parts.next()?;
    let since = parts.next()?.parse::<u64>().ok()?;
    if parts.next()? != key {
        return None;
    }
    match first.strip_prefix('~') {
        Some(pgid) => Some(Slot::Starting {
            pgid: pgid.parse().ok()?,
            since,
        }),
        None => Some(Slot::Program(Group {
            pid: first.parse().ok()?,
            started: since,
            cgroup: None,
        })),
    }
}

impl Drop for GroupNotes {
    /// A run whose programs have all ended leaves no file behind.
    fn drop(&mut self) {
        let dir = self.dir.clone();
        let Ok(open) = self.open.get_mut() else {
            return;
        };
        for (run, notes) in open.iter_mut() {
            notes.free_left();
            let done = notes.used.iter().all(Option::is_none);
            if done {
                let _ = std::fs::remove_file(dir.join(run.to_string()));
            }
            notes.slot_cgroups.clear();
            if let Some(cgroups) = &notes.cgroups {
                contain::tidy(cgroups);
                if done && !cgroups.exists() {
                    let _ = std::fs::remove_file(dir.join(format!("{run}.cgroup")));
                }
            }
        }
    }
}

/// A step's name, or for a very long one `#` and a hash of it, so that
/// every note fits its slot.
fn key(step: &str) -> String {
    if step.len() <= LONGEST_NAME && !step.contains(char::is_whitespace) {
        return step.to_string();
    }
    // FNV-1a: stable across builds, unlike the standard library's hasher.
    let hash = step.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("#{hash:016x}")
}

/// A process group that may outlive the runbook process that started it:
/// its leader, and when its slot was reserved, just before the leader was
/// started (boot clock), so that a reused pid is not mistaken for it; and
/// the cgroup it was contained in, if it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub pid: u32,
    /// Milliseconds since boot, read just before the program started.
    pub started: u64,
    pub cgroup: Option<Cgroup>,
}

/// How long after its slot was reserved a program may have started: the
/// new process is made at once, unless the machine is starved.
const START_WITHIN_MS: u64 = 10_000;

impl Group {
    /// Whether the program runs: its leader is the process noted (not a
    /// zombie, not a reused pid), or the leader is gone but members of its
    /// group are left (its pid cannot be given to another process while
    /// its group has members).
    pub fn alive(&self) -> bool {
        if self.cgroup.as_ref().is_some_and(Cgroup::populated) {
            return true;
        }
        match proc_stat(self.pid) {
            Some(stat) if self.started_at(&stat) => !stat.zombie || members_alive(self.pid),
            // The pid is another process's now: our group has no members.
            Some(_) => false,
            None => members_alive(self.pid),
        }
    }

    /// Kills the group, if it is the program noted: its leader started
    /// when it was noted and is this user's, or the leader is gone and a
    /// member is this user's. A note never makes runbook signal a process
    /// of another user (root could), nor one started at another time. Its
    /// cgroup, if it has one of this user's, is killed whole.
    pub fn kill(&self) {
        if let Some(cgroup) = self.cgroup.as_ref().filter(|c| c.ours()) {
            cgroup.kill();
        }
        let leader = proc_stat(self.pid).map(|s| (s, real_uid(self.pid)));
        let ours = match &leader {
            Some((stat, uid)) => self.started_at(stat) && *uid == Some(me()),
            None => super::procs::all_pids().any(|pid| {
                proc_stat(pid).is_some_and(|s| s.pgrp == i64::from(self.pid) && !s.zombie)
                    && real_uid(pid) == Some(me())
            }),
        };
        if ours && self.alive() {
            spawn::kill_group(self.pid);
            // A leader caught between its note and its own process group
            // (its runbook killed as it started it) is in no group yet.
            if leader.is_some() {
                // The process noted, checked above to be this user's and
                // started when the note says.
                crate::store::process::signal(self.pid, rustix::process::Signal::KILL);
            }
        }
    }

    /// Whether everything left of it is on its way out (a program ending
    /// as it is looked at), so that it is gone within moments.
    pub fn ending(&self) -> bool {
        let pids = match &self.cgroup {
            Some(cgroup) if cgroup.populated() => cgroup.pids(),
            _ => super::procs::members(self.pid),
        };
        pids.iter().all(|pid| super::procs::exiting(*pid))
    }

    /// Where it is, for a person: its process group, and its cgroup with
    /// the processes in it.
    pub fn describe(&self) -> String {
        let group = format!("process group {}", self.pid);
        match &self.cgroup {
            Some(cgroup) if cgroup.populated() => {
                let pids: Vec<String> = cgroup.pids().iter().map(u32::to_string).collect();
                let held = format!("cgroup {cgroup} holding {}", pids.join(" "));
                if members_alive(self.pid) {
                    format!("{group}, {held}")
                } else {
                    held
                }
            }
            _ => group,
        }
    }

    /// Whether a process that started at `stat`'s time is the one noted.
    fn started_at(&self, stat: &Stat) -> bool {
        stat.started_ms + 1000 >= self.started && stat.started_ms <= self.started + START_WITHIN_MS
    }
}

#[cfg(test)]
mod tests;
