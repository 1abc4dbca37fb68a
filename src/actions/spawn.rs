//! Starting a step's program so that it is never alive unseen and never
//! hit by the terminal's Ctrl-C.
//!
//! `posix_spawn` (what the standard library uses) leaves two holes. The new
//! process is in runbook's process group until it moves to its own, so a
//! Ctrl-C the terminal sends then stays pending and kills the program as it
//! starts. And its process group is known only once it runs, so a runbook
//! killed in between leaves a program that no note names.
//!
//! So programs start the way `posix_spawn` itself does it, a `clone` that
//! shares memory and stops this thread until the new process has called
//! `exec` (or failed), with two more things done in the new process before
//! `exec`: it writes its own pid into the slot `groups.rs` reserved for it,
//! first of all, so that no program ever runs without a note, whoever dies
//! when; and after it has its own process group, it discards every signal
//! that reached it while it was still in runbook's.
//!
//! Where the program is contained in a cgroup (`contain.rs`), the new
//! process is born in it (clone3 with `CLONE_INTO_CGROUP`, `clone3.rs`),
//! or, where the kernel cannot do that, moves itself in right after
//! writing its note, before it can start anything.
//!
//! Between `clone` and `exec` the new process may only make system calls:
//! it shares this process's memory while other threads run.
#![allow(unsafe_code)] // a raw clone(2): see tests/integration/layers.rs

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes of a note: `PID SINCE KEY`, padded with spaces, ending in `\n`.
pub const NOTE: usize = 128;
/// Where the key begins: the first 10 bytes are the pid, which the new
/// process writes itself; then the time the slot was reserved.
pub const PID_AND_START: usize = 28;

/// A program ready to start: every string already in the form `exec` takes,
/// so that nothing is allocated in the new process.
pub struct Launch {
    path: CString,
    argv: Vec<CString>,
    /// The environment programs start from: this process's, or the one a
    /// run was submitted with (`Environment`).
    base: Option<std::sync::Arc<Environment>>,
    /// Which of the base's variables the program gets (indices: what `env`
    /// replaces and what is withheld are left out), then `env`.
    inherited: Vec<u32>,
    envp: Vec<CString>,
    cwd: Option<CString>,
}

/// This process's environment as `exec` takes it, `KEY=VALUE` by key, made
/// once: runbook never changes its own environment, and copying it for
/// every program cost an allocation per variable per step.
fn own_environment() -> &'static [(std::ffi::OsString, CString)] {
    static ENV: std::sync::OnceLock<Vec<(std::ffi::OsString, CString)>> =
        std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        use std::os::unix::ffi::OsStrExt;
        std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut pair = k.as_bytes().to_vec();
                pair.push(b'=');
                pair.extend_from_slice(v.as_bytes());
                Some((k, CString::new(pair).ok()?))
            })
            .collect()
    })
}

/// An environment programs start from in place of runbook's own: that of
/// the terminal a run was submitted from, so that its programs see the
/// `PATH`, `KUBECONFIG` and proxies they would have seen had that terminal
/// run them itself.
pub struct Environment {
    vars: Vec<(std::ffi::OsString, CString)>,
}

// Its values may be secrets: never shown.
impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Environment({} variables)", self.vars.len())
    }
}

impl Environment {
    /// The variables given (one holding a NUL byte cannot be passed, and is
    /// left out).
    pub fn of(pairs: &[(String, String)]) -> Environment {
        Environment {
            vars: pairs
                .iter()
                .filter_map(|(k, v)| Some((k.into(), CString::new(format!("{k}={v}")).ok()?)))
                .collect(),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<String> {
        let pair = self.vars.iter().find(|(k, _)| k == name)?.1.to_str().ok()?;
        Some(pair.split_once('=')?.1.to_string())
    }
}

/// Where the new process writes its note: the file of the run's notes and
/// the slot's offset, and the slot's text, whose first 10 bytes it replaces
/// with its pid; and the slot's cgroup, if it has one, which it is started
/// in or joins next (`contain.rs`).
pub struct NoteSlot<'a> {
    pub file: &'a std::fs::File,
    pub offset: u64,
    pub text: [u8; NOTE],
    pub join: Option<&'a super::contain::Joining>,
}

/// A started program: its pid (the leader of its own process group) and
/// the read ends of its standard output and error.
pub struct Spawned {
    pub pid: u32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Why it could not join its cgroup, when it was to join one.
    pub uncontained: Option<std::io::Error>,
}

impl Launch {
    /// Leaves out of the program's environment the variables of this
    /// process named in `names` (those secrets were read from), unless the
    /// step set them itself.
    pub fn withholding(mut self, names: &[String], set: &[(String, String)]) -> Launch {
        if names.is_empty() {
            return self;
        }
        let base = match &self.base {
            Some(base) => &base.vars[..],
            None => own_environment(),
        };
        self.inherited.retain(|i| {
            let bytes = base[*i as usize].1.to_bytes();
            let name = bytes.split(|b| *b == b'=').next().unwrap_or_default();
            !names.iter().any(|n| n.as_bytes() == name)
                || set.iter().any(|(k, _)| k.as_bytes() == name)
        });
        self
    }

    /// `program` found as `execvp` would (a name without `/` is looked up in
    /// the `PATH` the program will have), with `args` and the environment
    /// of this process changed by `env`.
    pub fn new(
        program: &str,
        args: &[String],
        env: &[(String, String)],
        cwd: Option<&std::path::Path>,
    ) -> Result<Launch, String> {
        Launch::new_in(None, program, args, env, cwd)
    }

    /// As `new`, starting from `base` in place of this process's
    /// environment when one is given.
    pub fn new_in(
        base: Option<std::sync::Arc<Environment>>,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        cwd: Option<&std::path::Path>,
    ) -> Result<Launch, String> {
        let text = |s: &str| CString::new(s).map_err(|_| format!("`{s}` holds a NUL byte"));
        let replaced = |k: &std::ffi::OsString| env.iter().any(|(name, _)| k == name.as_str());
        let vars = match &base {
            Some(base) => &base.vars[..],
            None => own_environment(),
        };
        let inherited: Vec<u32> = (0..vars.len() as u32)
            .filter(|i| !replaced(&vars[*i as usize].0))
            .collect();
        let path_var = match env.iter().find(|(k, _)| k == "PATH") {
            Some((_, v)) => Some(v.clone()),
            None => match &base {
                Some(base) => base.get("PATH"),
                None => std::env::var_os("PATH").map(|v| v.to_string_lossy().into_owned()),
            },
        };
        let path = resolve(program, path_var.as_deref(), cwd)?;
        let mut argv = vec![text(program)?];
        for a in args {
            argv.push(text(a)?);
        }
        let mut envp = Vec::with_capacity(env.len());
        for (k, v) in env {
            envp.push(
                CString::new(format!("{k}={v}"))
                    .map_err(|_| "an environment value holds a NUL byte")?,
            );
        }
        let cwd = match cwd {
            Some(dir) => Some(
                CString::new(dir.as_os_str().as_encoded_bytes())
                    .map_err(|_| "the working directory holds a NUL byte")?,
            ),
            None => None,
        };
        Ok(Launch {
            path,
            argv,
            base,
            inherited,
            envp,
            cwd,
        })
    }
}

/// Where `program` is, as `execvp` finds it from the program's working
/// directory `cwd`: the path to exec after `chdir(cwd)`.
fn resolve(
    program: &str,
    path_var: Option<&str>,
    cwd: Option<&std::path::Path>,
) -> Result<CString, String> {
    let missing = || crate::error::NO_SUCH_FILE.to_string();
    if program.is_empty() {
        return Err(missing());
    }
    let bytes = |p: &std::path::Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("`{program}` holds a NUL byte"))
    };
    if program.contains('/') {
        // exec finds it, relative to the working directory it then has.
        return bytes(std::path::Path::new(program));
    }
    let dirs = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    let mut denied = false;
    for dir in dirs.split(':') {
        let dir = std::path::Path::new(if dir.is_empty() { "." } else { dir });
        let candidate = dir.join(program);
        // Looked at from here, as exec will see it from `cwd`.
        let seen = match cwd {
            Some(cwd) if candidate.is_relative() => cwd.join(&candidate),
            _ => candidate.clone(),
        };
        let Ok(c) = bytes(&seen) else {
            continue;
        };
        let is_file = std::fs::metadata(&seen).is_ok_and(|m| m.is_file());
        // SAFETY: access(2) reads the NUL-terminated path it is given.
        if is_file && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            return bytes(&candidate);
        }
        denied |= is_file;
    }
    Err(if denied {
        "permission denied".into()
    } else {
        missing()
    })
}

/// What the new process reads, all of it prepared before `clone`.
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    note_fd: RawFd,
    note_offset: libc::off_t,
    note: [u8; NOTE],
    /// The `cgroup.procs` the new process writes `0` into, or -1.
    join_fd: RawFd,
    /// The umask runbook was started with, or `u32::MAX` to keep this one.
    umask: u32,
    /// The errno of a new process that failed before `exec`, and what it
    /// was doing then.
    error: AtomicI32,
    /// The errno of joining its cgroup, which it went on without.
    join_error: AtomicI32,
    stage: AtomicI32,
    /// Set first thing by the new process: a process cloned into its
    /// cgroup that never got here was killed at birth (`clone3.rs`).
    reached: AtomicI32,
}

const STAGES: [&str; 6] = [
    "",
    "noting it",
    "giving it its own process group",
    "connecting its output",
    "entering its working directory",
    "starting it",
];

/// Starts the program: the note (if any) is written before it runs.
pub fn spawn(launch: &Launch, note: Option<NoteSlot<'_>>) -> std::io::Result<Spawned> {
    reap_ready();
    let devnull = devnull()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let argv: Vec<*const libc::c_char> = launch
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let vars = match &launch.base {
        Some(base) => &base.vars[..],
        None => own_environment(),
    };
    let envp: Vec<*const libc::c_char> = launch
        .inherited
        .iter()
        .map(|i| vars[*i as usize].1.as_ptr())
        .chain(launch.envp.iter().map(|a| a.as_ptr()))
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let (note_fd, note_offset, note_text) = match &note {
        Some(slot) => (
            slot.file.as_raw_fd(),
            libc::off_t::try_from(slot.offset)
                .map_err(|_| std::io::Error::other("a note slot beyond the file's reach"))?,
            slot.text,
        ),
        None => (-1, 0, [b' '; NOTE]),
    };
    let join = note.as_ref().and_then(|slot| slot.join);
    let cgroup_dir = join
        .filter(|j| j.may_be_born_in())
        .map_or(-1, |j| j.dir.as_raw_fd());
    let mut args = ChildArgs {
        path: launch.path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: launch.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        stdin: devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        note_fd,
        note_offset,
        note: note_text,
        // Born in its cgroup, it has nothing to join; set below if not.
        join_fd: -1,
        umask: CHILD_UMASK.load(Ordering::Relaxed),
        error: AtomicI32::new(0),
        join_error: AtomicI32::new(0),
        stage: AtomicI32::new(0),
        reached: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: all signals are blocked in this thread so that no handler of
    // ours runs in the new process, which inherits the mask; clone3 and
    // clone(2) with CLONE_VM | CLONE_VFORK run `child` on `stack` and
    // return here only once the new process has called exec or exited, so
    // `args`, `stack` and everything they point to outlive its use of them.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let arg = std::ptr::addr_of_mut!(args) as *mut libc::c_void;
        let born = match clone3::into_cgroup(child, arg, &mut stack, cgroup_dir) {
            Some(Ok(pid)) if (*(arg as *const ChildArgs)).reached.load(Ordering::SeqCst) == 0 => {
                // Killed before it ran a single instruction: the kernel
                // kills a process cloned into a cgroup whose count of
                // `cgroup.kill`s differs from its parent's (Linux 6.14 and
                // later). It did nothing; reap it, and start it the other
                // way, in this cgroup from now on.
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
                if let Some(j) = join {
                    j.not_to_be_born_in();
                }
                None
            }
            other => other,
        };
        let pid = match born {
            Some(Ok(pid)) => Ok(pid),
            // No clone3 here, or it could not start the process in the
            // cgroup (removed since): clone(2), and the process moves
            // itself in (or says why it could not).
            _ => {
                // Through the pointer the new process will read: `args`
                // is not touched directly while `arg` is in use.
                (*(arg as *mut ChildArgs)).join_fd = join.map_or(-1, |j| j.procs.as_raw_fd());
                // The stack grows down from its end, 16-byte aligned.
                let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
                let pid = libc::clone(
                    child,
                    top as *mut libc::c_void,
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    arg,
                );
                if pid < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(pid)
                }
            }
        };
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        pid?
    };
    drop((out_w, err_w, stack));
    let errno = args.error.load(Ordering::SeqCst);
    if errno != 0 {
        // It never ran the program: reap what is left of it.
        let mut status = 0;
        // SAFETY: waitpid(2) on our own child, which has exited.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let stage = STAGES
            .get(args.stage.load(Ordering::SeqCst) as usize)
            .copied()
            .unwrap_or("starting it");
        let e = std::io::Error::from_raw_os_error(errno);
        let why = crate::error::io_reason(&e);
        // "cannot start X: no such file" says it all when exec failed.
        let why = if stage == "starting it" {
            why
        } else {
            format!("{stage}: {why}")
        };
        return Err(std::io::Error::new(e.kind(), why));
    }
    let joined = args.join_error.load(Ordering::SeqCst);
    Ok(Spawned {
        pid: pid as u32,
        stdout: out_r,
        stderr: err_r,
        uncontained: (joined != 0).then(|| std::io::Error::from_raw_os_error(joined)),
    })
}

/// The umask step programs get; `u32::MAX`: the process's own.
static CHILD_UMASK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// Makes runbook's own files private whatever the umask it was started
/// with (`umask`), and gives its step programs the one it was started with:
/// a step that writes a report for others still can.
pub fn private_umask(umask: u32) {
    // SAFETY: umask(2) cannot fail; it swaps the process's file mode mask.
    let started_with = unsafe { libc::umask(umask) };
    CHILD_UMASK.store(started_with, Ordering::Relaxed);
}

/// The new process, from `clone` to `exec`: system calls only.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` that `spawn` keeps alive until this
    // process has called exec or exited; every call below is a system call
    // on memory this process owns or was handed.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        a.reached.store(1, Ordering::SeqCst);
        let fail = |stage: i32| -> ! {
            a.stage.store(stage, Ordering::SeqCst);
            a.error.store(*libc::__errno_location(), Ordering::SeqCst);
            libc::_exit(127)
        };
        // 1. The note, before anything else can go wrong or wait: its pid
        // over the `~PGID` the slot was reserved with.
        if a.note_fd >= 0 {
            let mut note = a.note;
            let pid = libc::syscall(libc::SYS_getpid) as u64;
            put_right(&mut note[..10], pid);
            note[10] = b' ';
            let wrote = libc::pwrite(
                a.note_fd,
                note.as_ptr() as *const libc::c_void,
                NOTE,
                a.note_offset,
            );
            if wrote != NOTE as isize {
                if wrote >= 0 {
                    // A short write sets no errno.
                    *libc::__errno_location() = libc::EIO;
                }
                fail(1);
            }
        }
        // 1b. Its cgroup, right after the note and before it can start
        // anything: from here on, whatever it starts is in there too. A
        // cgroup that cannot be joined (removed by someone else since it
        // was made) leaves it in its process group alone, as where there
        // are no cgroups: containing is never a reason not to run.
        if a.join_fd >= 0 && libc::write(a.join_fd, b"0".as_ptr() as *const libc::c_void, 1) != 1 {
            a.join_error
                .store((*libc::__errno_location()).max(1), Ordering::SeqCst);
        }
        // 2. Its own process group; then what reached it while it was still
        // in ours (a Ctrl-C, a hangup, a terminal stop) is dropped: setting
        // a pending signal to "ignore" discards it.
        if libc::setpgid(0, 0) != 0 {
            fail(2);
        }
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pending);
        libc::sigpending(&mut pending);
        for sig in 1..=64 {
            // KILL and STOP cannot be changed; 32 and 33 are the C library's.
            if sig == libc::SIGKILL || sig == libc::SIGSTOP || sig == 32 || sig == 33 {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let ignored = old.sa_sigaction == libc::SIG_IGN;
            let handled = !ignored && old.sa_sigaction != libc::SIG_DFL;
            let was_pending = libc::sigismember(&pending, sig) == 1;
            if was_pending {
                set_handler(sig, libc::SIG_IGN);
            }
            // Handlers are ours, not the program's; SIGPIPE is ignored by
            // Rust's runtime, not by whoever started runbook. What runbook
            // was started with ignoring stays ignored, as exec keeps it.
            if handled || sig == libc::SIGPIPE || (was_pending && !ignored) {
                set_handler(sig, libc::SIG_DFL);
            }
        }
        // 3. Standard input from /dev/null, output and error to the pipes.
        for (fd, to) in [(a.stdin, 0), (a.stdout, 1), (a.stderr, 2)] {
            if libc::dup2(fd, to) < 0 {
                fail(3);
            }
        }
        // 4. The umask runbook was started with (runbook's own is private),
        // and its working directory.
        if a.umask != u32::MAX {
            libc::umask(a.umask);
        }
        if !a.cwd.is_null() && libc::chdir(a.cwd) != 0 {
            fail(4);
        }
        // 5. No signal blocked, as a program expects; then the program.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(a.path, a.argv, a.envp);
        fail(5)
    }
}

/// # Safety
/// A system call: `sig` gets `handler`, with no flags and no mask.
unsafe fn set_handler(sig: libc::c_int, handler: libc::sighandler_t) {
    let mut sa: libc::sigaction = std::mem::zeroed();
    sa.sa_sigaction = handler;
    libc::sigaction(sig, &sa, std::ptr::null_mut());
}

/// Writes `n` right-aligned into `buf`, spaces before it.
fn put_right(buf: &mut [u8], mut n: u64) {
    for b in buf.iter_mut() {
        *b = b' ';
    }
    let mut i = buf.len();
    loop {
        if i == 0 {
            return;
        }
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return;
        }
    }
}

/// `CLOCK_BOOTTIME` in milliseconds: the clock `/proc/PID/stat` counts a
/// process's start on.
pub fn boot_clock_ms() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `now` is.
    unsafe {
        libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now);
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000_000
}

/// `/dev/null` for reading, opened once.
fn devnull() -> std::io::Result<&'static OwnedFd> {
    static NULL: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();
    if let Some(fd) = NULL.get() {
        return Ok(fd);
    }
    let opened = std::fs::File::open("/dev/null")?;
    let fd = above_stdio(OwnedFd::from(opened))?;
    Ok(NULL.get_or_init(|| fd))
}

/// A pipe, both ends closed on exec, neither 0, 1 or 2 (so that wiring the
/// new process's standard streams cannot close one before it is copied).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) writes two descriptors into `fds`, which we then own.
    let (r, w) = unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

fn above_stdio(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl(2) duplicates a descriptor we own into one we then own.
    unsafe {
        let moved = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3);
        if moved < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(moved))
    }
}

/// Children that were killed and not waited for, reaped when they are done.
static UNREAPED: Mutex<Vec<i32>> = Mutex::new(Vec::new());
/// Process groups killed by this process whose end nobody has seen yet.
static KILLED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Kills the process group `leader` leads, and remembers it until it is gone.
pub fn kill_group(leader: u32) {
    let Ok(pgid) = i32::try_from(leader) else {
        return;
    };
    if pgid <= 0 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    if let Ok(mut killed) = KILLED.lock() {
        if !killed.contains(&pgid) {
            killed.push(pgid);
        }
    }
}

/// A child of ours that nobody will wait for: reaped once it has ended.
pub fn reap_later(pid: u32) {
    if let (Ok(pid), Ok(mut list)) = (i32::try_from(pid), UNREAPED.lock()) {
        list.push(pid);
    }
    reap_ready();
}

fn reap_ready() {
    let Ok(mut list) = UNREAPED.lock() else {
        return;
    };
    list.retain(|pid| {
        let mut status = 0;
        // SAFETY: waitpid(2) with WNOHANG on a child of ours.
        let r = unsafe { libc::waitpid(*pid, &mut status, libc::WNOHANG) };
        r == 0
    });
}

/// Waits, up to `bound`, until every process group this process killed is
/// gone (its leader reaped, no member left) and every cgroup it killed is
/// empty; names those still alive ("process group 12", "cgroup /sys/...").
pub fn wait_killed_gone(bound: Duration) -> Vec<String> {
    let began = Instant::now();
    loop {
        reap_ready();
        let mut alive: Vec<String> = match KILLED.lock() {
            Ok(mut killed) => {
                killed.retain(|pgid| group_exists(*pgid));
                killed
                    .iter()
                    .map(|g| format!("process group {g}"))
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        alive.extend(
            super::contain::killed_left()
                .iter()
                .map(|c| format!("cgroup {c}")),
        );
        if alive.is_empty() || began.elapsed() >= bound {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether any process (a zombie too) is in process group `pgid`.
pub fn group_exists(pgid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only asks; EPERM means it exists.
    let r = unsafe { libc::kill(-pgid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

mod clone3;
#[cfg(test)]
pub(crate) use clone3::supported as clone3_supported;
#[cfg(test)]
mod tests;
