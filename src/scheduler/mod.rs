//! The scheduler's decisions, pure like the engine's: given a scheduled
//! runbook, what the scheduler remembers about it and the time, what to do
//! now (start a run, cancel one, record a skipped or missed fire). The
//! clock, the locks and the runs themselves are the caller's (`cli/serve.rs`);
//! so tests drive days of fires in microseconds with any clock they like.

mod decide;

pub use decide::{tick, Action, GRACE_MS};

use crate::compile::schedule::Blackout;
use crate::compile::{Overlap, Schedule};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Milliseconds since the Unix epoch, UTC.
pub type Ms = i64;

pub fn ms(t: DateTime<Utc>) -> Ms {
    t.timestamp_millis()
}

pub fn instant(ms: Ms) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A scheduled runbook, as loaded from its file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub file: PathBuf,
    pub schedule: Schedule,
    /// Its own blackouts and the directory's.
    pub blackouts: Vec<Blackout>,
    pub locks: Vec<String>,
    /// The source this entry was compiled from: what a run of it runs,
    /// even when the file has changed since and no longer checks.
    pub source: String,
}

impl Entry {
    pub fn overlap(&self) -> Overlap {
        self.schedule.overlap
    }
}

/// What the scheduler keeps about one runbook between checks and restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryState {
    /// The schedule `next_fire` was counted from; another one starts afresh.
    pub cron: String,
    pub timezone: String,
    pub next_fire: Option<Ms>,
    pub last_fire: Option<Ms>,
    /// The run the scheduler started and has not seen end.
    pub active: Option<Active>,
    /// A fire that is due but could not start yet.
    pub waiting: Option<Waiting>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Active {
    pub fire: Ms,
    /// Known once the run's process has created it.
    pub run: Option<u64>,
    pub pid: Option<u32>,
    /// The close of its window, if it has one.
    pub cutoff: Option<Ms>,
    /// The scheduler asked it to cancel (overlap cancel).
    pub cancelling: bool,
    /// It stopped without finishing and resuming needs a person (a step
    /// that is not safe to run twice was interrupted): why, in a sentence.
    pub needs_operator: Option<String>,
    /// The scheduler has already continued it once after it stopped
    /// unfinished; if it stops so again, a person decides.
    #[serde(default)]
    pub resumed: bool,
    /// Started as the catch-up of a missed fire.
    #[serde(default)]
    pub catch_up: bool,
    /// When its process was started (milliseconds, the system's clock):
    /// a run created since then in its store is this one.
    #[serde(default)]
    pub started_at: Option<i64>,
    /// Continuing it waits for a lock another run holds.
    #[serde(default)]
    pub blocked: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    pub fire: Ms,
    pub cutoff: Option<Ms>,
    pub catch_up: bool,
    /// Why it waits, as last recorded: recorded again only when it changes.
    pub why: String,
}

/// One line of a runbook's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub at: Ms,
    /// The fire it is about, if any.
    pub fire: Option<Ms>,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum What {
    Started {
        run: Option<u64>,
        catch_up: bool,
    },
    /// The scheduler came back and continued a run it had started.
    Resumed {
        run: u64,
    },
    Finished {
        run: Option<u64>,
        outcome: String,
    },
    /// The fire came while the scheduler ran, and did not start: why.
    Skipped {
        why: String,
    },
    /// The fire came while the scheduler was not running.
    Missed {
        why: String,
    },
    Waiting {
        why: String,
    },
    Cancelling {
        run: Option<u64>,
        why: String,
    },
    NeedsOperator {
        run: Option<u64>,
        why: String,
    },
}

impl Record {
    /// One line for the log and for `runbook schedule`.
    pub fn sentence(&self) -> String {
        let fire = self
            .fire
            .map(|f| format!("the {} fire", short_time(f)))
            .unwrap_or_else(|| "the runbook".into());
        let run = |r: &Option<u64>| r.map(|r| format!("run {r}")).unwrap_or("a run".into());
        match &self.what {
            What::Started { run: r, catch_up } => format!(
                "{fire}: started {}{}",
                run(r),
                if *catch_up { " (catching up)" } else { "" }
            ),
            What::Resumed { run } => format!("{fire}: resumed run {run}"),
            What::Finished { run: r, outcome } => format!("{fire}: {} {outcome}", run(r)),
            What::Skipped { why } => format!("{fire}: skipped: {why}"),
            What::Missed { why } => format!("{fire}: missed: {why}"),
            What::Waiting { why } => format!("{fire}: waiting: {why}"),
            What::Cancelling { run: r, why } => format!("{fire}: cancelling {}: {why}", run(r)),
            What::NeedsOperator { run: r, why } => {
                format!("{fire}: {} needs an operator: {why}", run(r))
            }
        }
    }
}

/// `2026-11-28 02:00 UTC`: how the log names a moment.
pub fn short_time(ms: Ms) -> String {
    instant(ms).format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
