//! Named locks (`lock "neo-db"`): one file per name in a directory shared
//! by everything that runs runbooks on this machine's state directory, held
//! with `flock` for as long as the run's process drives it. The kernel
//! releases a lock when its holder dies, even by SIGKILL, so a lock is
//! never left behind by a crash. The file says who holds it, for messages.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Who holds a lock: written into its file once taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub runbook: String,
    pub run: Option<u64>,
    pub pid: u32,
    /// The state directory of the run.
    pub state: String,
    /// Milliseconds since the Unix epoch.
    pub since: i64,
}

/// Locks taken together; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Held {
    files: Vec<(String, File)>,
}

#[derive(Debug, PartialEq)]
pub enum LockError {
    /// A lock is taken: a sentence naming it and its holder.
    Busy(String),
    Io(String),
}

/// `$RUNBOOK_LOCKS`, else `STATE/locks`: runs started by hand with the
/// scheduler's state directory share its locks.
pub fn lock_dir(state: &Path) -> PathBuf {
    match std::env::var_os("RUNBOOK_LOCKS").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => state.join("locks"),
    }
}

/// Takes every lock in `names`, or none: never waits.
pub fn acquire(dir: &Path, names: &[String], who: &Holder) -> Result<Held, LockError> {
    let mut held = Held { files: Vec::new() };
    if names.is_empty() {
        return Ok(held);
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    sorted.dedup();
    for name in sorted {
        let path = dir.join(format!("{name}.lock"));
        let mut file = open(&path)?;
        if !try_flock(&file).map_err(|e| io(&path, &e))? {
            return Err(LockError::Busy(busy_sentence(name, &mut file)));
        }
        held.files.push((name.clone(), file));
    }
    held.note(who);
    Ok(held)
}

/// Who holds one of `names`, as a sentence, or `None` when all are free
/// now. Takes and releases each free lock at once.
pub fn probe(dir: &Path, names: &[String]) -> Option<String> {
    for name in names {
        let path = dir.join(format!("{name}.lock"));
        let Ok(mut file) = File::open(&path) else {
            continue; // never taken
        };
        match try_flock(&file) {
            Ok(true) => {} // free: released when `file` closes
            Ok(false) => return Some(busy_sentence(name, &mut file)),
            Err(e) => return Some(format!("lock `{name}` cannot be checked: {e}")),
        }
    }
    None
}

impl Held {
    /// Writes who holds the locks into their files (again once the run
    /// has its number).
    pub fn note(&mut self, who: &Holder) {
        let body = serde_json::to_vec(who).unwrap_or_default();
        for (_, file) in &mut self.files {
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = file.write_all(&body);
        }
    }

    pub fn names(&self) -> Vec<&str> {
        self.files.iter().map(|(n, _)| n.as_str()).collect()
    }
}

fn open(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io(path, &e))
}

/// `Ok(false)` when another open file holds the lock.
fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a file descriptor this `File` owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

fn busy_sentence(name: &str, file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.take(64 * 1024).read_to_string(&mut text);
    match serde_json::from_str::<Holder>(&text) {
        Ok(h) => {
            let run = h.run.map(|r| format!(" run {r}")).unwrap_or_default();
            let since = crate::scheduler::short_time(h.since);
            format!(
                "lock `{name}` is held by {}{run} (process {}, state {}) since {since}",
                h.runbook, h.pid, h.state
            )
        }
        Err(_) => format!("lock `{name}` is held by another process"),
    }
}

fn io(path: &Path, e: &std::io::Error) -> LockError {
    LockError::Io(format!(
        "cannot use the lock file {}: {}",
        path.display(),
        crate::error::io_reason(e)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(runbook: &str, run: Option<u64>) -> Holder {
        Holder {
            runbook: runbook.into(),
            run,
            pid: std::process::id(),
            state: "/var/lib/runbook".into(),
            since: 1_795_831_200_000,
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_lock_is_held_until_dropped_and_names_its_holder() {
        let dir = std::env::temp_dir().join(format!("runbook-locks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut held = acquire(&dir, &names(&["neo-db"]), &who("backups", None)).expect("free");
        held.note(&who("backups", Some(4)));
        let busy = acquire(
            &dir,
            &names(&["redis", "neo-db"]),
            &who("db_maintenance", None),
        );
        let expected = format!(
            "lock `neo-db` is held by backups run 4 (process {}, state /var/lib/runbook) since 2026-11-28 02:00:00 UTC",
            std::process::id()
        );
        assert_eq!(busy.unwrap_err(), LockError::Busy(expected.clone()));
        assert_eq!(probe(&dir, &names(&["neo-db"])), Some(expected));
        assert_eq!(
            probe(&dir, &names(&["redis"])),
            None,
            "all or nothing: redis was let go"
        );
        drop(held);
        assert_eq!(probe(&dir, &names(&["neo-db", "redis"])), None);
        let again = acquire(
            &dir,
            &names(&["neo-db", "redis"]),
            &who("db_maintenance", None),
        );
        assert_eq!(again.map(|h| h.names().len()).ok(), Some(2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
