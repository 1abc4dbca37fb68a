//! Runbook processes: spawning, signalling and ending them, and the step
//! processes a SIGKILL leaves behind.

use crate::common::root;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_runbook")
}

pub(crate) fn command(args: &[String]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env_remove("RUNBOOK_STATE")
        .stdin(Stdio::null());
    c
}

/// A runbook process writing to files (no pipe to fill or to inherit);
/// with `server`, a command handed to that `runbook serve`, which drives
/// its run and takes the disruptions.
pub(crate) struct Proc {
    child: Child,
    server: Option<Child>,
    pub(crate) out: PathBuf,
    err: PathBuf,
    began: Instant,
}

/// How a runbook process ended.
pub(crate) struct Ended {
    status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) elapsed: Duration,
    /// The step processes still alive right after a SIGKILL.
    pub(crate) alive: BTreeSet<i32>,
}

impl Proc {
    pub(crate) fn spawn(dir: &Path, tag: &str, args: &[String]) -> Proc {
        let out = dir.join(format!("{tag}.out"));
        let err = dir.join(format!("{tag}.err"));
        let child = command(args)
            .stdout(File::create(&out).expect("creates the output file"))
            .stderr(File::create(&err).expect("creates the error file"))
            .spawn()
            .expect("the runbook binary starts");
        Proc {
            child,
            server: None,
            out,
            err,
            began: Instant::now(),
        }
    }

    /// `args` handed to a `runbook serve` started for it on `state` (an
    /// empty directory of runbooks): the server holds the store and drives
    /// the run; the command follows it. The server's command line does not
    /// name the trial's directory (its state is given in `RUNBOOK_STATE`),
    /// so it is never taken for a step's program.
    pub(crate) fn served(dir: &Path, tag: &str, args: &[String], state: &Path) -> Proc {
        let _ = std::fs::create_dir_all(dir.join("served"));
        let log =
            |end: &str| File::create(dir.join(format!("{tag}.server.{end}"))).expect("creates");
        let mut server = Command::new(bin())
            .args(["serve", "served"])
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env("RUNBOOK_STATE", state)
            .stdin(Stdio::null())
            .stdout(log("out"))
            .stderr(log("err"))
            .spawn()
            .expect("the server starts");
        let socket = state.join("runbook.sock");
        let began = Instant::now();
        while !socket.exists() {
            if let Ok(Some(status)) = server.try_wait() {
                panic!(
                    "the server ended ({status}) before it served {}: {}",
                    socket.display(),
                    std::fs::read_to_string(dir.join(format!("{tag}.server.out")))
                        .unwrap_or_default()
                );
            }
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "the server did not serve {} within 20 s",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut proc = Proc::spawn(dir, tag, args);
        proc.server = Some(server);
        proc
    }

    /// Through a server, waits until the server has taken the run (the
    /// command says so in its first line) or the command has ended, so
    /// that the moments of the disruptions count from there: before it,
    /// a server killed leaves the command to run the run itself.
    pub(crate) fn wait_taken(&mut self) {
        if self.server.is_none() {
            return;
        }
        let began = Instant::now();
        while !std::fs::read_to_string(&self.out).is_ok_and(|o| o.contains('\n'))
            && matches!(self.child.try_wait(), Ok(None))
            && began.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The process the disruptions land on: the server, if there is one.
    fn pid(&self) -> i32 {
        self.server.as_ref().unwrap_or(&self.child).id() as i32
    }

    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child, which is not reaped yet.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    pub(crate) fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits for the end; with `kill_after`, SIGKILL first after that long
    /// (nothing happens if it already ended). `marker` finds its steps.
    pub(crate) fn end(mut self, kill_after: Option<Duration>, marker: &str) -> Ended {
        if let Some(delay) = kill_after {
            std::thread::sleep(delay);
            match &mut self.server {
                // Only while the command still follows its run: once it has
                // ended, the run is over and the kill comes too late.
                Some(server) => {
                    if matches!(self.child.try_wait(), Ok(None)) {
                        let _ = server.kill();
                    }
                }
                None => {
                    let _ = self.child.kill();
                }
            }
        }
        let mut status = self.child.wait().expect("waits for runbook");
        if let Some(mut server) = self.server.take() {
            // The command ended with its run, or when the server went; a
            // server still there is stopped as systemd would stop it.
            if matches!(server.try_wait(), Ok(None)) {
                // SAFETY: kill(2) on our own child, not reaped yet.
                unsafe {
                    libc::kill(server.id() as i32, libc::SIGTERM);
                }
            }
            let stopped = Instant::now();
            while matches!(server.try_wait(), Ok(None)) {
                assert!(
                    stopped.elapsed() < Duration::from_secs(30),
                    "the server did not stop within 30 s of SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            let served = server.wait().expect("waits for the server");
            // A server killed is the process a SIGKILL landed on.
            if served.signal() == Some(libc::SIGKILL) {
                status = served;
            }
        }
        let elapsed = self.began.elapsed();
        let alive = if status.signal() == Some(libc::SIGKILL) {
            step_processes(marker).into_iter().collect()
        } else {
            BTreeSet::new()
        };
        Ended {
            status,
            stdout: std::fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err).unwrap_or_default(),
            elapsed,
            alive,
        }
    }
}

impl Ended {
    pub(crate) fn killed(&self) -> bool {
        self.status.signal() == Some(libc::SIGKILL)
    }

    /// Ended by a Ctrl-C: exit 130, or the default action of SIGINT when it
    /// came before runbook's first instructions had set its own.
    pub(crate) fn interrupted(&self) -> bool {
        self.status.code() == Some(130) || self.status.signal() == Some(libc::SIGINT)
    }

    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub(crate) fn describe(&self) -> String {
        let how = match (self.status.code(), self.status.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => "ended".into(),
        };
        let last = |s: &str| s.lines().last().unwrap_or_default().to_string();
        format!(
            "{how} after {:?}; stdout's last line: {:?}; stderr: {:?}",
            self.elapsed,
            last(&self.stdout),
            self.stderr.trim()
        )
    }
}

/// Copies a directory (a journal) as it is; nothing if it is not there.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    let _ = std::fs::create_dir_all(to);
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            let _ = std::fs::copy(&path, to.join(entry.file_name()));
        }
    }
}

/// Processes whose command line names `marker` (a trial's directory): the
/// steps of that trial's runs, which outlive a SIGKILL of runbook. Nothing
/// in the journal says such a step still runs: `status` calls it
/// interrupted, and `resume` would start a second copy of a rerun-safe one
/// beside it, so the harness waits for them (or kills them) first.
pub(crate) fn step_processes(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let needle = marker.as_bytes();
    let mut found = Vec::new();
    if needle.is_empty() {
        return found;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            found.push(pid);
        }
    }
    found
}

/// Until no step process of `marker` is left: killing their process groups,
/// or letting them end.
pub(crate) fn settle(marker: &str, kill: bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut quiet = 0;
    while quiet < 2 {
        let found = step_processes(marker);
        if found.is_empty() {
            quiet += 1;
        } else {
            quiet = 0;
            if kill {
                for pid in &found {
                    // SAFETY: kill(2); each step leads its own process group.
                    unsafe {
                        if libc::kill(-pid, libc::SIGKILL) != 0 {
                            libc::kill(*pid, libc::SIGKILL);
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("step processes {found:?} still alive after 20 s"));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
