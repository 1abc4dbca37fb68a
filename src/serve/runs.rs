//! The runs `serve` starts: each one is `runbook run` (or `resume`) in a
//! process of its own, in its own process group and its own state
//! directory (`STATE/scheduled/NAME`), so a run survives the scheduler, a
//! crash in one run touches no other, and `status`, `logs`, `approve` and
//! `cancel` work on it as on any run. Its output is logged line by line.

use crate::session::alive;
use crate::store::locks;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// What the run processes tell the scheduler.
#[derive(Debug)]
pub enum RunEvent {
    /// The process created its run (its first line says the number).
    Known { name: String, run: u64 },
    /// The process ended: its exit code (`None`: killed by a signal, or
    /// not the scheduler's child) and its last error line.
    Ended {
        name: String,
        code: Option<i32>,
        last: Option<String>,
    },
}

/// Where the runs of a scheduled runbook are kept.
pub fn state_of(state: &Path, name: &str) -> PathBuf {
    state.join("scheduled").join(name)
}

pub struct Runs {
    pub exe: PathBuf,
    pub state: PathBuf,
    pub lock_dir: PathBuf,
    pub log: Log,
    pub tick: Duration,
    tx: mpsc::UnboundedSender<RunEvent>,
    pub rx: mpsc::UnboundedReceiver<RunEvent>,
    /// The process of each runbook's run, while it lives.
    live: HashMap<String, u32>,
}

impl Runs {
    pub fn new(exe: PathBuf, state: PathBuf, lock_dir: PathBuf, log: Log, tick: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Runs {
            exe,
            state,
            lock_dir,
            log,
            tick,
            tx,
            rx,
            live: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn forget(&mut self, name: &str) {
        self.live.remove(name);
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.live.contains_key(name)
    }

    /// `runbook run FILE --until CUTOFF`; returns the process id, and where
    /// the last good version of the file was put when the file itself no
    /// longer is what was checked (it is run instead).
    pub fn start(
        &mut self,
        name: &str,
        file: &Path,
        source: &str,
        until: Option<(String, String)>,
    ) -> Result<(u32, Option<PathBuf>), String> {
        let dir = state_of(&self.state, name);
        let unchanged = crate::error::read_source(file).is_ok_and(|now| now == source);
        let run_file = if unchanged {
            None
        } else {
            let copy = format!("{name}.last-good.runbook");
            crate::store::private::write_whole(&dir, &copy, source.as_bytes()).map_err(|e| {
                format!(
                    "cannot keep the last good version in {}: {e}",
                    dir.display()
                )
            })?;
            Some(dir.join(copy))
        };
        let path = run_file.as_deref().unwrap_or(file);
        let mut args: Vec<String> = vec!["run".into(), path.display().to_string()];
        if let Some((at, why)) = until {
            args.extend(["--until".into(), at, "--until-reason".into(), why]);
        }
        let pid = self.spawn(name, &args)?;
        Ok((pid, run_file))
    }

    /// `runbook resume RUN`.
    pub fn resume(&mut self, name: &str, run: u64) -> Result<u32, String> {
        self.spawn(name, &["resume".into(), run.to_string()])
    }

    fn spawn(&mut self, name: &str, args: &[String]) -> Result<u32, String> {
        let dir = state_of(&self.state, name);
        // Where the scheduler's locks are, for a `resume` or `retry` by hand
        // with this state directory.
        locks::point_at(&dir, &self.lock_dir)
            .map_err(|e| format!("cannot write to {}: {e}", dir.display()))?;
        let mut child = tokio::process::Command::new(&self.exe)
            .arg("--state")
            .arg(&dir)
            .args(args)
            .env("RUNBOOK_LOCKS", &self.lock_dir)
            .env_remove("RUNBOOK_STATE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: a Ctrl-C at the scheduler's terminal reaches
            // the scheduler alone, which then stops its runs once.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let Some(pid) = child.id() else {
            return Err("its process ended as it started".into());
        };
        self.live.insert(name.to_string(), pid);
        let (tx, log, name) = (self.tx.clone(), Arc::clone(&self.log), name.to_string());
        let (out, err) = (child.stdout.take(), child.stderr.take());
        tokio::spawn(async move {
            let last = forward(&name, out, err, &log, &tx).await;
            let code = child.wait().await.ok().and_then(|s| s.code());
            let _ = tx.send(RunEvent::Ended { name, code, last });
        });
        Ok(pid)
    }

    /// A run process left by an earlier scheduler: watched until it ends.
    pub fn adopt(&mut self, name: &str, pid: u32) {
        self.live.insert(name.to_string(), pid);
        let (tx, name, tick) = (self.tx.clone(), name.to_string(), self.tick);
        tokio::spawn(async move {
            while alive(pid) {
                tokio::time::sleep(tick).await;
            }
            let _ = tx.send(RunEvent::Ended {
                name,
                code: None,
                last: None,
            });
        });
    }

    /// Asks a run to cancel, as `runbook cancel` does (through the socket of
    /// the process that drives it), on a thread of its own: what the
    /// scheduler waits for is the run's end, not the answer.
    pub fn cancel(&self, name: &str, run: u64) -> Result<(), String> {
        let dir = state_of(&self.state, name);
        std::thread::Builder::new()
            .name("cancel".into())
            .spawn(move || {
                let _ = crate::session::cancel(&dir, run, &mut |_| {});
            })
            .map(|_| ())
            .map_err(|e| format!("cannot ask run {run} to cancel: {e}"))
    }

    /// SIGTERM to every run process: the first stops it at a checkpoint,
    /// a second stops its running steps.
    pub fn terminate_all(&self) {
        for pid in self.live.values() {
            // A process this scheduler started or adopted.
            crate::store::process::signal(*pid, rustix::process::Signal::TERM);
        }
    }
}

/// Logs the process's lines and sends its run number when it says it;
/// returns its last line (how it ended, or why it could not start).
async fn forward(
    name: &str,
    out: Option<tokio::process::ChildStdout>,
    err: Option<tokio::process::ChildStderr>,
    log: &Log,
    tx: &mpsc::UnboundedSender<RunEvent>,
) -> Option<String> {
    let mut known: Option<u64> = None;
    let mut last_error: Option<String> = None;
    let mut out = out.map(|o| BufReader::new(o).lines());
    let mut err = err.map(|e| BufReader::new(e).lines());
    loop {
        let line = tokio::select! {
            Some(line) = next(&mut out) => (false, line),
            Some(line) = next(&mut err) => (true, line),
            else => break,
        };
        let (is_err, text) = line;
        if known.is_none() && !is_err {
            if let Some(run) = run_number(&text) {
                known = Some(run);
                let _ = tx.send(RunEvent::Known {
                    name: name.to_string(),
                    run,
                });
            }
        }
        if !text.trim().is_empty() {
            last_error = Some(text.trim().trim_start_matches("error: ").to_string());
        }
        let who = known
            .map(|r| format!("{name} run {r}"))
            .unwrap_or(name.to_string());
        log(&format!("{who} | {text}"));
    }
    last_error
}

async fn next(
    lines: &mut Option<tokio::io::Lines<BufReader<impl tokio::io::AsyncRead + Unpin>>>,
) -> Option<String> {
    match lines {
        Some(l) => match l.next_line().await {
            Ok(Some(line)) => Some(line),
            _ => {
                *lines = None;
                None
            }
        },
        None => None,
    }
}

/// `run 12: db_maintenance (...)`, the first line `runbook run` prints.
fn run_number(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("run ")?;
    let (number, _) = rest.split_once(':')?;
    number.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_run_number_is_read_from_the_first_line() {
        assert_eq!(
            super::run_number("run 12: db_maintenance (x.runbook); if it is"),
            Some(12)
        );
        assert_eq!(super::run_number("running"), None);
    }
}
