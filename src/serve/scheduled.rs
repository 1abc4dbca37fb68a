//! The scheduled runbooks of a directory, as `serve` and `schedule` see
//! them: every `*.runbook` with a `schedule`, plus `blackouts.runbook` for
//! periods in which none of them starts. Reloaded when a file changes; a
//! file that no longer checks keeps its last good schedule.

use crate::compile::directory_blackouts;
use crate::compile::eval::bind_for_run;
use crate::compile::schedule::Blackout;
use crate::scheduler::Entry;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The file of directory-wide blackouts.
pub const BLACKOUTS_FILE: &str = "blackouts.runbook";

pub struct Loader {
    dir: PathBuf,
    /// What each file was when last read: modified time and length.
    seen: BTreeMap<PathBuf, (Option<SystemTime>, u64)>,
    /// The last good entry of each file that has a schedule.
    good: BTreeMap<PathBuf, Entry>,
    /// Why a file is not scheduled now (or runs on its last good version).
    pub problems: BTreeMap<PathBuf, String>,
    directory: Vec<Blackout>,
    loaded_once: bool,
    /// Whether secrets read from the environment must be set here: in the
    /// scheduler, yes; in `runbook schedule`, run from another shell, no.
    check_env: bool,
}

impl Loader {
    pub fn new(dir: &Path, check_env: bool) -> Self {
        Loader {
            check_env,
            dir: dir.to_path_buf(),
            seen: BTreeMap::new(),
            good: BTreeMap::new(),
            problems: BTreeMap::new(),
            directory: Vec::new(),
            loaded_once: false,
        }
    }

    /// Reads the files that changed since the last call. Returns what to
    /// log; `Err` only when the directory cannot be read the first time.
    pub fn refresh(&mut self) -> Result<Vec<String>, String> {
        let mut said = Vec::new();
        let files = match list(&self.dir) {
            Ok(files) => files,
            Err(why) if !self.loaded_once => return Err(why),
            Err(why) => {
                // Said once per change of mind, not every check.
                if self.problems.get(&self.dir) != Some(&why) {
                    said.push(format!(
                        "{why}; keeping the {} schedules loaded before",
                        self.good.len()
                    ));
                    self.problems.insert(self.dir.clone(), why);
                }
                return Ok(said);
            }
        };
        self.problems.remove(&self.dir);
        self.loaded_once = true;
        let gone: Vec<PathBuf> = self
            .seen
            .keys()
            .filter(|f| !files.contains_key(*f))
            .cloned()
            .collect();
        for file in gone {
            self.seen.remove(&file);
            self.problems.remove(&file);
            if is_blackouts(&file) {
                self.directory.clear();
                said.push(format!(
                    "{}: removed; no directory-wide blackouts now",
                    file.display()
                ));
            } else if let Some(entry) = self.good.remove(&file) {
                self.reconsider(&entry.name);
                said.push(format!(
                    "{}: removed; `{}` is no longer scheduled",
                    file.display(),
                    entry.name
                ));
            }
        }
        for (file, stamp) in files {
            if self.seen.get(&file) == Some(&stamp) {
                continue;
            }
            self.seen.insert(file.clone(), stamp);
            if is_blackouts(&file) {
                said.extend(self.load_blackouts(&file));
            } else {
                said.extend(self.load(&file));
            }
        }
        Ok(said)
    }

    /// The scheduled runbooks, each with the directory's blackouts too.
    /// Two files with one runbook name: the first (by file name) wins.
    pub fn entries(&self) -> Vec<Entry> {
        let mut by_name: BTreeMap<String, Entry> = BTreeMap::new();
        for entry in self.good.values() {
            by_name.entry(entry.name.clone()).or_insert_with(|| {
                let mut entry = entry.clone();
                entry.blackouts.extend(self.directory.iter().cloned());
                entry
            });
        }
        by_name.into_values().collect()
    }

    fn load(&mut self, file: &Path) -> Option<String> {
        let shown = file.display().to_string();
        let kept = |loader: &Loader| match loader.good.get(file) {
            Some(_) => "; it keeps its last good schedule",
            None => "; it is not scheduled",
        };
        let source = match crate::error::read_source(file) {
            Ok(source) => source,
            Err(e) => {
                let why = format!("{e}{}", kept(self));
                self.problems.insert(file.to_path_buf(), why.clone());
                return Some(why);
            }
        };
        let plan = match crate::compile::check(&source) {
            Ok(plan) => plan,
            Err(diagnostics) => {
                let text = crate::diagnostic::render(&shown, &source, &diagnostics, false);
                let why = format!("{shown} does not check{}:\n{}", kept(self), text.trim_end());
                self.problems.insert(file.to_path_buf(), why.clone());
                return Some(why);
            }
        };
        let Some(schedule) = plan.settings.schedule.clone() else {
            self.problems.remove(file);
            return self.good.remove(file).map(|e| {
                self.reconsider(&e.name);
                format!(
                    "{shown}: `{}` has no schedule now; no longer scheduled",
                    e.name
                )
            });
        };
        // A scheduled run gets no -p: every parameter needs a default, and
        // every secret its environment variable, here.
        let env = |name: &str| std::env::var(name).ok();
        let mut unbound: Vec<String> = plan
            .params
            .iter()
            .filter(|p| p.default.is_none())
            .map(|p| {
                format!(
                    "the parameter `{}` has no default, and a scheduled run is given none",
                    p.name
                )
            })
            .collect();
        if unbound.is_empty() && self.check_env {
            if let Err(errors) = bind_for_run(&plan, &[], &env) {
                unbound = errors;
            }
        }
        if !unbound.is_empty() {
            let why = format!("{shown}: {}{}", unbound.join("; "), kept(self));
            self.problems.insert(file.to_path_buf(), why.clone());
            return Some(why);
        }
        if let Some(other) = self
            .good
            .iter()
            .find(|(f, e)| *f != file && e.name == plan.name)
        {
            let why = format!(
                "{shown} is not scheduled: {} already schedules a runbook named `{}`",
                other.0.display(),
                plan.name
            );
            self.problems.insert(file.to_path_buf(), why.clone());
            return Some(why);
        }
        self.problems.remove(file);
        let entry = Entry {
            name: plan.name.clone(),
            file: file.to_path_buf(),
            schedule,
            blackouts: plan.settings.blackouts.clone(),
            locks: plan.settings.locks.clone(),
            source,
        };
        let what = match self.good.insert(file.to_path_buf(), entry) {
            Some(old) if old.name != plan.name => {
                self.reconsider(&old.name);
                "reloaded"
            }
            Some(_) => "reloaded",
            None => "loaded",
        };
        let sched = plan.settings.schedule.as_ref();
        Some(format!(
            "{shown}: {what} `{}`: {} ({})",
            plan.name,
            sched.map(|s| s.cron.as_str()).unwrap_or_default(),
            sched.map(|s| s.timezone.as_str()).unwrap_or_default()
        ))
    }

    /// A runbook name is free again: a file refused for using it is read
    /// again at the next refresh.
    fn reconsider(&mut self, name: &str) {
        let taken = format!("already schedules a runbook named `{name}`");
        let refused: Vec<PathBuf> = self
            .problems
            .iter()
            .filter(|(_, why)| why.contains(&taken))
            .map(|(file, _)| file.clone())
            .collect();
        for file in refused {
            self.seen.remove(&file);
        }
    }

    fn load_blackouts(&mut self, file: &Path) -> Option<String> {
        let shown = file.display().to_string();
        let source = match crate::error::read_source(file) {
            Ok(source) => source,
            Err(e) => {
                let why = format!("{e}; keeping the directory's blackouts as they were");
                self.problems.insert(file.to_path_buf(), why.clone());
                return Some(why);
            }
        };
        match directory_blackouts(&source) {
            Ok(blackouts) => {
                self.problems.remove(file);
                let n = blackouts.len();
                self.directory = blackouts;
                Some(format!("{shown}: {n} directory-wide blackouts"))
            }
            Err(diagnostics) => {
                let text = crate::diagnostic::render(&shown, &source, &diagnostics, false);
                let why = format!(
                    "{shown} does not check; keeping the directory's blackouts as they were:\n{}",
                    text.trim_end()
                );
                self.problems.insert(file.to_path_buf(), why.clone());
                Some(why)
            }
        }
    }
}

fn is_blackouts(file: &Path) -> bool {
    file.file_name().is_some_and(|n| n == BLACKOUTS_FILE)
}

/// The directory's `*.runbook` files with their modified time and length.
fn list(dir: &Path) -> Result<BTreeMap<PathBuf, (Option<SystemTime>, u64)>, String> {
    let unreadable = |e: std::io::Error| {
        format!(
            "cannot read the directory {}: {}",
            dir.display(),
            crate::error::io_reason(&e)
        )
    };
    let mut files = BTreeMap::new();
    for item in std::fs::read_dir(dir).map_err(unreadable)? {
        let Ok(item) = item else { continue };
        let path = item.path();
        if path.extension().is_none_or(|e| e != "runbook") {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            files.insert(path, (meta.modified().ok(), meta.len()));
        }
    }
    Ok(files)
}
