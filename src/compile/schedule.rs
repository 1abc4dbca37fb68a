//! Time for the scheduler: cron expressions (croner) and time zones
//! (chrono-tz) checked, the next fire, the shortest time between two fires,
//! and blackout periods. `blackouts.rs` reads the settings into these.

use chrono::offset::LocalResult;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use croner::Cron;
use std::str::FromStr;
use std::time::Duration;

/// `Err` with the end of a sentence that starts with the expression.
pub fn check_cron(expression: &str) -> Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "is not a cron expression: it has {fields} fields, not 5 (or 6, seconds first)"
        ));
    }
    let cron = Cron::from_str(expression).map_err(|e| format!("is not a cron expression: {e}"))?;
    // A fixed starting point keeps `check` deterministic; eight years cover every leap day.
    let (Some(start), Some(limit)) = (
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single(),
        Utc.with_ymd_and_hms(2032, 1, 1, 0, 0, 0).single(),
    ) else {
        return Ok(cron);
    };
    match cron.find_next_occurrence(&start, true) {
        Ok(next) if next < limit => Ok(cron),
        _ => Err("never fires: no date matches it".to_string()),
    }
}

/// `Err` with a help line when the zone is not in the IANA database.
pub fn check_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name).map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
        super::names::did_you_mean(name, names, || {
            "use an IANA time zone name such as \"UTC\" or \"Europe/Amsterdam\"".into()
        })
    })
}

/// The first fire of `cron` in `timezone` strictly after `after`. Daylight
/// saving follows croner (OCPS, as Vixie cron): a fixed time of day that
/// does not exist that day fires at the first instant after the gap; one
/// that occurs twice fires once, at the first. An interval (`*/15`) keeps
/// its pace in wall-clock time: it skips the gap and runs through both
/// passes of a repeated hour. `schedule/tests.rs` pins this down.
pub fn next_fire(cron: &str, timezone: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = Cron::from_str(cron).ok()?;
    let tz = chrono_tz::Tz::from_str(timezone).ok()?;
    cron.find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// How many fires `shortest_gap` looks at, at most: enough for two years of
/// a job every few hours; a denser job shows its shortest gap much sooner.
const GAP_FIRES: usize = 5_000;

/// The shortest real time between two consecutive fires over two years from
/// a fixed instant (so that `check` gives the same answer every day), daylight
/// saving changes included. `None` if the expression or zone is bad or it
/// fires fewer than twice in that time.
pub fn shortest_gap(cron: &str, timezone: &str) -> Option<Duration> {
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single()?;
    let limit = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single()?;
    let mut previous = next_fire(cron, timezone, start)?;
    let mut shortest: Option<chrono::Duration> = None;
    for _ in 0..GAP_FIRES {
        let Some(next) = next_fire(cron, timezone, previous) else {
            break;
        };
        if next >= limit {
            break;
        }
        let gap = next - previous;
        shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
        previous = next;
    }
    shortest?.to_std().ok()
}

/// A local date or date and time as a blackout writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Local {
    /// `2026-12-24`: the whole day, from its start.
    Day(NaiveDate),
    /// `2026-12-24 18:00`.
    Time(NaiveDateTime),
}

impl Local {
    pub fn start(self) -> NaiveDateTime {
        match self {
            Local::Day(day) => day.and_time(chrono::NaiveTime::MIN),
            Local::Time(time) => time,
        }
    }
}

/// Whether text is meant as a date rather than a cron expression: four
/// digits and a hyphen, which no cron field starts with; or at most two
/// words of digits and date or time separators (`24-12-2026`, `2026/12/24
/// 18:00`), since a cron expression has five.
pub fn looks_like_date(text: &str) -> bool {
    let b = text.trim().as_bytes();
    let year_first = b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-';
    let separators = [b'-', b'/', b'.', b':'];
    let date_like = text.split_whitespace().count() <= 2
        && b.iter().any(|c| separators.contains(c))
        && b.iter()
            .all(|c| c.is_ascii_digit() || *c == b' ' || separators.contains(c));
    year_first || date_like
}

/// `YYYY-MM-DD` or `YYYY-MM-DD HH:MM`, exactly; `Err` with the end of a
/// sentence that starts with the text.
pub fn parse_local(text: &str) -> Result<Local, String> {
    let shape = |pattern: &str| {
        text.len() == pattern.len()
            && text.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
                b'9' => c.is_ascii_digit(),
                other => c == other,
            })
    };
    if shape("9999-99-99") {
        return NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(Local::Day)
            .map_err(|_| "is not a day of the calendar".into());
    }
    if shape("9999-99-99 99:99") {
        return NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M")
            .map(Local::Time)
            .map_err(|_| "is not a day and time of the calendar".into());
    }
    Err("is not a date: write YYYY-MM-DD or YYYY-MM-DD HH:MM".into())
}

/// A local time as an instant. One the clocks skip stands for the first
/// instant after the gap (as croner fires a fixed time that falls there);
/// one they repeat, for its first occurrence.
pub fn instant(tz: chrono_tz::Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let resolve = |t: NaiveDateTime| match tz.from_local_datetime(&t) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
        LocalResult::None => None,
    };
    if let Some(t) = resolve(local) {
        return Some(t);
    }
    // In a gap: the first local minute that exists, then back by seconds,
    // since some historical offsets are not whole minutes. No gap is longer
    // than a day (Samoa skipped 30 December 2011).
    let minute = chrono::Duration::minutes(1);
    let second = chrono::Duration::seconds(1);
    let mut after = local;
    for _ in 0..=24 * 60 {
        after += minute;
        if resolve(after).is_some() {
            let mut first = after;
            while resolve(first - second).is_some() && first - second > local {
                first -= second;
            }
            return resolve(first);
        }
    }
    None
}

/// How many overlapping periods of a recurring blackout `Blackout::ends`
/// follows before it gives the end it has reached.
const OVERLAPPING: usize = 1_000;

/// A period in which the scheduler starts nothing: `blackout "2026-12-24"
/// until "2027-01-02"`, or a recurring one, `blackout "0 17 * * FRI" for 63h`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Blackout {
    /// As written, for messages: `"2026-12-24" until "2027-01-02"`.
    pub text: String,
    pub timezone: String,
    pub period: Period,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Period {
    /// From one local time until another (exclusive).
    Once {
        from: chrono::NaiveDateTime,
        until: chrono::NaiveDateTime,
    },
    /// From each fire of a cron expression, for a duration.
    Every {
        cron: String,
        lasts: std::time::Duration,
    },
}

impl Blackout {
    /// Whether `at` falls inside the period.
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.ends(at).is_some()
    }

    /// When the period that covers `at` ends (the first instant free of
    /// it; recurring periods that overlap count as one, up to a thousand of
    /// them), or `None` if `at` is outside it. Local times the clocks skip or
    /// repeat are read as `instant` says; a recurring period lasts its
    /// duration in real time, so `for 63h` across a change of the clocks
    /// ends an hour earlier or later on the wall clock.
    pub fn ends(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = chrono_tz::Tz::from_str(&self.timezone).ok()?;
        match &self.period {
            Period::Once { from, until } => {
                let (from, until) = (instant(tz, *from)?, instant(tz, *until)?);
                (from <= at && at < until).then_some(until)
            }
            Period::Every { cron, lasts } => {
                let cron = Cron::from_str(cron).ok()?;
                let lasts = chrono::Duration::from_std(*lasts).ok()?;
                // Every period lasts as long, so of the starts at or before
                // `at`, the latest ends last: it alone decides whether `at` is covered.
                let mut start = cron
                    .find_previous_occurrence(&at.with_timezone(&tz), true)
                    .ok()?;
                let mut end = start.with_timezone(&Utc) + lasts;
                if at >= end {
                    return None;
                }
                // A period that starts before this one ends carries it on.
                for _ in 0..OVERLAPPING {
                    match cron.find_next_occurrence(&start, false) {
                        Ok(next) if next.with_timezone(&Utc) < end => {
                            end = next.with_timezone(&Utc) + lasts;
                            start = next;
                        }
                        _ => break,
                    }
                }
                Some(end)
            }
        }
    }
}

#[cfg(test)]
mod tests;
