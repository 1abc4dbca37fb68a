//! The PostgreSQL steps: `sql` (one statement, parameters bound),
//! `verify` with `sql`, `backup` (pg_dump, with retention) and `restore`
//! (pg_restore or psql). The connection string is a secret: it reaches the
//! client library and, without its password, the client programs' argv.

use super::log::Log;
use super::sample::{judge, Sample};
use super::scope::Scope;
use crate::actions::command::Launching;
use crate::actions::postgres::{self, DumpFormat, Query};
use crate::actions::step::{FailureKind, StepError};
use crate::compile::action::{self, Backup, Input, Restore, RestoreTarget, Sql};
use crate::compile::eval::Value;
use crate::compile::Step;
use crate::syntax::ast::Expr;
use crate::syntax::format;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// `sql`: runs the query; with `expect`, judges the result.
pub(super) async fn sql_step(
    sql: &Sql,
    step: &Step,
    scope: &Scope,
    log: &Log,
) -> Result<BTreeMap<String, String>, StepError> {
    let query = Query {
        connection: scope.text(&sql.database)?,
        sql: scope.text(&sql.query)?,
        params: scope.list(sql.params.as_ref())?,
        timeout: step.timeout,
    };
    let expect = sql.expect.as_ref();
    let sample = sql_sample(&query, &sql.query, expect, log).await?;
    if expect.is_some() {
        judge(expect, scope, &sample)?;
    }
    Ok(sample.outputs)
}

/// A value with secrets hidden; one cut at `VALUE_CAP` also hides what may
/// be the beginning of a secret at the cut.
fn scrub_value(log: &Log, text: &str) -> String {
    match text.rfind("… (cut: the value is ") {
        Some(at) => format!("{}{}", log.scrub_cut(&text[..at]), log.scrub(&text[at..])),
        None => log.scrub(text),
    }
}

/// Runs one statement and offers `rows` and `value` (the first column of
/// the first row) to `expect`.
pub(super) async fn sql_sample(
    query: &Query,
    written: &Input,
    expect: Option<&Expr>,
    log: &Log,
) -> Result<Sample, StepError> {
    let result = postgres::query(query).await.map_err(|e| {
        // What the server refused is the query; anything else is the
        // database's (the step's subject).
        let failure = StepError::from(e);
        match failure.kind {
            FailureKind::Rejected => failure.at(written.expr.span),
            _ => failure,
        }
    })?;
    let shown = match &result.value {
        Some(text) => scrub_value(log, text),
        None => "NULL".to_string(),
    };
    log.line(
        false,
        &format!("{} row(s); first value: {}\n", result.rows, shown),
    );
    let mut names = BTreeMap::from([("rows".to_string(), Value::Int(result.rows as i64))]);
    let mut outputs = BTreeMap::from([("rows".to_string(), result.rows.to_string())]);
    match &result.value {
        Some(text) => {
            let column = result.types.first().map(String::as_str).unwrap_or_default();
            names.insert("value".into(), typed(text, column));
            outputs.insert("value".into(), scrub_value(log, text));
        }
        None => {
            if let Some(expect) = expect.filter(|e| mentions_value(&format::expr(e))) {
                let why = if result.rows == 0 {
                    "the query returned no rows, so there is no `value` to check"
                } else {
                    "the query's first value is NULL, so there is no `value` to check"
                };
                return Err(StepError::new(FailureKind::Expectation, why).at(expect.span));
            }
        }
    }
    Ok(Sample {
        names,
        json: None,
        outputs,
        default: Err("a `sql` check needs `expect`".into()),
    })
}

fn mentions_value(written: &str) -> bool {
    written
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == "value")
}

/// A value as the language compares it, by its column's type: a boolean,
/// a whole number, a number, or text (a text column holding `0042` stays
/// the text `0042`).
fn typed(text: &str, column: &str) -> Value {
    let number = || text.parse::<f64>().ok().filter(|x| x.is_finite());
    match column {
        "bool" => Value::Bool(text == "true"),
        "int2" | "int4" | "int8" | "oid" => text
            .parse::<i64>()
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Str(text.to_string())),
        "float4" | "float8" | "numeric" => number()
            .map(Value::Float)
            .unwrap_or_else(|| Value::Str(text.to_string())),
        _ => Value::Str(text.to_string()),
    }
}

/// Makes the backup directory if it is missing (private), and refuses one
/// that another user owns or can write, or under a parent they can: they
/// could read the dumps, or replace them. Done off the runtime's thread.
async fn backup_dir(dir: &std::path::Path) -> Result<(), String> {
    let owned = dir.to_path_buf();
    crate::actions::files::off_thread(move || Ok(crate::store::private::own_dir(&owned)))
        .await
        .map_err(|e| crate::error::io_reason(&e))?
}

/// `backup`: pg_dump into the directory, then the database's backups
/// older than `keep` are deleted. Output `file`: the new dump.
pub(super) async fn backup_step(
    backup: &Backup,
    scope: &Scope,
    log: &Log,
) -> Result<BTreeMap<String, String>, StepError> {
    let connection = scope.text(&backup.postgres)?;
    let dir = scope.path(scope.text(&backup.to)?);
    backup_dir(&dir)
        .await
        .map_err(|why| StepError::from(why).at(backup.to.expr.span))?;
    let keep = match &backup.keep {
        Some(keep) => Some(Duration::from_millis(scope.millis(keep)?)),
        None => None,
    };
    let format = match backup.format {
        action::DumpFormat::Plain => DumpFormat::Plain,
        action::DumpFormat::Custom => DumpFormat::Custom,
    };
    let file = postgres::backup(
        &connection,
        &dir,
        format,
        keep,
        SystemTime::now(),
        Launching {
            notes: log.step_notes(),
            inherit: scope.inherit(),
        },
        |s, l| log.line(s == crate::actions::command::Stream::Stderr, l),
    )
    .await
    .map_err(StepError::from)?;
    Ok(BTreeMap::from([(
        "file".to_string(),
        file.display().to_string(),
    )]))
}

/// `restore` into PostgreSQL (pg_restore for a custom-format dump, psql for
/// plain SQL) or into Redis (every key of an RDB snapshot). File restores
/// do not run yet.
pub(super) async fn restore_step(
    restore: &Restore,
    scope: &Scope,
    log: &Log,
) -> Result<BTreeMap<String, String>, StepError> {
    let from = scope.path(scope.text(&restore.from)?);
    // A dump that is missing or is not one is the `from` line's.
    let about_from = |e: StepError| match e.kind {
        FailureKind::NotFound | FailureKind::Other => e.at(restore.from.expr.span),
        _ => e,
    };
    let (connection, jobs) = match &restore.target {
        RestoreTarget::Redis(url) => {
            let url = scope.text(url)?;
            let keys = crate::actions::redis::restore(&url, &from, |s, l| {
                log.line(s == crate::actions::command::Stream::Stderr, l)
            })
            .await
            .map_err(|e| about_from(StepError::from(e)))?;
            return Ok(BTreeMap::from([("keys".to_string(), keys.to_string())]));
        }
        RestoreTarget::Files(_) => {
            return Err("only `restore` into `postgres` or `redis` runs so far".into())
        }
        RestoreTarget::Postgres { connection, jobs } => (connection, jobs),
    };
    let connection = scope.text(connection)?;
    let jobs = match jobs {
        Some(jobs) => Some(
            u32::try_from(scope.int(jobs)?)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    super::scope::unusable(jobs, "`jobs` must be a whole number from 1".into())
                })?,
        ),
        None => None,
    };
    postgres::restore(
        &connection,
        &from,
        jobs,
        Launching {
            notes: log.step_notes(),
            inherit: scope.inherit(),
        },
        |s, l| log.line(s == crate::actions::command::Stream::Stderr, l),
    )
    .await
    .map_err(|e| match e {
        postgres::PgError::DumpMissing { .. }
        | postgres::PgError::NotADump { .. }
        | postgres::PgError::File { .. } => about_from(StepError::from(e)),
        e => StepError::from(e),
    })?;
    Ok(BTreeMap::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_typed_by_its_column() {
        assert_eq!(typed("true", "bool"), Value::Bool(true));
        assert_eq!(typed("0", "int8"), Value::Int(0));
        assert_eq!(typed("-12", "int4"), Value::Int(-12));
        assert_eq!(typed("0.25", "float8"), Value::Float(0.25));
        assert_eq!(typed("10.50", "numeric"), Value::Float(10.5));
        assert_eq!(typed("NaN", "float8"), Value::Str("NaN".into()));
        assert_eq!(typed("0042", "text"), Value::Str("0042".into()));
        assert_eq!(typed("true", "varchar"), Value::Str("true".into()));
        assert_eq!(typed("primary", "name"), Value::Str("primary".into()));
    }
}
