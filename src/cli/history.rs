//! `runbook history RUN [--json]`: everything a run recorded, who did what
//! and when, for a person to read or, as JSON lines, for a log system.

use crate::engine::{Event, RecordedParam, RunMeta, Steering, Verdict};
use crate::error::Error;
use crate::session::approver;
use std::path::Path;

pub fn history(state_dir: &Path, run: u64, json: bool) -> Result<u8, Error> {
    let (meta, events) = crate::session::history(state_dir, run)?;
    let plan = crate::session::plan_of(&meta).ok();
    let step = |i: usize| -> String {
        plan.as_ref()
            .and_then(|p| p.steps.get(i))
            .map_or_else(|| format!("step {i}"), |s| format!("`{}`", s.name))
    };
    if json {
        say!(
            "{}",
            line(&serde_json::json!({
                "run": run,
                "file": meta.file,
                "created_at": meta.created_at,
                "started_by": meta.started_by,
                "params": params(&meta).into_iter().collect::<serde_json::Map<_, _>>(),
            }))?
        );
        for (seq, event) in events.iter().enumerate() {
            say!(
                "{}",
                line(&serde_json::json!({"run": run, "seq": seq + 1, "event": event}))?
            );
        }
        return Ok(super::EXIT_OK);
    }
    let by = meta
        .started_by
        .as_deref()
        .map(|who| format!(" by {who}"))
        .unwrap_or_default();
    say!(
        "run {run}: {} ({}), recorded {}{by}",
        plan.as_ref().map_or("?", |p| p.name.as_str()),
        meta.file,
        date(meta.created_at)
    );
    let given: Vec<String> = params(&meta)
        .into_iter()
        .map(|(name, value)| format!("{name}={}", value.as_str().unwrap_or_default()))
        .collect();
    if !given.is_empty() {
        say!("  parameters: {}", given.join(", "));
    }
    let mut last = meta.created_at;
    for event in &events {
        let at = event.at().unwrap_or(last);
        last = at;
        say!("{}  {}", date(at), said(event, &step));
    }
    Ok(super::EXIT_OK)
}

/// The parameters as recorded: a secret only as where it comes from.
fn params(meta: &RunMeta) -> Vec<(String, serde_json::Value)> {
    meta.params
        .iter()
        .map(|(name, kept)| {
            let value = match kept {
                RecordedParam::Value(v) => v.clone(),
                RecordedParam::SecretFromEnv(var) => format!("(secret, from ${var})"),
                RecordedParam::SecretGiven => "(secret, given with -p)".to_string(),
            };
            (name.clone(), serde_json::Value::String(value))
        })
        .collect()
}

fn said(event: &Event, step: &dyn Fn(usize) -> String) -> String {
    match event {
        Event::RunStarted { .. } => "run started".into(),
        Event::StepStarted {
            step: s, attempt, ..
        } if *attempt > 1 => {
            format!("{} started (attempt {attempt})", step(*s))
        }
        Event::StepStarted { step: s, .. } => format!("{} started", step(*s)),
        Event::StepSucceeded {
            step: s, outputs, ..
        } => match approver(outputs) {
            Some(who) => format!("{} succeeded: approved by {who}", step(*s)),
            None => format!("{} succeeded", step(*s)),
        },
        Event::StepFailed { step: s, error, .. } => format!("{} failed: {error}", step(*s)),
        Event::StepSkipped { step: s, reason } => format!("{} skipped: {reason}", step(*s)),
        Event::StepNoted { step: s, key, .. } => format!("{} noted its {key}", step(*s)),
        Event::CancelRequested { .. } => "cancel requested: running steps stopped".into(),
        Event::RunTimedOut { .. } => "its time ran out: running steps stopped".into(),
        Event::Reset { steps, .. } => format!(
            "running again: {}",
            steps
                .iter()
                .map(|s| step(*s))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Event::RunFinished { outcome, .. } => {
            format!("run finished: {}", crate::engine::outcome_word(*outcome))
        }
        Event::Approval {
            step: s,
            by,
            account,
            verdict,
            ..
        } => {
            let who = if by == account {
                by.clone()
            } else {
                format!("{by} (Unix user {account})")
            };
            match verdict {
                Verdict::Approved => format!("{} approved by {who}", step(*s)),
                Verdict::Rejected { reason } => {
                    format!("{} rejected by {who}: {reason}", step(*s))
                }
            }
        }
        Event::Imported { by, from, .. } => format!("imported for review by {by}, {from}"),
        Event::Steered { by, how, .. } => match how {
            Steering::Resumed { rerun, skip, done } => {
                let mut choices = Vec::new();
                for (word, steps) in [("--rerun", rerun), ("--skip", skip), ("--done", done)] {
                    choices.extend(steps.iter().map(|s| format!("{word} {s}")));
                }
                match choices.is_empty() {
                    true => format!("resumed by {by}"),
                    false => format!("resumed by {by} ({})", choices.join(", ")),
                }
            }
            Steering::Retried { from } => format!("retried from `{from}` by {by}"),
            Steering::Cancelled => format!("cancelled by {by}"),
        },
    }
}

fn date(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_default()
}

/// One JSON line: what cannot be written is an error, never an empty line.
fn line(value: &serde_json::Value) -> Result<String, Error> {
    serde_json::to_string(value)
        .map_err(|e| Error::Internal(format!("the history could not be written as JSON: {e}")))
}

/// `runbook export RUN [--output FILE]`.
pub fn export(state_dir: &Path, run: u64, output: Option<&Path>) -> Result<u8, Error> {
    let export = crate::session::export(state_dir, run)?;
    let mut body = serde_json::to_vec_pretty(&export)
        .map_err(|e| Error::Internal(format!("the export could not be written as JSON: {e}")))?;
    body.push(b'\n');
    match output {
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&body)
                .and_then(|()| out.flush())
                .map_err(|e| Error::Write {
                    path: "standard output".into(),
                    why: crate::error::io_reason(&e),
                })?;
        }
        Some(file) => {
            use std::io::Write;
            let fail = |e: std::io::Error| Error::Write {
                path: file.to_path_buf(),
                why: match e.kind() {
                    std::io::ErrorKind::AlreadyExists => {
                        "it is there already; an export never replaces a file: give another name"
                            .into()
                    }
                    _ => crate::error::io_reason(&e),
                },
            };
            let mut f = crate::store::private::create_new(file).map_err(fail)?;
            f.write_all(&body)
                .and_then(|()| f.sync_all())
                .map_err(fail)?;
            eprintln!(
                "run {run} exported to {} ({} events); `runbook import {}` keeps a copy for review in another state directory",
                file.display(),
                export.events.len(),
                file.display()
            );
        }
    }
    Ok(super::EXIT_OK)
}

/// `runbook import FILE`.
pub fn import(state_dir: &Path, file: &Path) -> Result<u8, Error> {
    let export = crate::session::read_export(file)?;
    let (from, events) = (export.meta.id, export.events.len());
    let run = crate::session::import(state_dir, export)?;
    say!(
        "imported run {from} ({events} events) as run {run}, a copy for review: `runbook status {run}`, `runbook logs {run}`, `runbook history {run}`"
    );
    Ok(super::EXIT_OK)
}
