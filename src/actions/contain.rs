//! Containing a step's programs in a cgroup of their own, where this
//! process may make one, so that nothing a program starts gets away from a
//! timeout, a cancel or a `resume`: a process group holds only the
//! processes that stay in it, and any program can leave it (`setsid`, a
//! daemon that forks twice), while leaving a cgroup takes the right to
//! write a cgroup higher up, which a step's program is not given.
//!
//! Where: below this process's own cgroup (cgroup v2), when this user may
//! write it, as root may, or a user in a cgroup delegated to them (a systemd
//! service with `Delegate=yes`, `systemd-run --user --scope`). Elsewhere
//! (cgroup v1 only, a login session's scope, a container without its
//! cgroup tree) programs are kept in process groups alone, as before.
//!
//! Layout: each runbook process makes `runbook.RUN.RANDOM` for a run the
//! first time it starts one of the run's programs, and in it a cgroup per
//! slot of the run's notes (`groups.rs`), `0`, `1`, ..., used again by the
//! next program of that slot once it is empty. The new process moves itself
//! in before it runs the program (`spawn.rs`). `STATE/running/RUN.cgroup`
//! names the directory, so that a later `resume` or `cancel` finds it.
//!
//! No controller is enabled and no limit set: a cgroup here is a set of
//! processes to look at and to kill, nothing more.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// This process's own cgroup, where it may make cgroups for its programs.
#[derive(Debug, Clone)]
pub struct Cgroups {
    base: PathBuf,
}

impl Cgroups {
    /// This process's cgroup v2 directory, if this process may make cgroups
    /// in it and move its new processes into them.
    pub fn find() -> Option<Cgroups> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let relative = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mount = cgroup2_mount(&mounts)?;
        // `/..` when this process is outside the cgroup namespace's root.
        if !relative.starts_with('/')
            || relative.contains("/..")
            || relative.ends_with(" (deleted)")
        {
            return None;
        }
        let base = mount.join(relative.trim_start_matches('/'));
        // A threaded cgroup takes no process cgroups below it.
        if let Ok(kind) = std::fs::read_to_string(base.join("cgroup.type")) {
            if kind.trim() != "domain" {
                return None;
            }
        }
        let writable = |p: &Path| rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok();
        // Making a cgroup takes the directory; moving a process from this
        // cgroup into one below it takes this cgroup's `cgroup.procs`.
        (writable(&base) && writable(&base.join("cgroup.procs"))).then_some(Cgroups { base })
    }

    /// A new directory for the programs `run` starts in this process.
    pub fn make_run_dir(&self, run: crate::engine::RunId) -> std::io::Result<PathBuf> {
        let dir = self.base.join(format!(
            "runbook.{run}.{:08x}",
            crate::store::private::random() as u32
        ));
        std::fs::create_dir(&dir)?;
        Ok(dir)
    }
}

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = before.split_whitespace().collect();
        // Only a mount of the whole hierarchy (as seen from this namespace).
        if fields.get(3)? != &"/" {
            return None;
        }
        Some(PathBuf::from(unescape(fields.get(4)?)))
    })
}

/// A mount point as mountinfo writes it: space, tab, newline and backslash
/// as three octal digits after a backslash.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cgroup opened for the programs started in it: its directory, for a
/// new process to be born inside (clone3's `CLONE_INTO_CGROUP`), and its
/// `cgroup.procs`, for one to move itself in by writing `0` there before it
/// runs its program, where the kernel cannot do the first.
#[derive(Debug)]
pub struct Joining {
    pub dir: File,
    pub procs: File,
    killed: Arc<AtomicBool>,
}

impl Joining {
    /// Whether a new process may be born in it: not once this process has
    /// killed it. Since Linux 6.14 a process cloned into a cgroup that was
    /// written `cgroup.kill` more often than its parent's cgroup, even long
    /// before and empty since, is killed at birth (`spawn/clone3.rs`),
    /// while one that moves itself in lives: the tests `a_cgroup_killed_`
    /// `for_an_earlier_program_is_not_waited_for_once_given_to_the_next`
    /// and `serve::the_window_closing_stops_the_run_and_its_on_failure_`
    /// `steps_run` failed that way on Linux 6.18 (the next program, an
    /// `on failure` step, died unseen) before this.
    pub fn may_be_born_in(&self) -> bool {
        !self.killed.load(Ordering::Relaxed)
    }

    /// A process born in it was killed at birth (a kill count that differs
    /// from this process's cgroup's): the next ones move in.
    pub fn not_to_be_born_in(&self) {
        self.killed.store(true, Ordering::Relaxed);
    }
}

/// The cgroup of one slot of a run's notes: one program at a time, with
/// everything it started.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: PathBuf,
    /// Its `cgroup.events`, kept open by the process that made it: read
    /// again after every program of the slot, and opening a cgroup file
    /// costs more than reading one.
    events: Option<Arc<File>>,
    /// Whether this process has written its `cgroup.kill` (`Joining`).
    killed: Arc<AtomicBool>,
}

impl PartialEq for Cgroup {
    fn eq(&self, other: &Cgroup) -> bool {
        self.path == other.path
    }
}

impl Eq for Cgroup {}

impl std::fmt::Display for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

impl Cgroup {
    pub fn at(path: PathBuf) -> Cgroup {
        Cgroup {
            path,
            events: None,
            killed: Arc::default(),
        }
    }

    /// Makes it, if it is not there yet, and keeps its events open.
    pub fn make(path: PathBuf) -> std::io::Result<Cgroup> {
        match std::fs::create_dir(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let events = File::open(path.join("cgroup.events"))?;
        Ok(Cgroup {
            path,
            events: Some(Arc::new(events)),
            killed: Arc::default(),
        })
    }

    /// It, opened for new processes to start in (`Joining`).
    pub fn joining(&self) -> std::io::Result<Joining> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&self.path)?;
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(self.path.join("cgroup.procs"))?;
        Ok(Joining {
            dir,
            procs,
            killed: Arc::clone(&self.killed),
        })
    }

    /// Whether a process is left in it (zombies waiting to be reaped are
    /// not counted by the kernel).
    pub fn populated(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 256];
        let read = match &self.events {
            // A kernel file shows itself afresh when read from the start.
            Some(events) => events.read_at(&mut buf, 0),
            None => {
                File::open(self.path.join("cgroup.events")).and_then(|f| f.read_at(&mut buf, 0))
            }
        };
        read.is_ok_and(|n| buf[..n].split(|b| *b == b'\n').any(|l| l == b"populated 1"))
    }

    /// The processes in it.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|p| p.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Whether this user made it: a cgroup named in a note is only ever
    /// killed when it is this user's own.
    pub fn ours(&self) -> bool {
        let me = rustix::process::getuid().as_raw();
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_dir() && m.uid() == me)
    }

    /// Kills every process in it, and remembers it until it is empty
    /// (`killed_left`). `cgroup.kill` (Linux 5.14) kills them all at once,
    /// new forks too; before it, each listed process is killed, a few
    /// rounds, for what was forked meanwhile.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        let killed = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.kill"))
            .and_then(|mut f| f.write_all(b"1"));
        if killed.is_err() {
            for _ in 0..10 {
                let pids = self.pids();
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    crate::store::process::signal(pid, rustix::process::Signal::KILL);
                }
            }
        }
        if let Ok(mut list) = KILLED.lock() {
            if !list.contains(self) {
                list.push(self.clone());
            }
        }
    }

    /// Removes it if it is empty; whether it is gone.
    pub fn remove(&self) -> bool {
        match std::fs::remove_dir(&self.path) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }
}

/// Cgroups this process killed that were not seen empty yet.
static KILLED: Mutex<Vec<Cgroup>> = Mutex::new(Vec::new());

/// Held by the unit tests that kill, or wait for what was killed: the list
/// above is the process's, and one test's empty cgroup would be dropped
/// from it, or its live one waited for, by another running beside it.
#[cfg(test)]
pub(crate) fn kill_list_for_a_test() -> std::sync::MutexGuard<'static, ()> {
    static TESTS: Mutex<()> = Mutex::new(());
    TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A cgroup given to a new program: whatever it held when it was killed
/// is gone (a slot is used again only then), so it is no longer waited for.
pub fn forget_killed(cgroup: &Cgroup) {
    if let Ok(mut list) = KILLED.lock() {
        list.retain(|c| c != cgroup);
    }
}

/// The cgroups this process killed that still hold a process.
pub fn killed_left() -> Vec<Cgroup> {
    match KILLED.lock() {
        Ok(mut list) => {
            list.retain(Cgroup::populated);
            list.clone()
        }
        Err(_) => Vec::new(),
    }
}

/// The directory a run's programs were contained in by the process that
/// wrote `note` (`STATE/running/RUN.cgroup`), if it is a runbook one.
pub fn run_dir_named(note: &Path) -> Option<PathBuf> {
    let text = crate::store::private::read(note, 4096).ok()?;
    let dir = PathBuf::from(String::from_utf8(text).ok()?.trim_end());
    let name = dir.file_name()?.to_str()?;
    (dir.is_absolute() && name.starts_with("runbook.")).then_some(dir)
}

/// Removes a run's directory and its slots' cgroups, those that are empty.
pub fn tidy(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let is_slot = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.parse::<usize>().is_ok());
            if is_slot && entry.file_type().is_ok_and(|t| t.is_dir()) {
                Cgroup::at(entry.path()).remove();
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
pub(crate) mod tests;
