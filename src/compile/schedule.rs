//! Checking a runbook's `schedule`: the cron expression parses and fires, the
//! time zone exists. The scheduler that acts on them comes later.

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use std::str::FromStr;

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
/// passes of a repeated hour.
pub fn next_fire(cron: &str, timezone: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = Cron::from_str(cron).ok()?;
    let tz = chrono_tz::Tz::from_str(timezone).ok()?;
    cron.find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A period in which the scheduler starts nothing: `blackout "2026-12-24"
/// until "2027-01-02"`, or a recurring one, `blackout "0 17 * * FRI" for 63h`.
#[derive(Debug, Clone, PartialEq)]
pub struct Blackout {
    /// As written, for messages: `"2026-12-24" until "2027-01-02"`.
    pub text: String,
    pub timezone: String,
    pub period: Period,
}

#[derive(Debug, Clone, PartialEq)]
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
        let Ok(tz) = chrono_tz::Tz::from_str(&self.timezone) else {
            return false;
        };
        match &self.period {
            Period::Once { from, until } => {
                let local = |t: &chrono::NaiveDateTime| tz.from_local_datetime(t).earliest();
                match (local(from), local(until)) {
                    (Some(from), Some(until)) => from <= at && at < until,
                    _ => false,
                }
            }
            Period::Every { cron, lasts } => {
                let Ok(cron) = Cron::from_str(cron) else {
                    return false;
                };
                let Ok(lasts) = chrono::Duration::from_std(*lasts) else {
                    return false;
                };
                match cron.find_previous_occurrence(&at.with_timezone(&tz), true) {
                    Ok(start) => at < start.with_timezone(&Utc) + lasts,
                    Err(_) => false,
                }
            }
        }
    }
}

/// Placeholder until the compile side lands (branch sched-compile).
pub fn directory_blackouts(
    _source: &str,
) -> Result<Vec<Blackout>, Vec<crate::diagnostic::Diagnostic>> {
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions_are_checked() {
        assert!(check_cron("0 2 * * *").is_ok());
        assert!(check_cron("0 0 29 2 *").is_ok(), "leap days fire");
        assert_eq!(
            check_cron("0 0 30 2 *").err().as_deref(),
            Some("never fires: no date matches it")
        );
        assert!(check_cron("61 * * * *")
            .unwrap_err()
            .starts_with("is not a cron expression"));
        assert_eq!(
            check_cron("* *").unwrap_err(),
            "is not a cron expression: it has 2 fields, not 5 (or 6, seconds first)"
        );
    }

    #[test]
    fn time_zones_are_checked_with_a_suggestion() {
        assert!(check_timezone("Europe/Amsterdam").is_ok());
        assert_eq!(
            check_timezone("Europe/Amsterdm").unwrap_err(),
            "did you mean `Europe/Amsterdam`?"
        );
    }
}
