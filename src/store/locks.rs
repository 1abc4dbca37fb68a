//! Named locks (`lock "neo-db"`): one file per name in a directory shared
//! by everything that runs runbooks on this machine's state directory, held
//! with an open file description lock (`F_OFD_SETLK`) for as long as the
//! run's process, or any program it started, lives: the descriptor is
//! inherited by the steps' programs, so a `pg_dump` that outlives a killed
//! runbook still holds the lock. The kernel releases a lock when the last
//! holder ends, even by SIGKILL, so a crash never leaves one behind. The
//! file says who holds it, for messages; `probe` looks without taking.
#![allow(unsafe_code)] // OFD locks through fcntl: see tests/integration/layers.rs

use serde::{Deserialize, Serialize};
use std::fs::File;
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

/// The file in a scheduled runbook's state directory that says where the
/// scheduler's locks are.
const POINTER: &str = "locks-dir";

/// `$RUNBOOK_LOCKS`, else where `STATE/locks-dir` says (the scheduler
/// writes it in each of its runbooks' state directories, so a `resume` by
/// hand there takes the scheduler's locks), else `STATE/locks`: runs
/// started by hand with the scheduler's state directory share its locks.
pub fn lock_dir(state: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNBOOK_LOCKS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let pointed = super::private::read(&state.join(POINTER), 4096)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    match pointed {
        Some(dir) if !dir.trim().is_empty() => PathBuf::from(dir.trim_end_matches('\n')),
        _ => state.join("locks"),
    }
}

/// Makes `lock_dir(state)` answer `locks`.
pub fn point_at(state: &Path, locks: &Path) -> std::io::Result<()> {
    let text = locks.display().to_string();
    if super::private::read(&state.join(POINTER), 4096).is_ok_and(|t| t == text.as_bytes()) {
        return Ok(());
    }
    super::private::write_whole(state, POINTER, text.as_bytes())
}

/// Takes every lock in `names`, or none: never waits.
pub fn acquire(dir: &Path, names: &[String], who: &Holder) -> Result<Held, LockError> {
    let mut held = Held { files: Vec::new() };
    if names.is_empty() {
        return Ok(held);
    }
    // Outside the state directory (the scheduler's), so checked as one.
    super::private::outside_dir(dir).map_err(LockError::Io)?;
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    sorted.dedup();
    for name in sorted {
        let path = dir.join(format!("{name}.lock"));
        let mut file = open(&path)?;
        if !try_lock(&file).map_err(|e| io(&path, &e))? {
            return Err(LockError::Busy(busy_sentence(name, &mut file)));
        }
        inherit(&file).map_err(|e| io(&path, &e))?;
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
        if !path.exists() {
            continue; // never taken
        }
        let mut file = match open(&path) {
            Ok(file) => file,
            Err(LockError::Io(why) | LockError::Busy(why)) => return Some(why),
        };
        match taken(&file) {
            Ok(false) => {}
            Ok(true) => return Some(busy_sentence(name, &mut file)),
            Err(e) => return Some(format!("lock `{name}` cannot be checked: {e}")),
        }
    }
    None
}

impl Held {
    /// Writes who holds the locks into their files (again once the run
    /// has its number).
    pub fn note(&mut self, who: &Holder) {
        // Who holds a lock is only shown to whoever waits for it; a holder
        // that would not serialize leaves the files as they were.
        let Ok(body) = serde_json::to_vec(who) else {
            return;
        };
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

/// Never through a link, never a file another user could write.
fn open(path: &Path) -> Result<File, LockError> {
    super::private::open_rw(path).map_err(|e| io(path, &e))
}

/// An exclusive lock on the whole file, as `fcntl` wants it described.
/// Open file description locks (`F_OFD_*`), through libc: rustix's
/// `fcntl_lock` takes process-associated ones, which a child does not hold
/// and any close of the file in this process would release.
fn whole_file() -> libc::flock {
    // SAFETY: `flock` is plain old data; zero is a valid value of each field.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

/// `Ok(false)` when another open file holds the lock.
fn try_lock(file: &File) -> std::io::Result<bool> {
    let lock = whole_file();
    // SAFETY: fcntl on a descriptor this `File` owns, with a valid `flock`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Whether another open file holds the lock, without taking it.
fn taken(file: &File) -> std::io::Result<bool> {
    let mut lock = whole_file();
    // SAFETY: fcntl on a descriptor this `File` owns, with a valid `flock`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

/// Lets the programs the run starts inherit the descriptor, and with it
/// the lock: it is released only when the last of them has ended.
fn inherit(file: &File) -> std::io::Result<()> {
    Ok(rustix::io::fcntl_setfd(file, rustix::io::FdFlags::empty())?)
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
