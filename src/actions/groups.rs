//! Where the process group of every running program is noted, so that a
//! `resume` or `cancel` after runbook was killed sees a program it left
//! running (a SIGKILL of runbook does not reach its programs).
//!
//! One file per run, `STATE/running/RUN`, of fixed-size slots: a program
//! that starts takes a free slot (one `pwrite`), and gives it back blank when
//! it ends (another). A file per program instead cost a create and an unlink
//! per step. Written without fsync: a note only has to outlive this process,
//! not the machine, since a reboot ends the program too.

use super::command::Group;
use crate::engine::RunId;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

/// Bytes per slot: `PID STARTED KEY`, padded with spaces, ending in `\n`.
const SLOT: usize = 128;
/// Longest step name kept as it is; a longer one is noted by its hash.
const LONGEST_NAME: usize = 80;

pub struct GroupNotes {
    dir: PathBuf,
    open: Mutex<HashMap<RunId, RunFile>>,
}

/// The file of one run this process writes, and which slots hold a program.
struct RunFile {
    file: File,
    used: Vec<Option<String>>,
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

    /// Notes that `step` of `run` runs the program leading `group`. The
    /// first note of a run in this process starts the run's file afresh:
    /// whatever an earlier process noted was looked at before this one
    /// started anything.
    pub fn note(&self, run: RunId, step: &str, group: Group) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        let notes = match open.entry(run) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => {
                let _ = std::fs::create_dir_all(&self.dir);
                let Ok(file) = File::create(self.dir.join(run.to_string())) else {
                    return;
                };
                new.insert(RunFile {
                    file,
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
        let line = format!("{} {} {}", group.pid, group.started, key);
        if notes
            .file
            .write_all_at(&padded(&line), offset(slot))
            .is_ok()
        {
            notes.used[slot] = Some(key);
        }
    }

    /// The program of `step` ended: its slot is blanked.
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
            let _ = notes.file.write_all_at(&padded(""), offset(slot));
        }
    }

    /// The program an earlier process left running for `step`, if any.
    pub fn still_running(&self, run: RunId, step: &str) -> Option<Group> {
        let text = std::fs::read_to_string(self.path(run)).ok()?;
        let key = key(step);
        text.lines().find_map(|line| {
            let mut parts = line.split_whitespace();
            let pid = parts.next()?.parse::<u32>().ok()?;
            let started = parts.next()?.parse::<u64>().ok()?;
            let group = Group { pid, started };
            (parts.next()? == key && group.alive()).then_some(group)
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

fn padded(line: &str) -> [u8; SLOT] {
    let mut slot = [b' '; SLOT];
    let n = line.len().min(SLOT - 1);
    slot[..n].copy_from_slice(&line.as_bytes()[..n]);
    slot[SLOT - 1] = b'\n';
    slot
}

fn offset(slot: usize) -> u64 {
    (slot * SLOT) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory per test, and the notes kept under it.
    fn notes(name: &str) -> (PathBuf, GroupNotes) {
        let dir =
            std::env::temp_dir().join(format!("runbook-groups-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let notes = GroupNotes::new(dir.join("running"));
        (dir, notes)
    }

    fn me() -> Group {
        Group::started_now(std::process::id())
    }

    #[test]
    fn a_noted_program_is_seen_until_it_is_forgotten() {
        let (_dir, notes) = notes("seen");
        let run = RunId(7);
        let mut this = me();
        // This process started well before now: note when it really did.
        this.started = started_of_this_process();
        notes.note(run, "deploy", this);
        notes.note(run, "backup", this);
        assert_eq!(notes.still_running(run, "deploy"), Some(this));
        assert_eq!(notes.still_running(run, "backup"), Some(this));
        assert_eq!(notes.still_running(run, "other"), None);
        assert_eq!(notes.still_running(RunId(8), "deploy"), None);
        notes.forget(run, "deploy");
        assert_eq!(notes.still_running(run, "deploy"), None);
        assert_eq!(notes.still_running(run, "backup"), Some(this));
        // The freed slot is used again: the file does not grow.
        notes.note(run, "verify", this);
        let len = std::fs::metadata(notes.path(run)).expect("file").len();
        assert_eq!(len, 2 * SLOT as u64);
        assert_eq!(notes.still_running(run, "verify"), Some(this));
    }

    #[test]
    fn a_reused_pid_is_not_the_program_noted() {
        let (_dir, notes) = notes("reused");
        let mut other = me();
        // Same pid, but noted as started an hour after this process did.
        other.started = started_of_this_process() + 3_600_000;
        notes.note(RunId(1), "deploy", other);
        assert_eq!(notes.still_running(RunId(1), "deploy"), None);
    }

    #[test]
    fn a_very_long_step_name_is_noted_by_its_hash() {
        let (_dir, notes) = notes("long");
        let long = "s".repeat(500);
        let mut this = me();
        this.started = started_of_this_process();
        notes.note(RunId(1), &long, this);
        assert_eq!(notes.still_running(RunId(1), &long), Some(this));
        assert_eq!(notes.still_running(RunId(1), &"s".repeat(499)), None);
    }

    #[test]
    fn a_run_whose_programs_ended_leaves_no_file() {
        let (dir, notes) = notes("ended");
        notes.note(RunId(3), "a", me());
        notes.forget(RunId(3), "a");
        notes.note(RunId(4), "b", me());
        drop(notes);
        let running = dir.join("running");
        assert!(!running.join("3").exists());
        assert!(
            running.join("4").exists(),
            "a program still noted stays noted"
        );
    }

    /// When this process started, on the boot clock, from `/proc`.
    fn started_of_this_process() -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
        let ticks: u64 = stat
            .rsplit_once(") ")
            .and_then(|(_, r)| r.split_whitespace().nth(19))
            .and_then(|t| t.parse().ok())
            .expect("start time");
        // SAFETY: sysconf reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        ticks * 1000 / per_second
    }
}
