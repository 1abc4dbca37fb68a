//! `backup` and `restore` steps: they run pg_dump, pg_restore and psql,
//! argv only, in their own process group, their output streamed by line.
//! The password goes to the programs in `PGPASSWORD`, never on a command
//! line other users can read in `ps`. Files are touched with `std::fs`:
//! a few small local operations, not worth a thread each.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{PgError, Target};
use crate::actions::command::{self, CommandSpec, Ended, Launching, Stream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpKind {
    /// pg_dump's custom format, for pg_restore.
    Custom,
    /// SQL text, for psql.
    Plain,
}

/// The format `backup` writes.
pub type DumpFormat = DumpKind;

/// Tells a dump's format from its first bytes.
pub async fn dump_kind(path: &Path) -> Result<DumpKind, PgError> {
    // A pipe or a device is refused; a hung mount stalls only this step.
    let head = crate::actions::files::read_at_most(path, 4096)
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                PgError::DumpMissing {
                    path: path.to_path_buf(),
                }
            } else {
                file_error(path, &e)
            }
        })?;
    if head.starts_with(b"PGDMP") {
        return Ok(DumpKind::Custom);
    }
    if looks_like_sql(&head) {
        return Ok(DumpKind::Plain);
    }
    Err(PgError::NotADump {
        path: path.to_path_buf(),
    })
}

/// UTF-8 (a character cut at the end of the sample is fine) whose first
/// line with anything on it is a comment or a statement pg_dump starts with.
fn looks_like_sql(head: &[u8]) -> bool {
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    let Some(first) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return false;
    };
    let upper = first.to_ascii_uppercase();
    ["--", "SET ", "CREATE ", "BEGIN", "SELECT ", "\\"]
        .iter()
        .any(|start| upper.starts_with(start))
}

/// Restores a dump into the database of `connection`: pg_restore for the
/// custom format (`jobs` in parallel), psql in one transaction for SQL
/// (`jobs` does not apply: psql runs a script in order).
pub async fn restore(
    connection: &str,
    path: &Path,
    jobs: Option<u32>,
    launching: Launching,
    on_line: impl FnMut(Stream, &str),
) -> Result<(), PgError> {
    let target = Target::parse(connection)?;
    let dbname = libpq_string(&target);
    let file = path.display().to_string();
    let (program, mut args) = match dump_kind(path).await? {
        DumpKind::Custom => {
            let mut args: Vec<String> = vec![
                "--no-owner".into(),
                "--exit-on-error".into(),
                "--verbose".into(),
            ];
            if let Some(n) = jobs {
                args.extend(["--jobs".into(), n.to_string()]);
            }
            ("pg_restore", args)
        }
        DumpKind::Plain => (
            "psql",
            vec![
                "--set".into(),
                "ON_ERROR_STOP=1".into(),
                "--single-transaction".into(),
                "--file".into(),
                file.clone(),
            ],
        ),
    };
    args.extend(["--dbname".into(), dbname]);
    if program == "pg_restore" {
        args.push(file);
    }
    run_program(&target, program, args, launching, on_line).await
}

/// Dumps the database of `connection` to `DIR/DBNAME-YYYYMMDDTHHMMSSZ.dump`
/// (or `.sql`), then deletes that database's backups of the same format in
/// DIR whose name says they are older than `keep`. Returns the new file.
pub async fn backup(
    connection: &str,
    dir: &Path,
    format: DumpFormat,
    keep: Option<Duration>,
    now: SystemTime,
    launching: Launching,
    on_line: impl FnMut(Stream, &str),
) -> Result<PathBuf, PgError> {
    let target = Target::parse(connection)?;
    let base = file_stem(&target.dbname());
    let ext = extension(format);
    let stamp = chrono::DateTime::<chrono::Utc>::from(now).format(STAMP);
    let name = format!("{base}-{stamp}.{ext}");
    let path = dir.join(&name);
    // Written under another name first: a dump that failed halfway never
    // looks like a good one, and never matches the pattern retention reads.
    // The file is made here, new and private, under a name no one can
    // guess, so pg_dump never writes into a file or through a link someone
    // put there first (and the directory was checked: `backup_dir`). Off
    // the runtime's thread: the directory may be on a network mount.
    let partial = dir.join(format!(
        ".{name}.{:016x}.partial",
        crate::store::private::random()
    ));
    let (there, new) = (path.clone(), partial.clone());
    let made = crate::actions::files::off_thread(move || {
        if there.exists() {
            return Ok(false);
        }
        crate::store::private::create_new(&new).map(|_| true)
    })
    .await
    .map_err(|e| file_error(&partial, &e))?;
    if !made {
        return Err(PgError::File {
            path,
            why: "a backup of that name already exists".into(),
        });
    }
    let format_arg = match format {
        DumpKind::Custom => "--format=custom",
        DumpKind::Plain => "--format=plain",
    };
    let args = vec![
        format_arg.to_string(),
        "--no-owner".into(),
        "--verbose".into(),
        "--file".into(),
        partial.display().to_string(),
        "--dbname".into(),
        libpq_string(&target),
    ];
    let dumped = run_program(&target, "pg_dump", args, launching, on_line).await;
    let (from, to, failed) = (partial.clone(), path.clone(), dumped.is_err());
    let renamed = crate::actions::files::off_thread(move || {
        if failed {
            let _ = std::fs::remove_file(&from);
            return Ok(());
        }
        std::fs::rename(&from, &to)
    })
    .await;
    dumped?;
    renamed.map_err(|e| file_error(&path, &e))?;
    if let Some(keep) = keep {
        let owned = dir.to_path_buf();
        crate::actions::files::off_thread(move || Ok(prune(&owned, &base, ext, now, keep)))
            .await
            .map_err(|e| file_error(dir, &e))??;
    }
    Ok(path)
}

const STAMP: &str = "%Y%m%dT%H%M%SZ";

fn extension(format: DumpFormat) -> &'static str {
    match format {
        DumpKind::Custom => "dump",
        DumpKind::Plain => "sql",
    }
}

/// A database name as part of a file name: anything but letters, digits,
/// `_`, `-` and `.` becomes `_`.
fn file_stem(dbname: &str) -> String {
    dbname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Deletes `BASE-STAMP.EXT` files in `dir` whose stamp is older than
/// `now - keep`. Other files, whatever their age, stay.
fn prune(
    dir: &Path,
    base: &str,
    ext: &str,
    now: SystemTime,
    keep: Duration,
) -> Result<(), PgError> {
    // A `keep` longer than the clock goes back keeps everything.
    let Some(cutoff) = now.checked_sub(keep) else {
        return Ok(());
    };
    let cutoff = chrono::DateTime::<chrono::Utc>::from(cutoff);
    let entries = std::fs::read_dir(dir).map_err(|e| file_error(dir, &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| file_error(dir, &e))?;
        let name = entry.file_name();
        let Some(stamp) = name
            .to_str()
            .and_then(|n| n.strip_prefix(base))
            .and_then(|n| n.strip_prefix('-'))
            .and_then(|n| n.strip_suffix(ext))
            .and_then(|n| n.strip_suffix('.'))
        else {
            continue;
        };
        let Ok(taken) = chrono::NaiveDateTime::parse_from_str(stamp, STAMP) else {
            continue;
        };
        if stamp.len() == 16 && taken.and_utc() < cutoff {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| file_error(&path, &e))?;
        }
    }
    Ok(())
}

/// The connection as libpq `key=value` pairs without the password.
fn libpq_string(target: &Target) -> String {
    let c = &target.config;
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        pairs.push(("host", hosts.join(",")));
    }
    let addrs: Vec<String> = c.get_hostaddrs().iter().map(|a| a.to_string()).collect();
    if !addrs.is_empty() {
        pairs.push(("hostaddr", addrs.join(",")));
    }
    let ports: Vec<String> = c.get_ports().iter().map(|p| p.to_string()).collect();
    if !ports.is_empty() {
        pairs.push(("port", ports.join(",")));
    }
    if let Some(user) = c.get_user() {
        pairs.push(("user", user.to_string()));
    }
    pairs.push(("dbname", target.dbname()));
    if let Some(mode) = &target.sslmode {
        pairs.push(("sslmode", mode.clone()));
    }
    if let Some(t) = c.get_connect_timeout() {
        pairs.push(("connect_timeout", t.as_secs().max(1).to_string()));
    }
    if let Some(name) = c.get_application_name() {
        pairs.push(("application_name", name.to_string()));
    }
    if let Some(options) = c.get_options() {
        pairs.push(("options", options.to_string()));
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a client program; on failure, the error ends with its last lines
/// on stderr, where these programs say what went wrong.
async fn run_program(
    target: &Target,
    program: &str,
    args: Vec<String>,
    launching: Launching,
    mut on_line: impl FnMut(Stream, &str),
) -> Result<(), PgError> {
    let mut env = Vec::new();
    if let Some(password) = target.password() {
        env.push(("PGPASSWORD".to_string(), password));
    }
    let spec = CommandSpec {
        program: program.into(),
        args,
        env,
        notes: launching.notes,
        withheld: Vec::new(),
        inherit: launching.inherit,
        ..CommandSpec::default()
    };
    // The lines that say "error", else the last lines: pg_restore follows
    // its error with the whole statement that failed.
    let mut errors: VecDeque<String> = VecDeque::new();
    let mut last: VecDeque<String> = VecDeque::new();
    let result = command::run(&spec, None, 64 * 1024, |stream, line| {
        let line = target.scrub(line);
        if stream == Stream::Stderr && !line.trim().is_empty() {
            let short = line.split_whitespace().collect::<Vec<_>>().join(" ");
            if short.to_ascii_lowercase().contains("error:") {
                keep_last(&mut errors, short.clone());
            }
            keep_last(&mut last, short);
        }
        on_line(stream, &line);
    })
    .await;
    let fail = |why: String| PgError::Program {
        program: program.into(),
        target: target.name.clone(),
        why,
    };
    let ended = result.map_err(|e| fail(e.to_string()))?.ended;
    let said = Vec::from(if errors.is_empty() { last } else { errors }).join(" / ");
    let why = match ended {
        Ended::Exited(0) => return Ok(()),
        Ended::Exited(code) => format!("it exited with code {code}"),
        Ended::Signalled(signal) => format!("it was killed by signal {signal}"),
        Ended::TimedOut => "it timed out".into(),
    };
    Err(fail(if said.is_empty() {
        why
    } else {
        format!("{why}; it said: {said}")
    }))
}

fn keep_last(lines: &mut VecDeque<String>, line: String) {
    if lines.len() == 3 {
        lines.pop_front();
    }
    lines.push_back(line);
}

fn file_error(path: &Path, e: &std::io::Error) -> PgError {
    PgError::File {
        path: path.to_path_buf(),
        why: crate::error::io_reason(e),
    }
}
