//! Checking a runbook's `schedule`: the cron expression parses and fires, the
//! time zone exists. The scheduler that acts on them comes later.

use chrono::{TimeZone, Utc};
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
