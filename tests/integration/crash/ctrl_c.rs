//! Helpers of the Ctrl-C tests: waiting, the gate fixture, ledger counts.

use super::look::{count, read_ledger};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const GATE_FIXTURE: &str = "tests/fixtures/crash_gate.runbook";

/// Polls `what` every millisecond until it holds, for up to 20 s.
pub(crate) fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "waited 20 s for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub(crate) fn gate_args(state: &Path, ledger: &Path, gate: &Path) -> Vec<String> {
    vec![
        "--state".into(),
        state.display().to_string(),
        "run".into(),
        GATE_FIXTURE.into(),
        "-p".into(),
        format!("ledger={}", ledger.display()),
        "-p".into(),
        format!("gate={}", gate.display()),
    ]
}

pub(crate) fn ledger_has(ledger: &Path, step: &str, end: bool) -> bool {
    count(&read_ledger(ledger).unwrap_or_default(), step, end) > 0
}

pub(crate) fn starts_and_ends(ledger: &Path) -> BTreeMap<String, (usize, usize)> {
    let entries = read_ledger(ledger).expect("the ledger reads");
    let mut seen = BTreeMap::new();
    for e in &entries {
        let slot = seen.entry(e.step.clone()).or_insert((0, 0));
        if e.end {
            slot.1 += 1;
        } else {
            slot.0 += 1;
        }
    }
    seen
}

pub(crate) fn counts(pairs: &[(&str, (usize, usize))]) -> BTreeMap<String, (usize, usize)> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}
