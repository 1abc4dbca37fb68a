//! Where the process group of every running program is noted, so that a
//! `resume` or `cancel` after runbook was killed sees a program it left
//! running (a SIGKILL of runbook does not reach its programs).
//!
//! One file per run, `STATE/running/RUN`, of fixed-size slots. Before a
//! program starts, its slot is reserved: runbook writes `~PID SINCE STEP`
//! there (this process, and when). The new process then writes its own pid
//! and start time over the first part, as the first thing it does, before
//! it runs the program (`spawn.rs`). So a program never runs without a
//! note, whenever runbook is killed; a slot still saying `~` is a program
//! that was being started, which `resume` looks for among this binary's
//! clones that have not yet called exec. When the program has ended and
//! its group is gone, the slot is blanked.
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
    offset: u64,
    text: [u8; NOTE],
}

impl Reserved {
    pub fn slot(&self) -> NoteSlot<'_> {
        NoteSlot {
            file: &self.file,
            offset: self.offset,
            text: self.text,
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
                std::fs::create_dir_all(&self.dir).map_err(cannot)?;
                let file = File::create(self.dir.join(run.to_string())).map_err(cannot)?;
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
        let mut text = [b' '; NOTE];
        let head = format!(
            "{:>10} {:>16} ",
            format!("~{}", std::process::id()),
            spawn::boot_clock_ms()
        );
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
            offset,
            text,
        })
    }

    /// The program of `step` ended and its group is gone: its slot is blanked.
    pub fn forget(&self, run: RunId, step: &str) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        let Some(notes) = open.get_mut(&run) else {
            return;
        };
        let key = key(step);
        if let Some(slot) = notes.used.iter().position(|k| k.as_deref() == Some(&key)) {
            notes.used[slot] = None;
            let mut blank = [b' '; NOTE];
            blank[NOTE - 1] = b'\n';
            let _ = notes.file.write_all_at(&blank, (slot * NOTE) as u64);
        }
    }

    /// The program an earlier process left running, or was starting, for
    /// `step`, if any.
    pub fn still_running(&self, run: RunId, step: &str) -> Option<Noted> {
        let text = std::fs::read_to_string(self.path(run)).ok()?;
        let key = key(step);
        text.lines().find_map(|line| {
            let mut parts = line.split_whitespace();
            let first = parts.next()?;
            let since = parts.next()?.parse::<u64>().ok()?;
            if parts.next()? != key {
                return None;
            }
            if first.starts_with('~') {
                return starting_clone_since(since).then_some(Noted::Starting);
            }
            let group = Group {
                pid: first.parse().ok()?,
                started: since,
            };
            group.alive().then_some(Noted::Running(group))
        })
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
/// its leader, and when the leader started on the boot clock, so that a
/// reused pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub pid: u32,
    /// Milliseconds since boot, read as the program started.
    pub started: u64,
}

impl Group {
    /// Whether the program runs: its leader is the process noted (not a
    /// zombie, not a reused pid), or the leader is gone but members of its
    /// group are left (its pid cannot be given to another process while
    /// its group has members).
    pub fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some(stat)
                if stat.started_ms + 1000 >= self.started
                    && stat.started_ms <= self.started + stat.tick_ms =>
            {
                !stat.zombie || members_alive(self.pid)
            }
            // The pid is another process's now: our group has no members.
            Some(_) => false,
            None => members_alive(self.pid),
        }
    }

    pub fn kill(&self) {
        if self.alive() {
            spawn::kill_group(self.pid);
        }
    }
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

/// Whether a clone of this binary that has not called exec yet, made at or
/// after `since` (boot clock, ms), exists: what becomes a step's program
/// once it runs. A single thread, running runbook's executable, started
/// then; other runbook processes started since are rarer still, and cost
/// only a refusal to resume, to be tried again.
fn starting_clone_since(since: u64) -> bool {
    let me = std::process::id();
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return true;
    };
    // A clone that was about to note itself does so within microseconds
    // of being scheduled: look for a while before saying there is none.
    let began = std::time::Instant::now();
    loop {
        let found = all_pids().filter(|pid| *pid != me).any(|pid| {
            let started_then =
                proc_stat(pid).is_some_and(|s| s.started_ms + s.tick_ms >= since && !s.zombie);
            started_then
                && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe)
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
