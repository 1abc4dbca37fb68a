//! How a run stands, as one value: what `runbook status` shows (in this
//! process, or sent through the socket by the process that drives the run),
//! and the questions its approvals ask.

use super::Clock;
use crate::compile::eval::{bind, Bindings};
use crate::compile::schema::StepKind;
use crate::compile::Plan;
use crate::engine::{outcome_word, Millis, RecordedParam, RunMeta, RunState, StepState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct RunView {
    pub run: u64,
    /// Whether a process is driving the run now.
    #[serde(default)]
    pub live: bool,
    pub runbook: String,
    pub file: String,
    pub state: String,
    pub started_at: Option<u64>,
    /// The Unix account that started it, where the run recorded one.
    #[serde(default)]
    pub started_by: Option<String>,
    /// When it finished, if it has.
    #[serde(default)]
    pub finished_at: Option<u64>,
    /// Where it was imported from, when it is a copy for review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<String>,
    pub steps: Vec<StepView>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StepView {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub attempt: u32,
    pub since: Option<u64>,
    pub detail: Option<String>,
    /// How it ended in each earlier pass of the run (before a `retry`):
    /// `pass 1: succeeded (attempt 1)`.
    #[serde(default)]
    pub earlier: Vec<String>,
}

/// How a run stands. `live` says whether a process is driving it now.
pub fn view(
    meta: &RunMeta,
    plan: &Plan,
    state: &RunState,
    bindings: &Bindings,
    live: bool,
) -> RunView {
    let now = Clock::system().now();
    // An approval whose time ran out is not waiting any more: `approve`
    // refuses it and a resume records that it failed.
    let expired = |s: &crate::compile::Step| match (state.step(s.id), s.timeout) {
        (StepState::Running { since, .. }, Some(limit)) => {
            now.saturating_sub(*since) > limit.as_millis() as u64
        }
        _ => false,
    };
    let waiting: Vec<_> = state
        .awaiting_approval(plan)
        .into_iter()
        .filter(|s| !expired(s))
        .collect();
    let word = match state.finished {
        None if state.imported.is_some() => "not finished (an imported copy)".into(),
        Some(outcome) => outcome_word(outcome).to_string(),
        None if !waiting.is_empty() => "waiting for approval".into(),
        None if live => "running".into(),
        None => "stopped (not finished)".into(),
    };
    let steps = plan
        .steps
        .iter()
        .map(|s| {
            let st = state.step(s.id);
            let (since, detail) = match st {
                StepState::Running { since, .. }
                    if s.kind.id == StepKind::Approve && expired(s) =>
                {
                    (
                        Some(*since),
                        Some(format!(
                            "the time to approve ran out; `runbook resume {}` records that it {}",
                            meta.id,
                            match &s.action {
                                crate::compile::action::Action::Approve(a) if a.skip_on_timeout => {
                                    "was skipped"
                                }
                                _ => "failed",
                            }
                        )),
                    )
                }
                StepState::Running { since, .. } if s.kind.id == StepKind::Approve => (
                    Some(*since),
                    Some(format!(
                        "{}{} (approve with: runbook approve {} {})",
                        prompt(s, bindings, plan, state),
                        awaited(plan, state, bindings, s.id),
                        meta.id,
                        s.name
                    )),
                ),
                StepState::Running { since, .. } => (Some(*since), None),
                StepState::Retrying { at, .. } => {
                    (None, Some(format!("next attempt at {}", clock(Some(*at)))))
                }
                StepState::Failed { error } => (None, Some(error.clone())),
                StepState::Skipped { reason } => (None, Some(reason.clone())),
                StepState::Succeeded => (None, approved(&state.outputs[s.id.0])),
                StepState::Pending => (None, None),
            };
            let mut word = crate::engine::state_word(st).to_string();
            if !live && state.finished.is_none() && matches!(st, StepState::Running { .. }) {
                word = "interrupted".into();
            }
            StepView {
                name: s.name.clone(),
                kind: s.kind.name.to_string(),
                state: word,
                attempt: state.attempts[s.id.0],
                since,
                detail,
                earlier: state.earlier[s.id.0].iter().map(pass_said).collect(),
            }
        })
        .collect();
    RunView {
        run: meta.id.0,
        live,
        runbook: plan.name.clone(),
        file: meta.file.clone(),
        state: word,
        started_at: state.started_at,
        started_by: meta.started_by.clone(),
        finished_at: state.finished_at,
        imported: state.imported.clone(),
        steps,
    }
}

/// What an approval asks, with the run's parameters filled in.
/// An approval's question, with what the steps before it found
/// (`${idle_now.output.value}`): by the time it is asked, they have settled.
pub fn prompt(
    step: &crate::compile::Step,
    bindings: &Bindings,
    plan: &Plan,
    state: &crate::engine::RunState,
) -> String {
    let crate::compile::action::Action::Approve(approve) = &step.action else {
        return String::new();
    };
    let expr = &approve.prompt.expr;
    let fields = |path: &[crate::syntax::ast::Ident]| crate::engine::step_field(plan, state, path);
    match crate::compile::eval::eval_in(expr, bindings, &|_| None, &fields) {
        crate::compile::eval::Value::Str(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

/// `no run`, `run 7` or `runs 7, 9`.
pub fn runs_named(runs: &[u64]) -> String {
    match runs {
        [] => "no run".to_string(),
        [one] => format!("run {one}"),
        many => format!(
            "runs {}",
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `pass 1: failed: exited with code 3 (attempts 1-3)`.
fn pass_said(pass: &crate::engine::Pass) -> String {
    let how = match &pass.state {
        StepState::Failed { error } => format!("failed: {error}"),
        StepState::Skipped { reason } => format!("skipped: {reason}"),
        other => crate::engine::state_word(other).to_string(),
    };
    let attempts = match pass.attempts {
        (0, 0) => String::new(),
        (a, b) if a == b => format!(" (attempt {a})"),
        (a, b) => format!(" (attempts {a}-{b})"),
    };
    format!("pass {}: {how}{attempts}", pass.pass)
}

/// Who has approved a waiting step and who is awaited, when it needs more
/// than one approval or names who may give it: `; approved by alice; 1
/// more from bob or a member of sre, not the starter`.
fn awaited(
    plan: &Plan,
    state: &RunState,
    bindings: &Bindings,
    step: crate::compile::StepId,
) -> String {
    let Some(a) = crate::engine::approval::awaited(plan, state, bindings, step) else {
        return String::new();
    };
    let mut said = String::new();
    if !a.approved.is_empty() {
        said.push_str(&format!("; approved by {}", a.approved.join(", ")));
    }
    let starter = if a.not_starter {
        ", not the starter"
    } else {
        ""
    };
    let needed = a.more + a.approved.len() as u32;
    if needed > 1 || !a.approved.is_empty() {
        said.push_str(&format!("; {} more from {}{starter}", a.more, a.from));
    } else if !a.anyone {
        said.push_str(&format!("; from {}{starter}", a.from));
    }
    said
}

/// A run's parameters as recorded (secrets stay markers): enough to show
/// prompts and check approvers.
pub fn recorded_bindings(meta: &RunMeta, plan: &Plan) -> Bindings {
    let values: Vec<(String, String)> = meta
        .params
        .iter()
        .filter_map(|(n, p)| match p {
            RecordedParam::Value(v) => Some((n.clone(), v.clone())),
            _ => None,
        })
        .collect();
    // As the run sees them: `env()` read from this environment, as a
    // resumed run would; without its secrets, markers instead.
    let env = |name: &str| std::env::var(name).ok();
    crate::compile::eval::bind_for_run(plan, &values, &env)
        .or_else(|_| bind(plan, &values, &env))
        .unwrap_or_default()
}

pub fn approved(outputs: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let by = approver(outputs)?;
    let at = outputs.get("approved_at").cloned().unwrap_or_default();
    Some(format!("approved by {by} at {at}"))
}

/// Who approved, as recorded: the name given, and the Unix account it came
/// from when that is another name.
pub fn approver(outputs: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let name = outputs.get("approved_by")?;
    Some(match outputs.get("approved_by_account") {
        Some(account) if account != name => format!("{name} (Unix user {account})"),
        _ => name.clone(),
    })
}

/// `14:02:07` (UTC), or the current time for events that carry none.
pub fn clock(at: Option<Millis>) -> String {
    let at = at
        .map(|ms| ms as i64)
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    // Every event gets a line in plain mode: the time of day by arithmetic
    // is a tenth of what formatting a date costs. Days are 86,400 s in UTC.
    const YEAR_10000: i64 = 253_402_300_800_000;
    if (0..YEAR_10000).contains(&at) {
        let day = (at / 1000) % 86_400;
        return format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60);
    }
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_reads_as_chrono_formats_it() {
        for ms in [
            0,
            999,
            1_000,
            86_399_999,
            1_764_244_927_123,
            253_402_300_799_999,
        ] {
            let by_chrono = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_default();
            assert_eq!(super::clock(Some(ms)), by_chrono, "{ms}");
        }
    }
}
