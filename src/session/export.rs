//! A run exported (`runbook export RUN`) as one JSON document: its source,
//! its parameters as recorded (secrets only as where they came from), every
//! event, and what each attempt printed as the journal keeps it (bounded
//! per attempt); and imported (`runbook import FILE`) into another state
//! directory as a new run, a copy for review: `status`, `logs` and
//! `history` read it; nothing resumes, retries or approves it there.

use super::call::ask_or_open;
use super::open::{open_or_owner_to_write, plan_of, store_error};
use super::records::unexpected;
use super::wire::{Answer, Request};
use crate::engine::{Event, RunId, RunMeta, StepLog};
use crate::error::Error;
use crate::store::RunStore;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// What the document says it is: a reader of a later format refuses it.
pub const FORMAT: &str = "runbook-export/1";

/// The most an export may weigh when it is imported.
pub const IMPORT_LIMIT: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Export {
    pub format: String,
    pub exported_at: u64,
    /// The account that exported it.
    pub exported_by: String,
    /// The state directory it was exported from.
    pub from: String,
    pub meta: RunMeta,
    pub events: Vec<Event>,
    pub logs: Vec<ExportedLog>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedLog {
    pub step: usize,
    pub attempt: u32,
    pub log: StepLog,
}

/// Run `run` of `state_dir`, exported: from the process that holds the
/// store, or from the store.
pub fn export(state_dir: &Path, run: u64) -> Result<Export, Error> {
    super::call::ask_or(
        state_dir,
        run,
        &Request::Export { run },
        Duration::from_secs(60),
        |answer| match answer {
            Answer::Exported(export) => Ok(*export),
            other => Err(unexpected(other)),
        },
        |store| export_in(state_dir, &*store, run),
        &mut || {},
    )
}

pub(super) fn export_in(state_dir: &Path, store: &dyn RunStore, run: u64) -> Result<Export, Error> {
    let meta = store.run(RunId(run)).map_err(store_error)?;
    let plan = plan_of(&meta)?;
    let events = store.events(meta.id).map_err(store_error)?;
    let mut logs = Vec::new();
    for step in &plan.steps {
        for (attempt, log) in store.logs(meta.id, step.id.0).map_err(store_error)? {
            logs.push(ExportedLog {
                step: step.id.0,
                attempt,
                log,
            });
        }
    }
    Ok(Export {
        format: FORMAT.into(),
        exported_at: super::Clock::system().now(),
        exported_by: crate::store::private::this_account(),
        from: std::fs::canonicalize(state_dir)
            .unwrap_or_else(|_| state_dir.to_path_buf())
            .display()
            .to_string(),
        meta,
        events,
        logs,
    })
}

/// Reads an export from `file`, refusing what is not one in one sentence.
pub fn read_export(file: &Path) -> Result<Export, Error> {
    let shown = file.display();
    let bytes = read_plain(file, IMPORT_LIMIT)
        .map_err(|why| Error::Usage(format!("cannot read {shown}: {why}")))?;
    let not_one = |why: String| {
        Error::Usage(format!(
            "{shown} is not a runbook export ({why}); `runbook export RUN` makes one"
        ))
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| not_one(e.to_string()))?;
    match value.get("format").and_then(serde_json::Value::as_str) {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(Error::Usage(format!(
                "{shown} is a `{other}` document; this runbook imports `{FORMAT}` (is it from a newer runbook?)"
            )))
        }
        None => return Err(not_one("it says no `format`".into())),
    }
    serde_json::from_value(value).map_err(|e| not_one(e.to_string()))
}

/// A plain file of at most `limit` bytes (a pipe or a device is refused,
/// never waited for).
fn read_plain(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| crate::error::io_reason(&e))?;
    let meta = file.metadata().map_err(|e| crate::error::io_reason(&e))?;
    if !meta.is_file() {
        return Err("it is not a plain file".into());
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| crate::error::io_reason(&e))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "it is larger than the {limit} bytes an export may be"
        ));
    }
    Ok(bytes)
}

/// Imports `export` into `state_dir` as a new run: through the process that
/// holds the store, or into the store (made if missing). Its number.
pub fn import(state_dir: &Path, export: Export) -> Result<u64, Error> {
    let request = Request::Import(Box::new(export));
    let Request::Import(export) = &request else {
        return Err(Error::Internal("an import lost its document".into()));
    };
    ask_or_open(
        state_dir,
        &request,
        Duration::from_secs(60),
        |answer| match answer {
            Answer::Imported { run } => Ok(run),
            other => Err(unexpected(other)),
        },
        || open_or_owner_to_write(state_dir),
        |store| import_in(&*store, export, &crate::store::private::this_account()),
        &mut || {},
    )
}

/// Writes the copy: checked whole before anything is written (its runbook
/// compiles, every event and log names a step of it), then the run, its
/// events, its logs, and the record of the import.
pub(super) fn import_in(store: &dyn RunStore, export: &Export, by: &str) -> Result<u64, Error> {
    let damaged = |why: String| Error::Usage(format!("the export cannot be imported: {why}"));
    let plan = plan_of(&export.meta)
        .map_err(|_| damaged("its runbook does not check with this version of runbook".into()))?;
    let steps = plan.steps.len();
    let step_of = |e: &Event| match e {
        Event::StepStarted { step, .. }
        | Event::StepSucceeded { step, .. }
        | Event::StepFailed { step, .. }
        | Event::StepSkipped { step, .. }
        | Event::StepNoted { step, .. }
        | Event::Approval { step, .. } => Some(*step),
        _ => None,
    };
    if let Some(bad) = export
        .events
        .iter()
        .filter_map(step_of)
        .chain(export.logs.iter().map(|l| l.step))
        .find(|s| *s >= steps)
    {
        return Err(damaged(format!(
            "it names step {bad} of a runbook of {steps} steps"
        )));
    }
    let meta = &export.meta;
    let created = store
        .create_run(
            &meta.file,
            &meta.source,
            meta.params.clone(),
            meta.created_at,
            None,
            meta.started_by.clone(),
        )
        .map_err(store_error)?;
    for event in &export.events {
        store
            .append_unsynced(created.id, event)
            .map_err(store_error)?;
    }
    for l in &export.logs {
        store
            .put_log(created.id, l.step, l.attempt, &l.log)
            .map_err(store_error)?;
    }
    let when = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(export.exported_at as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    let imported = Event::Imported {
        at: super::Clock::system().now(),
        by: by.to_string(),
        from: format!(
            "from run {} of {}, exported by {} at {when}",
            meta.id, export.from, export.exported_by
        ),
    };
    store.append(created.id, &imported).map_err(store_error)?;
    Ok(created.id.0)
}
