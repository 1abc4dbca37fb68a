//! `runbook status`, `logs`, `approve` and `cancel`: what the session reads
//! or does (`session::runs`, `logs`, `approve`, `cancel`), said.

use crate::compile::eval::format_duration;
use crate::error::Error;
use crate::session::{Approved, Cancelled, Clock, Rejected, RunView, Unanswered};
use std::fmt::Write;
use std::path::Path;

pub fn render(v: &RunView) -> String {
    let mut out = format!("run {}  {}  {}  {}\n", v.run, v.runbook, v.file, v.state);
    if let Some(from) = &v.imported {
        let _ = writeln!(out, "  a copy imported for review, {from}");
    } else if !v.live && (v.state.starts_with("stopped") || v.state == "waiting for approval") {
        let _ = writeln!(out, "  continue it with: runbook resume {}", v.run);
    }
    let width = v.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let now = Clock::system().now();
    for s in &v.steps {
        let mut line = format!("  {:width$}  {}", s.name, s.state);
        if s.attempt > 1 {
            let _ = write!(line, " (attempt {})", s.attempt);
        }
        if let Some(since) = s.since {
            let _ = write!(
                line,
                " for {}",
                format_duration((now.saturating_sub(since) / 1000) * 1000)
            );
        }
        if let Some(detail) = &s.detail {
            let _ = write!(line, ": {detail}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
        // What the earlier passes of a retried run did stays in sight.
        for earlier in &s.earlier {
            let _ = writeln!(out, "  {:width$}    {earlier}", "");
        }
    }
    out
}

/// `runbook status [RUN]`.
pub fn status(state_dir: &Path, run: Option<u64>, json: bool) -> Result<u8, Error> {
    let views = crate::session::runs(state_dir, run)?;
    if json {
        say!("{}", to_json(&views)?);
    } else if views.is_empty() {
        say!("no runs yet in {}", state_dir.display());
    } else if run.is_some() {
        views.iter().for_each(|v| say!("{}", render(v).trim_end()));
    } else {
        views.iter().for_each(list_line);
    }
    // The list of runs says what a server cannot do besides: a nightly job
    // it cannot schedule must not go unseen.
    if run.is_none() && !json {
        if let Ok(Some(health)) = crate::session::health(state_dir) {
            for why in &health.problems {
                say!("problem: {}", super::view::printable(why));
            }
        }
    }
    Ok(super::EXIT_OK)
}

/// `runbook health`: the process that holds the store, what it drives, and
/// what it cannot do; exit 1 when it reports a problem or there is none.
pub fn health(state_dir: &Path, json: bool) -> Result<u8, Error> {
    let health = crate::session::health(state_dir)?;
    let code = match &health {
        Some(h) if h.problems.is_empty() => super::EXIT_OK,
        _ => super::EXIT_ERROR,
    };
    if json {
        let value = match &health {
            Some(h) => serde_json::json!({
                "held": true,
                "pid": h.pid,
                "live": h.live,
                "scheduled": h.scheduled,
                "problems": h.problems,
            }),
            None => serde_json::json!({ "held": false, "problems": [] }),
        };
        say!("{}", to_json(&value)?);
        return Ok(code);
    }
    let Some(h) = health else {
        say!(
            "no process holds {}: no server runs there (and no run is live)",
            state_dir.display()
        );
        return Ok(code);
    };
    let live = crate::session::runs_named(&h.live);
    let scheduled = h
        .scheduled
        .map(|n| format!(", schedules {n} runbooks"))
        .unwrap_or_default();
    let verdict = if h.problems.is_empty() {
        "ok"
    } else {
        "problems"
    };
    say!(
        "{verdict}: process {} holds {}, drives {live}{scheduled}",
        h.pid,
        state_dir.display()
    );
    for why in &h.problems {
        say!("problem: {}", super::view::printable(why));
    }
    Ok(code)
}

fn list_line(v: &RunView) {
    let started = v
        .started_at
        .map(date)
        .unwrap_or_else(|| "not started".into());
    // Runs recorded before who started them was kept show `-`.
    let by = v.started_by.as_deref().unwrap_or("-");
    // How long it took, or has taken so far (a live run), or had when it
    // stopped (no end recorded: `-`).
    let took = match (v.started_at, v.finished_at) {
        (Some(start), Some(end)) => format_duration(end.saturating_sub(start)),
        (Some(start), None) if v.live => {
            format_duration((Clock::system().now().saturating_sub(start) / 1000) * 1000)
        }
        _ => "-".to_string(),
    };
    say!(
        "{:>5}  {:24}  {:20}  {}  {:>9}  {:8}  {}",
        v.run,
        v.state,
        v.runbook,
        started,
        took,
        by,
        v.file
    );
}

fn date(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// `runbook logs RUN [STEP]`: what each attempt printed, as kept.
pub fn logs(state_dir: &Path, run: u64, step: Option<&str>) -> Result<u8, Error> {
    for (name, attempts) in crate::session::logs(state_dir, run, step)? {
        for kept in attempts {
            let attempt = kept.attempt;
            if kept.ended {
                say!("── {name} (attempt {attempt}) ──");
            } else if kept.running {
                say!("── {name} (attempt {attempt}, running: what it printed so far) ──");
            } else {
                say!(
                    "── {name} (attempt {attempt}, interrupted: what it printed before its runbook stopped) ──"
                );
            }
            for line in &kept.log.lines {
                let mark = if line.err { "!" } else { " " };
                say!("{mark} {}", line.text);
            }
            if kept.log.dropped_bytes > 0 {
                say!(
                    "… {} more bytes were printed and not kept",
                    kept.log.dropped_bytes
                );
            }
        }
    }
    Ok(super::EXIT_OK)
}

/// `runbook approve RUN STEP [--as NAME]`.
pub fn approve(state_dir: &Path, run: u64, step: &str, by: Option<&str>) -> Result<u8, Error> {
    let mut told = |Unanswered { .. }| {
        eprintln!("note: the process that holds the store ended before it answered; the approval is recorded in the journal instead");
    };
    let who = by
        .map(str::to_string)
        .unwrap_or_else(crate::store::private::this_account);
    let more = |more: u32, from: &str| match more {
        0 => String::new(),
        1 => format!("; 1 more approval is needed, from {from}"),
        n => format!("; {n} more approvals are needed, from {from}"),
    };
    match crate::session::approve(state_dir, run, step, by, &mut told)? {
        Approved::ByItsProcess => say!("approved `{step}` of run {run} as {who}; the run goes on"),
        Approved::InJournal => say!(
            "approved `{step}` of run {run} as {who}; continue the run with: runbook resume {run}"
        ),
        Approved::Counted { more: n, from } => {
            say!("approved `{step}` of run {run} as {who}{}", more(n, &from))
        }
        Approved::YoursAlready { more: n, from } => say!(
            "`{step}` of run {run} was approved by {who} already; nothing more is recorded{}",
            more(n, &from)
        ),
        Approved::Already { who } => say!(
            "`{step}` of run {run} is already approved ({who}); continue the run with: runbook resume {run}"
        ),
    }
    Ok(super::EXIT_OK)
}

/// `runbook reject RUN STEP --reason TEXT [--as NAME]`.
pub fn reject(
    state_dir: &Path,
    run: u64,
    step: &str,
    reason: &str,
    by: Option<&str>,
) -> Result<u8, Error> {
    let mut told = |Unanswered { .. }| {
        eprintln!("note: the process that holds the store ended before it answered; the rejection is recorded in the journal instead");
    };
    let who = by
        .map(str::to_string)
        .unwrap_or_else(crate::store::private::this_account);
    match crate::session::reject(state_dir, run, step, by, reason, &mut told)? {
        Rejected::ByItsProcess => say!(
            "rejected `{step}` of run {run} as {who}: the step failed; the run goes on to its `on failure` steps"
        ),
        Rejected::InJournal => say!(
            "rejected `{step}` of run {run} as {who}: the step failed; continue the run with: runbook resume {run}"
        ),
    }
    Ok(super::EXIT_OK)
}

/// `runbook cancel RUN`.
pub fn cancel(state_dir: &Path, run: u64) -> Result<u8, Error> {
    let mut told = |Unanswered { .. }| {
        eprintln!("note: the process that holds the store ended before it answered; the journal says what happened");
    };
    match crate::session::cancel(state_dir, run, &mut told)? {
        Cancelled::ByItsProcess => {
            say!("run {run} is being cancelled: its running steps were stopped")
        }
        Cancelled::ByItsProcessBeforeItEnded => say!(
            "run {run} was cancelled: its process recorded the cancel, then ended; `runbook status {run}` shows where it stopped"
        ),
        Cancelled::InJournal { interrupted } if interrupted.is_empty() => {
            say!("run {run} cancelled")
        }
        Cancelled::InJournal { interrupted } => say!(
            "run {run} cancelled; these steps had been interrupted and may have done part of their work: {}",
            interrupted.join(", ")
        ),
    }
    Ok(super::EXIT_OK)
}

/// `--json` output: what cannot be put into JSON is an error, never an
/// empty line that a script would read as "no runs".
fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Error::Internal(format!("the status could not be written as JSON: {e}")))
}
