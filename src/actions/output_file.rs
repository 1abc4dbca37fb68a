//! What an attempt prints, kept on disk as it comes, so that after a crash
//! `runbook logs RUN STEP` shows what the interrupted attempt printed before
//! the person decides whether to run it again. The journal keeps an
//! attempt's output once the attempt ends; until then this file is the only
//! copy. Lines are written as they come (the page cache keeps them through a
//! crash of runbook), secrets already replaced, up to the same cap as the
//! journal's copy. A step that prints nothing makes no file.
//!
//! `STATE/output/RUN/STEP.ATTEMPT`, private to its owner; removed when the
//! run finishes.

use crate::engine::{LogLine, RunId, StepLog};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where the attempts of every run keep their output.
#[derive(Debug, Clone)]
pub struct OutputDir(PathBuf);

/// One attempt's file, made at its first line.
pub struct OutputFile {
    path: PathBuf,
    cap: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    file: Option<std::fs::File>,
    written: usize,
    /// A write failed (a full disk): the file is left as it is.
    broken: bool,
}

impl OutputDir {
    pub fn new(state: &Path) -> OutputDir {
        OutputDir(state.join("output"))
    }

    fn run_dir(&self, run: RunId) -> PathBuf {
        self.0.join(run.to_string())
    }

    /// The file of `step`'s attempt `attempt`, made when it first prints.
    pub fn attempt(&self, run: RunId, step: usize, attempt: u32, cap: usize) -> OutputFile {
        OutputFile {
            path: self.run_dir(run).join(format!("{step}.{attempt}")),
            cap,
            open: Mutex::new(Open::default()),
        }
    }

    /// The files of `step`'s attempts, oldest first: the attempt, whether
    /// the file was set aside by a later start of the same attempt (after
    /// an interruption), and what it printed.
    pub fn read(&self, run: RunId, step: usize) -> Vec<(u32, bool, StepLog)> {
        self.read_run(run).remove(&step).unwrap_or_default()
    }

    /// `read` for every step of the run at once: the directory is listed
    /// once, not once per step (a run of 80,000 steps).
    pub fn read_run(&self, run: RunId) -> HashMap<usize, Vec<(u32, bool, StepLog)>> {
        let mut found: HashMap<usize, Vec<(u32, u32, StepLog)>> = HashMap::new();
        let files = std::fs::read_dir(self.run_dir(run))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let (step, rest) = name.split_once('.')?;
                let step = step.parse::<usize>().ok()?;
                let (attempt, aside) = match rest.split_once('.') {
                    Some((a, k)) => (a.parse::<u32>().ok()?, k.parse::<u32>().ok()?),
                    None => (rest.parse::<u32>().ok()?, u32::MAX),
                };
                let text = std::fs::read(e.path()).ok()?;
                let lines = String::from_utf8_lossy(&text)
                    .lines()
                    .map(|l| match l.strip_prefix("! ") {
                        Some(err) => LogLine {
                            err: true,
                            text: err.to_string(),
                        },
                        None => LogLine {
                            err: false,
                            text: l.strip_prefix("  ").unwrap_or(l).to_string(),
                        },
                    })
                    .collect();
                Some((
                    step,
                    attempt,
                    aside,
                    StepLog {
                        lines,
                        dropped_bytes: 0,
                    },
                ))
            });
        for (step, attempt, aside, log) in files {
            found.entry(step).or_default().push((attempt, aside, log));
        }
        found
            .into_iter()
            .map(|(step, mut attempts)| {
                attempts.sort_by_key(|(attempt, aside, _)| (*attempt, *aside));
                let attempts = attempts
                    .into_iter()
                    .map(|(attempt, aside, log)| (attempt, aside != u32::MAX, log))
                    .collect();
                (step, attempts)
            })
            .collect()
    }

    /// The run has finished: the journal holds what every attempt printed.
    pub fn forget_run(&self, run: RunId) {
        let _ = std::fs::remove_dir_all(self.run_dir(run));
    }
}

impl OutputFile {
    /// Adds a line: `! ` before standard error, two spaces before output.
    pub fn line(&self, err: bool, text: &str) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        // The same rule as the journal's copy: a line is kept whole while
        // it fits under the cap.
        if open.broken || open.written + text.len() + 3 > self.cap {
            return;
        }
        if open.file.is_none() {
            match self.create() {
                Ok(file) => open.file = Some(file),
                Err(_) => {
                    open.broken = true;
                    return;
                }
            }
        }
        let mut line = Vec::with_capacity(text.len() + 3);
        line.extend_from_slice(if err { b"! " } else { b"  " });
        // One line each: a newline inside (a piece of an endless line never
        // has one) would read back as two.
        line.extend(text.bytes().map(|b| if b == b'\n' { b' ' } else { b }));
        line.push(b'\n');
        let wrote = open.file.as_mut().map(|f| f.write_all(&line));
        match wrote {
            Some(Ok(())) => open.written += line.len(),
            _ => open.broken = true,
        }
    }

    fn create(&self) -> std::io::Result<std::fs::File> {
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(crate::store::private::dir_mode())
                .create(dir)?;
        }
        // The same attempt started again after an interruption: what the
        // interrupted one printed is set aside, not written over.
        if self.path.exists() {
            let name = self.path.file_name().unwrap_or_default().to_string_lossy();
            if let Some(free) = (1..1000)
                .map(|k| self.path.with_file_name(format!("{name}.{k}")))
                .find(|p| !p.exists())
            {
                std::fs::rename(&self.path, free)?;
            }
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::store::private::file_mode())
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_as_they_come_up_to_the_cap_and_read_back_by_attempt() {
        let state = std::env::temp_dir().join(format!("runbook-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let dir = OutputDir::new(&state);
        let quiet = dir.attempt(RunId(1), 3, 1, 100);
        drop(quiet);
        assert!(dir.read(RunId(1), 3).is_empty(), "no output, no file");
        let second = dir.attempt(RunId(1), 3, 2, 40);
        second.line(false, "copying 1 of 2");
        second.line(true, "warning: slow disk");
        second.line(false, "a line past the cap is not kept");
        let first = dir.attempt(RunId(1), 3, 1, 40);
        first.line(false, "first try");
        let read: Vec<(u32, Vec<(bool, String)>)> = dir
            .read(RunId(1), 3)
            .into_iter()
            .map(|(a, _, log)| (a, log.lines.into_iter().map(|l| (l.err, l.text)).collect()))
            .collect();
        assert_eq!(
            read,
            vec![
                (1, vec![(false, "first try".to_string())]),
                (
                    2,
                    vec![
                        (false, "copying 1 of 2".to_string()),
                        (true, "warning: slow disk".to_string())
                    ]
                ),
            ]
        );
        // Attempt 2 started again (after a crash) sets the first aside.
        let again = dir.attempt(RunId(1), 3, 2, 40);
        again.line(false, "copying 1 of 2, again");
        let asides: Vec<(u32, bool, usize)> = dir
            .read(RunId(1), 3)
            .into_iter()
            .map(|(a, aside, log)| (a, aside, log.lines.len()))
            .collect();
        assert_eq!(asides, vec![(1, false, 1), (2, true, 2), (2, false, 1)]);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(state.join("output/1")), 0o700);
        assert_eq!(mode(state.join("output/1/3.2")), 0o600);
        dir.forget_run(RunId(1));
        assert!(dir.read(RunId(1), 3).is_empty());
        let _ = std::fs::remove_dir_all(&state);
    }
}
