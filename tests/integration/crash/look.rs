//! What the harness sees: `status --json` read whole, and the ledger.

use super::proc::command;
use std::collections::BTreeSet;
use std::path::Path;

/// The run states `status` may show once no process drives the run.
const RUN_WORDS: [&str; 6] = [
    "succeeded",
    "failed",
    "rolled back",
    "cancelled",
    "waiting for approval",
    "stopped (not finished)",
];
const STEP_WORDS: [&str; 7] = [
    "pending",
    "running",
    "interrupted",
    "waiting to retry",
    "succeeded",
    "failed",
    "skipped",
];

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepStatus {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) state: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunStatus {
    pub(crate) state: String,
    pub(crate) steps: Vec<StepStatus>,
}

impl RunStatus {
    pub(crate) fn in_state(&self, word: &str) -> BTreeSet<String> {
        self.steps
            .iter()
            .filter(|s| s.state == word)
            .map(|s| s.name.clone())
            .collect()
    }

    pub(crate) fn state_of(&self, step: &str) -> &str {
        self.steps
            .iter()
            .find(|s| s.name == step)
            .map_or("absent", |s| s.state.as_str())
    }
}

/// `status 1 --json`, read whole: `None` when there is no run 1 yet; an
/// error for anything else that is not a well-formed view of the run.
pub(crate) fn status(state: &Path) -> Result<Option<RunStatus>, String> {
    let args = [
        "--state".to_string(),
        state.display().to_string(),
        "status".into(),
        "1".into(),
        "--json".into(),
    ];
    let out = command(&args).output().expect("runbook status starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(1) && stderr.contains("there is no run 1") {
        return Ok(None);
    }
    if !out.status.success() {
        return Err(format!(
            "`status 1 --json` failed ({}): {}",
            out.status,
            stderr.trim()
        ));
    }
    let json: serde_json::Value = serde_json::from_str(&stdout)
        .map_err(|e| format!("`status 1 --json` printed no JSON ({e}): {stdout}"))?;
    let run = json
        .as_array()
        .filter(|a| a.len() == 1)
        .map(|a| &a[0])
        .ok_or_else(|| format!("`status 1 --json` is not one run: {stdout}"))?;
    let text = |v: &serde_json::Value, field: &str| -> Result<String, String> {
        v[field]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("`status 1 --json` has no `{field}`: {stdout}"))
    };
    let state = text(run, "state")?;
    if !RUN_WORDS.contains(&state.as_str()) {
        return Err(format!("unknown run state {state:?}"));
    }
    if run["run"].as_u64() != Some(1) {
        return Err(format!("`status 1` shows another run: {stdout}"));
    }
    let mut steps = Vec::new();
    for step in run["steps"].as_array().into_iter().flatten() {
        let s = StepStatus {
            name: text(step, "name")?,
            kind: text(step, "kind")?,
            state: text(step, "state")?,
        };
        if !STEP_WORDS.contains(&s.state.as_str()) {
            return Err(format!("step {} in unknown state {:?}", s.name, s.state));
        }
        steps.push(s);
    }
    if steps.is_empty() {
        return Err(format!("`status 1 --json` lists no steps: {stdout}"));
    }
    Ok(Some(RunStatus { state, steps }))
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) step: String,
    pub(crate) end: bool,
    pub(crate) pid: i32,
}

pub(crate) fn read_ledger(path: &Path) -> Result<Vec<Entry>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read the ledger: {e}")),
    };
    text.lines()
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                [step, "overlap", pid] => Err(format!(
                    "two programs of {step} were alive at once: {pid} started while another held its lock"
                )),
                [step, word @ ("start" | "end"), pid] => Ok(Entry {
                    step: step.to_string(),
                    end: *word == "end",
                    pid: pid.parse().map_err(|_| format!("ledger line {line:?}"))?,
                }),
                _ => Err(format!("a torn ledger line: {line:?}")),
            }
        })
        .collect()
}

pub(crate) fn count(entries: &[Entry], step: &str, end: bool) -> usize {
    entries
        .iter()
        .filter(|e| e.step == step && e.end == end)
        .count()
}
