//! The ledger fixture as the harness knows it, its arguments, and the
//! uninterrupted runs that calibrate the kills.

use super::look::{count, read_ledger, status};
use super::proc::Proc;
use super::LEDGER_FIXTURE;
use crate::common::{root, scratch};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A step of the fixture, as the harness needs to know it.
#[derive(Debug, Clone)]
pub(crate) struct StepInfo {
    pub(crate) name: String,
    /// `verify`, `wait`, or `on-interrupt rerun`: started again by `resume`.
    pub(crate) rerun_safe: bool,
    /// Whether it writes to the ledger (all but `wait`).
    pub(crate) ledger: bool,
    /// Its `when` is false: it is skipped, never run (names ending `_off`).
    pub(crate) skipped: bool,
}

pub(crate) struct Fixture {
    pub(crate) steps: Vec<StepInfo>,
    /// How long an uninterrupted run takes (the median of a few): kills
    /// fall within it.
    pub(crate) full: Duration,
    /// How long `status` takes (the median): about what a process needs to
    /// start and read the journal.
    pub(crate) startup: Duration,
    /// Ledger lines of a whole run.
    pub(crate) lines: usize,
    /// The runbook, its name, and the parameters besides the ledger.
    pub(crate) file: PathBuf,
    pub(crate) name: String,
    pub(crate) params: Vec<String>,
    /// What the runbook's steps keep between attempts (a generated one's
    /// lock and once-failed files), cleared before a fresh run.
    pub(crate) scratch: Option<PathBuf>,
    /// Each run and resume is handed to a `runbook serve` that holds the
    /// state directory, and the disruptions land on that server.
    pub(crate) served: bool,
}

impl Fixture {
    /// `run` of this fixture's runbook, with its ledger and parameters.
    pub(crate) fn run_args(&self, state: &Path, ledger: &Path) -> Vec<String> {
        let mut args = vec![
            "--state".into(),
            state.display().to_string(),
            "run".into(),
            self.file.display().to_string(),
            "-p".into(),
            format!("ledger={}", ledger.display()),
        ];
        for p in &self.params {
            args.push("-p".into());
            args.push(p.clone());
        }
        args
    }

    pub(crate) fn step(&self, name: &str) -> &StepInfo {
        self.steps
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("the fixture has no step {name}"))
    }
}

pub(crate) fn run_args(state: &Path, ledger: &Path) -> Vec<String> {
    vec![
        "--state".into(),
        state.display().to_string(),
        "run".into(),
        LEDGER_FIXTURE.into(),
        "-p".into(),
        format!("ledger={}", ledger.display()),
    ]
}

pub(crate) fn resume_args(state: &Path, choices: &[(String, &str)]) -> Vec<String> {
    let mut args = vec![
        "--state".into(),
        state.display().to_string(),
        "resume".into(),
        "1".into(),
    ];
    for (step, choice) in choices {
        args.push(format!("--{choice}"));
        args.push(step.clone());
    }
    args
}

/// Uninterrupted runs, `jobs` at a time as the trials will run: they set the
/// range of the kills, tell which steps are rerun-safe, and check that the
/// fixture's ledger is as expected.
pub(crate) fn calibrate(jobs: usize) -> Fixture {
    let source = std::fs::read_to_string(root().join(LEDGER_FIXTURE)).expect("the fixture");
    let fx = calibrate_file(&root().join(LEDGER_FIXTURE), &[], jobs, 3, |_| {});
    // The names say which `run` steps rerun: keep them honest.
    let rr = fx.steps.iter().filter(|s| s.name.ends_with("_rr")).count();
    assert_eq!(
        source
            .lines()
            .filter(|l| l.trim() == "on-interrupt rerun")
            .count(),
        rr
    );
    let asking = fx.steps.iter().filter(|s| !s.rerun_safe).count();
    assert!(asking >= 3 && rr >= 3, "both behaviours need steps");
    fx
}

/// `calibrate` for any ledger runbook: `rounds` rounds of `jobs` runs at
/// once; `reset` clears what a run leaves besides its state and ledger.
pub(crate) fn calibrate_file(
    file: &Path,
    params: &[String],
    jobs: usize,
    rounds: usize,
    reset: impl Fn(&Path),
) -> Fixture {
    let source = std::fs::read_to_string(file).expect("the runbook");
    let name = source
        .lines()
        .find_map(|l| l.trim().strip_prefix("runbook "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    let mut fx = Fixture {
        steps: Vec::new(),
        full: Duration::ZERO,
        startup: Duration::ZERO,
        lines: 0,
        file: file.to_path_buf(),
        name,
        params: params.to_vec(),
        scratch: None,
        served: false,
    };
    let mut took = Vec::new();
    let mut opening = Vec::new();
    for round in 0..rounds {
        let runs: Vec<(PathBuf, Proc)> = (0..jobs)
            .map(|i| {
                let dir = scratch(&format!(
                    "crash-calibrate-{}-{i}",
                    file.file_stem().unwrap_or_default().to_string_lossy()
                ));
                reset(&dir);
                let (state, ledger) = (dir.join("state"), dir.join("ledger"));
                let proc = Proc::spawn(&dir, &format!("run{round}"), &fx.run_args(&state, &ledger));
                (dir, proc)
            })
            .collect();
        for (dir, proc) in runs {
            let (state, ledger) = (dir.join("state"), dir.join("ledger"));
            let ended = proc.end(None, "");
            assert_eq!(ended.code(), Some(0), "{}\n{source}", ended.describe());
            took.push(ended.elapsed);
            let asked = Instant::now();
            let status = status(&state).expect("status").expect("run 1");
            opening.push(asked.elapsed());
            assert_eq!(status.state, "succeeded");
            let entries = read_ledger(&ledger).expect("ledger");
            fx.steps = status
                .steps
                .iter()
                .map(|s| StepInfo {
                    name: s.name.clone(),
                    rerun_safe: s.kind != "run" || s.name.ends_with("_rr"),
                    ledger: s.kind != "wait",
                    skipped: s.name.ends_with("_off"),
                })
                .collect();
            for s in &fx.steps {
                let expected = usize::from(s.ledger && !s.skipped);
                assert_eq!(count(&entries, &s.name, false), expected, "{}", s.name);
                assert_eq!(count(&entries, &s.name, true), expected, "{}", s.name);
                let word = if s.skipped { "skipped" } else { "succeeded" };
                assert_eq!(status.state_of(&s.name), word, "{}", s.name);
            }
            fx.lines = entries.len();
            reset(&dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    // The median: the first runs of a fresh binary can be much slower.
    took.sort();
    opening.sort();
    fx.full = took[took.len() / 2];
    fx.startup = opening[opening.len() / 2];
    fx
}
