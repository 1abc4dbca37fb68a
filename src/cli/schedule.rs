//! `runbook schedule DIR`: what `serve DIR` would do: each scheduled
//! runbook's next fire times (those a blackout skips are marked), its
//! window, overlap policy and locks, its recent history when the
//! scheduler's state can be read, and every file that does not check.

use crate::compile::eval::format_duration;
use crate::compile::Overlap;
use crate::error::Error;
use crate::scheduler::{ms, Entry};
use chrono::{DateTime, Utc};
use std::fmt::Write;
use std::path::Path;
use std::str::FromStr;

/// `present`: whether the scheduler's state directory `state` was there
/// when it was checked (one made since is not read).
pub fn run(
    dir: &Path,
    state: &Path,
    present: bool,
    count: usize,
    from: Option<&str>,
) -> Result<u8, Error> {
    let now = match from {
        None => Utc::now(),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                Error::Usage(format!(
                    "--from {text} is not a time: {e}; write it as RFC 3339, e.g. 2027-03-27T00:00:00Z"
                ))
            })?,
    };
    let seen = crate::serve::overview(dir, state, present)?;
    let mut out = String::new();
    if seen.scheduled.is_empty() {
        let _ = writeln!(out, "no runbook in {} has a schedule", dir.display());
    }
    for scheduled in &seen.scheduled {
        describe(&mut out, &scheduled.entry, now, count);
        for record in &scheduled.history {
            let _ = writeln!(out, "  {:<10} {}", "history", record.sentence());
        }
        let _ = writeln!(
            out,
            "  {:<10} runbook status --state {}",
            "runs",
            scheduled.runs.display()
        );
        out.push('\n');
    }
    if let Some(why) = &seen.no_history {
        let _ = writeln!(out, "history: {why}; the scheduler's log has it\n");
    }
    print!("{out}");
    // What the running server cannot schedule, as it sees it: a secret
    // set here may be missing in its environment.
    let server: Vec<&String> = seen
        .server_problems
        .iter()
        .flatten()
        .filter(|why| !seen.problems.contains(why))
        .collect();
    if seen.problems.is_empty() && server.is_empty() {
        return Ok(super::EXIT_OK);
    }
    for why in &seen.problems {
        eprintln!("{}\n", super::view::printable(why));
    }
    for why in server {
        eprintln!(
            "the running server cannot schedule: {}\n",
            super::view::printable(why)
        );
    }
    Ok(super::EXIT_DIAGNOSTICS)
}

/// The runbook's schedule and its next `count` fires after `now`.
pub fn describe(out: &mut String, entry: &Entry, now: DateTime<Utc>, count: usize) {
    let s = &entry.schedule;
    let _ = writeln!(out, "{} ({})", entry.name, entry.file.display());
    let mut line = format!("\"{}\" {}: {}", s.cron, s.timezone, s.description);
    if let Some(w) = s.window {
        let _ = write!(line, "; window {}", format_duration(w.as_millis() as u64));
    }
    let overlap = match s.overlap {
        Overlap::Skip => "skip",
        Overlap::Queue => "queue",
        Overlap::Cancel => "cancel",
    };
    let _ = write!(line, "; overlap {overlap}");
    if let Some(c) = s.catch_up {
        let _ = write!(line, "; catch-up {}", format_duration(c.as_millis() as u64));
    }
    let _ = writeln!(out, "  {:<10} {line}", "schedule");
    if !entry.locks.is_empty() {
        let _ = writeln!(out, "  {:<10} {}", "locks", entry.locks.join(", "));
    }
    for b in &entry.blackouts {
        let _ = writeln!(out, "  {:<10} {} ({})", "blackout", b.text, b.timezone);
    }
    let tz = chrono_tz::Tz::from_str(&s.timezone).ok();
    let mut at = now;
    for i in 0..count {
        let Some(fire) = s.next_fire(at) else {
            let _ = writeln!(
                out,
                "  {:<10} never again",
                if i == 0 { "next" } else { "" }
            );
            break;
        };
        let mut text = crate::scheduler::short_time(ms(fire));
        if let Some(tz) = tz.filter(|tz| tz.name() != "UTC") {
            let _ = write!(
                text,
                " ({} {})",
                fire.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
                tz.name()
            );
        }
        if let Some(b) = entry.blackouts.iter().find(|b| b.covers(fire)) {
            let _ = write!(text, ", skipped: blackout {}", b.text);
        }
        let _ = writeln!(out, "  {:<10} {text}", if i == 0 { "next" } else { "" });
        at = fire;
    }
}
