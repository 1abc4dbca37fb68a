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
//! Written without fsync: a note only has to outlive this process, not the
//! machine, since a reboot ends the program too. The page cache holds it
//! for a process that is killed.

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
}

/// The file of one run this process writes, and which slots are taken.
struct RunFile {
    file: Arc<File>,
    used: Vec<Option<String>>,
}

/// A slot reserved for a program about to start.
pub struct Reserved {
    file: Arc<File>,
    slot: usize,
    text: [u8; NOTE],
}

impl Reserved {
    /// Which slot it is, to release it once the program has ended.
    pub fn index(&self) -> usize {
        self.slot
    }

    pub fn slot(&self) -> NoteSlot<'_> {
        NoteSlot {
            file: &self.file,
            offset: (self.slot * NOTE) as u64,
            text: self.text,
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
    /// blanked, unless members of its group (`leader`) are still alive.
    pub fn release(&self, slot: usize, leader: Option<u32>) {
        let gone = leader.is_none_or(|pid| !spawn::group_exists(pid as i32));
        if gone {
            self.notes.forget(self.run, slot);
        }
    }
}

/// What a slot says of a step's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        }
    }

    fn path(&self, run: RunId) -> PathBuf {
        self.dir.join(run.to_string())
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
                new.insert(RunFile {
                    file: Arc::new(file),
                    used: Vec::new(),
                })
            }
        };
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
        // SAFETY: getpgrp(2) cannot fail.
        let pgid = unsafe { libc::getpgrp() };
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
        Ok(Reserved {
            file: Arc::clone(&notes.file),
            slot,
            text,
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

    /// The program an earlier process left running, or was starting, for
    /// `step`, if any.
    pub fn still_running(&self, run: RunId, step: &str) -> Option<Noted> {
        let key = key(step);
        let mut looked_for_clones = false;
        loop {
            // Private, never through a link, and bounded (a run with
            // 80,000 steps running at once notes 10 MB).
            let bytes = crate::store::private::read(&self.path(run), 64 << 20).ok()?;
            let text = String::from_utf8(bytes).ok()?;
            let mut found = None;
            for line in text.lines() {
                match parse(line, &key) {
                    Some(Slot::Program(group)) if group.alive() => {
                        return Some(Noted::Running(group))
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
        })),
    }
}

impl Drop for GroupNotes {
    /// A run whose programs have all ended leaves no file behind.
    fn drop(&mut self) {
        let Ok(open) = self.open.get_mut() else {
            return;
        };
        for (run, notes) in open.iter() {
            if notes.used.iter().all(Option::is_none) {
                let _ = std::fs::remove_file(self.dir.join(run.to_string()));
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
/// started (boot clock), so that a reused pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub pid: u32,
    /// Milliseconds since boot, read just before the program started.
    pub started: u64,
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
    /// of another user (root could), nor one started at another time.
    pub fn kill(&self) {
        let leader = proc_stat(self.pid).map(|s| (s, real_uid(self.pid)));
        let ours = match leader {
            Some((stat, uid)) => self.started_at(&stat) && uid == Some(me()),
            None => all_pids().any(|pid| {
                proc_stat(pid).is_some_and(|s| s.pgrp == i64::from(self.pid) && !s.zombie)
                    && real_uid(pid) == Some(me())
            }),
        };
        if ours && self.alive() {
            spawn::kill_group(self.pid);
        }
    }

    /// Whether a process that started at `stat`'s time is the one noted.
    fn started_at(&self, stat: &Stat) -> bool {
        stat.started_ms + 1000 >= self.started && stat.started_ms <= self.started + START_WITHIN_MS
    }
}

/// The real user of a process (the first `Uid:` of `/proc/PID/status`;
/// `/proc/PID`'s owner would be root for a program that made itself
/// undumpable, such as `ssh`).
pub fn real_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// This process's real user, the one its programs run as.
fn me() -> u32 {
    // SAFETY: getuid(2) cannot fail.
    unsafe { libc::getuid() }
}

/// What `/proc/PID/stat` says of a process that we need.
struct Stat {
    started_ms: u64,
    tick_ms: u64,
    zombie: bool,
    pgrp: i64,
}

fn proc_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(stat: &str) -> Option<Stat> {
    let (_, rest) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(19)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a configuration value; it touches no memory of ours.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|t| *t > 0)
        .unwrap_or(100);
    Some(Stat {
        started_ms: ticks.saturating_mul(1000) / per_second,
        tick_ms: 1000 / per_second + 1,
        zombie: rest.starts_with('Z'),
        pgrp: fields.get(2)?.parse().ok()?,
    })
}

/// The pids of every process on the machine.
fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// Whether a process of group `pgid` other than a zombie is left.
fn members_alive(pgid: u32) -> bool {
    if !spawn::group_exists(pgid as i32) {
        return false;
    }
    all_pids().any(|pid| proc_stat(pid).is_some_and(|s| s.pgrp == i64::from(pgid) && !s.zombie))
}

/// Whether a process that may become a step's program is still on its way:
/// made by runbook at or after `since` (boot clock, ms), not yet out of
/// runbook's process group `pgid` (it leaves it only after it has written
/// its note), and a single thread. Another single-threaded process that
/// joined that group since (rare) costs only a refusal to resume, to be
/// tried again.
fn starting_clone(pgid: u32, since: u64) -> bool {
    let me = std::process::id();
    // A clone that was about to note itself does so within microseconds of
    // being scheduled: look for a while before saying it is still there.
    let began = std::time::Instant::now();
    loop {
        let found = all_pids().filter(|pid| *pid != me).any(|pid| {
            let Some(stat) = proc_stat(pid) else {
                return false;
            };
            stat.pgrp == i64::from(pgid)
                && !stat.zombie
                && stat.started_ms + stat.tick_ms >= since
                && std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .is_ok_and(|s| s.lines().any(|l| l == "Threads:\t1"))
        });
        if !found || began.elapsed() > std::time::Duration::from_millis(500) {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
#[path = "groups_tests.rs"]
mod tests;
