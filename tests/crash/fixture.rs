//! The ledger fixture as the harness knows it, its arguments, and the
//! uninterrupted runs that calibrate the kills.

use crate::common::{root, scratch};
use crate::look::{count, read_ledger, status};
use crate::proc::Proc;
use crate::LEDGER_FIXTURE;
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
}

impl Fixture {
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
    let mut took = Vec::new();
    let mut opening = Vec::new();
    let mut steps = Vec::new();
    let mut lines = 0;
    for round in 0..3 {
        let runs: Vec<(PathBuf, Proc)> = (0..jobs)
            .map(|i| {
                let dir = scratch(&format!("crash-calibrate-{i}"));
                let (state, ledger) = (dir.join("state"), dir.join("ledger"));
                let proc = Proc::spawn(&dir, &format!("run{round}"), &run_args(&state, &ledger));
                (dir, proc)
            })
            .collect();
        for (dir, proc) in runs {
            let (state, ledger) = (dir.join("state"), dir.join("ledger"));
            let ended = proc.end(None, "");
            assert_eq!(ended.code(), Some(0), "{}", ended.describe());
            took.push(ended.elapsed);
            let asked = Instant::now();
            let status = status(&state).expect("status").expect("run 1");
            opening.push(asked.elapsed());
            assert_eq!(status.state, "succeeded");
            let entries = read_ledger(&ledger).expect("ledger");
            steps = status
                .steps
                .iter()
                .map(|s| StepInfo {
                    name: s.name.clone(),
                    rerun_safe: s.kind != "run" || s.name.ends_with("_rr"),
                    ledger: s.kind != "wait",
                })
                .collect();
            for s in &steps {
                let expected = usize::from(s.ledger);
                assert_eq!(count(&entries, &s.name, false), expected, "{}", s.name);
                assert_eq!(count(&entries, &s.name, true), expected, "{}", s.name);
            }
            lines = entries.len();
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    // The names say which `run` steps rerun: keep them honest.
    let rr = steps.iter().filter(|s| s.name.ends_with("_rr")).count();
    assert_eq!(
        source
            .lines()
            .filter(|l| l.trim() == "on-interrupt rerun")
            .count(),
        rr
    );
    let asking = steps.iter().filter(|s| !s.rerun_safe).count();
    assert!(asking >= 3 && rr >= 3, "both behaviours need steps");
    // The median: the first runs of a fresh binary can be much slower.
    took.sort();
    opening.sort();
    Fixture {
        steps,
        full: took[took.len() / 2],
        startup: opening[opening.len() / 2],
        lines,
    }
}
