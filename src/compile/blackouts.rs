//! The settings only the scheduler reads besides `schedule`: `blackout`
//! periods and `lock` names; and a directory's `blackouts.runbook`, which
//! holds blackouts for every runbook there.

use super::schedule::{self, Blackout, Local, Period};
use super::Compiler;
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::ast::{self, Expr, Item};
use std::time::Duration;

/// The longest a blackout may last: a year, with its leap day.
const LONGEST: Duration = Duration::from_secs(366 * 86_400);

/// What a lock name may be: it names a file of the scheduler's.
const LOCK_HELP: &str = "a lock's name becomes a file name: 1 to 64 letters, digits, `.`, `_` or `-`, not starting with `.`, e.g. \"neo-db\"";

/// The blackouts of a directory's `blackouts.runbook`: `runbook blackouts {
/// about "..." blackout ... }`, with nothing but `about` and `blackout`.
/// Their time zone is UTC unless they name one.
pub fn directory_blackouts(source: &str) -> Result<Vec<Blackout>, Vec<Diagnostic>> {
    let mut runbook = crate::syntax::parse(source)?.runbook;
    let mut diagnostics = Vec::new();
    runbook.items.retain(|item| {
        let what = match item {
            Item::Setting(s) if matches!(s.name.name.as_str(), "about" | "blackout") => {
                return true
            }
            Item::Setting(s) => format!("`{}`", s.name.name),
            Item::Param(_) => "a `param`".into(),
            Item::Let(_) => "a `let`".into(),
            Item::Step(s) => match super::schema::kind(&s.kind.name) {
                Some(kind) => kind.a_step(),
                None => "a step".into(),
            },
            Item::OnFailure(_) => "`on failure`".into(),
        };
        let span = match item {
            Item::Setting(s) => s.name.span,
            Item::Step(s) => s.kind.span,
            other => other.span(),
        };
        diagnostics.push(
            Diagnostic::new(
                Code::UnknownSetting,
                format!("a blackouts file holds only blackouts, not {what}"),
            )
            .label(span, "not a blackout")
            .help("this file takes `about` and `blackout` lines; put anything else in a runbook of its own"),
        );
        false
    });
    let compiled = super::compile(runbook);
    match compiled {
        Ok(plan) if diagnostics.is_empty() => Ok(plan.settings.blackouts),
        Ok(_) => Err(diagnostics),
        Err(more) => {
            diagnostics.extend(more);
            diagnostics.sort_by_key(|d| d.offset());
            Err(diagnostics)
        }
    }
}

/// `Err` with the end of a sentence that starts with the name.
pub fn check_lock_name(name: &str) -> Result<(), String> {
    let length = name.chars().count();
    if length == 0 {
        return Err("is empty".into());
    }
    if length > 64 {
        return Err(format!("is {length} characters long; 64 at most"));
    }
    if name.starts_with('.') {
        return Err("starts with `.`".into());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!("has {c:?}, which a lock name cannot have")),
        None => Ok(()),
    }
}

impl Compiler {
    /// `lock "NAME"`.
    pub(super) fn lock(&mut self, p: &ast::Property) -> Option<String> {
        let e = p.args.first()?;
        let name = self.text_literal(e, "lock")?;
        if let Err(why) = check_lock_name(&name) {
            self.diagnostics.push(
                Diagnostic::new(Code::InvalidValue, format!("the lock name {name:?} {why}"))
                    .label(e.span, "not a lock name")
                    .help(LOCK_HELP),
            );
            return None;
        }
        Some(name)
    }

    /// `blackout "DATE" [until "DATE"]` or `blackout "CRON" for DURATION`,
    /// either with `timezone "ZONE"`; `default_zone` otherwise.
    pub(super) fn blackout(&mut self, p: &ast::Property, default_zone: &str) -> Option<Blackout> {
        let first = p.args.first()?;
        let mut until = None;
        let mut lasts = None;
        let mut timezone = None;
        // The shape (each option once, with a value) is checked by `props`.
        for pair in p.args[1..].chunks_exact(2) {
            match pair[0].as_name().map(|n| n.name.as_str()) {
                Some("until") => until = Some(&pair[1]),
                Some("for") => lasts = Some(&pair[1]),
                Some("timezone") => timezone = Some(&pair[1]),
                _ => {}
            }
        }
        // Every mistake is reported before giving up on the blackout.
        let timezone = match timezone {
            Some(e) => self.timezone(e),
            None => Some(default_zone.to_string()),
        };
        let text = self.text_literal(first, "blackout")?;
        let period = if schedule::looks_like_date(&text) {
            self.dated(first, &text, until, lasts)
        } else {
            self.recurring(first, &text, until, lasts)
        };
        let (timezone, period) = (timezone?, period?);
        let written: Vec<String> = p.args.iter().map(crate::syntax::format::expr).collect();
        Some(Blackout {
            text: written.join(" "),
            timezone,
            period,
        })
    }

    /// `blackout "2026-12-24"`, `blackout "2026-12-24 18:00" until "2026-12-27 06:00"`.
    fn dated(
        &mut self,
        first: &Expr,
        text: &str,
        until: Option<&Expr>,
        lasts: Option<&Expr>,
    ) -> Option<Period> {
        if let Some(lasts) = lasts {
            self.diagnostics.push(
                Diagnostic::new(Code::InvalidValue, "`for` is for a blackout that repeats, not one with a date")
                    .label(lasts.span, "a duration after a date")
                    .help("end a blackout with a date by `until \"YYYY-MM-DD\"` (or `\"YYYY-MM-DD HH:MM\"`); to repeat one, write a cron expression instead of the date"),
            );
        }
        let from = self.local(first, text)?;
        let end = match (until, from) {
            (Some(e), _) => {
                let written = self.text_literal(e, "until")?;
                self.local(e, &written)?.start()
            }
            (None, Local::Day(day)) => day.succ_opt()?.and_time(chrono::NaiveTime::MIN),
            (None, Local::Time(_)) => {
                self.diagnostics.push(
                    Diagnostic::new(Code::InvalidValue, format!("the blackout from {text:?} has no end"))
                        .label(first.span, "from this time until when?")
                        .help("add `until \"YYYY-MM-DD HH:MM\"`, or write the date alone for the whole day"),
                );
                return None;
            }
        };
        let span = until.map_or(first.span, |e| e.span);
        let start = from.start();
        if end <= start {
            self.diagnostics.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    "the blackout's `until` is not after its start",
                )
                .label(span, "at or before the start")
                .help(format!(
                    "`until` is the first moment free again, so it comes after {text:?}; a date alone means the start of that day"
                )),
            );
            return None;
        }
        let length = (end - start).to_std().ok()?;
        if !self.at_most_a_year(length, span) {
            return None;
        }
        Some(Period::Once {
            from: start,
            until: end,
        })
    }

    /// `blackout "0 17 * * FRI" for 63h`.
    fn recurring(
        &mut self,
        first: &Expr,
        text: &str,
        until: Option<&Expr>,
        lasts: Option<&Expr>,
    ) -> Option<Period> {
        let fires = schedule::check_cron(text).map_err(|why| {
            Diagnostic::new(Code::InvalidValue, format!("`{text}` {why}"))
                .label(first.span, "this blackout")
                .help("write a date, \"YYYY-MM-DD\", or a cron expression and how long each blackout lasts: \"0 17 * * FRI\" for 63h")
        });
        let fires = match fires {
            Ok(_) => true,
            Err(d) => {
                self.diagnostics.push(d);
                false
            }
        };
        if let Some(until) = until {
            self.diagnostics.push(
                Diagnostic::new(Code::InvalidValue, "`until` is for a blackout with a date, not one that repeats")
                    .label(until.span, "a date after a cron expression")
                    .help("a blackout that repeats lasts `for DURATION` from each time its cron expression fires"),
            );
        }
        let Some(lasts) = lasts else {
            if until.is_none() {
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::InvalidValue,
                        format!("the blackout from each `{text}` has no length"),
                    )
                    .label(first.span, "for how long?")
                    .help(
                        "add how long each lasts, e.g. `for 63h` (from Friday 17:00 to Monday 08:00)",
                    ),
                );
            }
            return None;
        };
        let length = self.literal_duration(Some(lasts), "for")?;
        if !self.at_most_a_year(length, lasts.span) || !fires || until.is_some() {
            return None;
        }
        Some(Period::Every {
            cron: text.to_string(),
            lasts: length,
        })
    }

    fn local(&mut self, e: &Expr, text: &str) -> Option<Local> {
        match schedule::parse_local(text) {
            Ok(local) => Some(local),
            Err(why) => {
                self.diagnostics.push(
                    Diagnostic::new(Code::InvalidValue, format!("{text:?} {why}"))
                        .label(e.span, "not a date")
                        .help("write a date, \"2026-12-24\", or a date and a 24-hour time, \"2026-12-24 18:00\", in the blackout's time zone"),
                );
                None
            }
        }
    }

    fn at_most_a_year(&mut self, length: Duration, span: crate::diagnostic::Span) -> bool {
        if length <= LONGEST {
            return true;
        }
        let written = super::eval::format_duration(length.as_millis() as u64);
        self.diagnostics.push(
            Diagnostic::new(
                Code::InvalidValue,
                format!("a blackout of {written} is longer than a year"),
            )
            .label(span, "longer than 366 days")
            .help("a blackout lasts a year at most; split a longer one into several"),
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::check;
    use chrono::NaiveDate;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> chrono::NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(h, min, 0))
            .expect("a time in the test")
    }

    fn messages(source: &str) -> Vec<String> {
        match check(source) {
            Ok(_) => Vec::new(),
            Err(d) => d.into_iter().map(|d| d.message).collect(),
        }
    }

    #[test]
    fn blackouts_locks_and_catch_up_fill_the_settings() {
        let source = r#"runbook r {
  schedule "0 2 * * *" timezone "Europe/Amsterdam" catch-up 6h
  blackout "2026-12-24" until "2027-01-02"
  blackout "2026-12-31"
  blackout "2026-12-24 18:00" until "2026-12-27 06:00" timezone "UTC"
  blackout "0 17 * * FRI" for 63h
  lock "neo-db"
  lock "a.b_c"
  lock "neo-db"
  wait w { duration 1s }
}
"#;
        let plan = check(source).expect("compiles");
        let s = &plan.settings;
        let schedule = s.schedule.as_ref().expect("a schedule");
        assert_eq!(schedule.catch_up, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(s.locks, ["a.b_c", "neo-db"], "sorted, once each");
        let texts: Vec<&str> = s.blackouts.iter().map(|b| b.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                r#""2026-12-24" until "2027-01-02""#,
                r#""2026-12-31""#,
                r#""2026-12-24 18:00" until "2026-12-27 06:00" timezone "UTC""#,
                r#""0 17 * * FRI" for 63h"#,
            ]
        );
        let zones: Vec<&str> = s.blackouts.iter().map(|b| b.timezone.as_str()).collect();
        assert_eq!(
            zones,
            [
                "Europe/Amsterdam",
                "Europe/Amsterdam",
                "UTC",
                "Europe/Amsterdam"
            ],
            "the schedule's zone unless they name one"
        );
        assert_eq!(
            s.blackouts[0].period,
            Period::Once {
                from: at(2026, 12, 24, 0, 0),
                until: at(2027, 1, 2, 0, 0)
            }
        );
        assert_eq!(
            s.blackouts[1].period,
            Period::Once {
                from: at(2026, 12, 31, 0, 0),
                until: at(2027, 1, 1, 0, 0)
            },
            "a date alone is that whole day"
        );
        assert_eq!(
            s.blackouts[3].period,
            Period::Every {
                cron: "0 17 * * FRI".into(),
                lasts: Duration::from_secs(63 * 3600)
            }
        );
    }

    #[test]
    fn without_a_schedule_blackouts_are_in_utc_and_catch_up_is_off() {
        let plan = check("runbook r {\n  blackout \"2026-12-24\"\n  schedule \"0 2 * * *\"\n}\n")
            .expect("compiles");
        assert_eq!(plan.settings.blackouts[0].timezone, "UTC");
        assert_eq!(plan.settings.schedule.expect("a schedule").catch_up, None);
        let plan = check("runbook r {\n  blackout \"2026-12-24\"\n}\n").expect("compiles");
        assert_eq!(plan.settings.blackouts[0].timezone, "UTC");
    }

    #[test]
    fn blackout_and_lock_may_be_given_more_than_once_and_the_rest_may_not() {
        let source = "runbook r {\n  blackout \"2026-12-24\"\n  blackout \"2026-12-25\"\n  lock \"a\"\n  lock \"b\"\n  about \"x\"\n  about \"y\"\n}\n";
        assert_eq!(messages(source), ["`about` is given twice"]);
    }

    #[test]
    fn interpolated_text_is_refused() {
        let source = "runbook r {\n  param who: string = \"db\"\n  lock \"${who}\"\n  blackout \"2026-12-24\" until \"${who}\"\n}\n";
        assert_eq!(
            messages(source),
            ["`lock` must be written out", "`until` must be written out"]
        );
    }

    #[test]
    fn a_blackout_reports_every_mistake_at_once() {
        let source = "runbook r {\n  blackout \"2026-12-24 18:00\" timezone \"Mars/Olympus\"\n}\n";
        assert_eq!(
            messages(source),
            [
                "the blackout from \"2026-12-24 18:00\" has no end",
                "unknown time zone `Mars/Olympus`"
            ]
        );
    }

    #[test]
    fn lock_names_are_file_names() {
        assert!(check_lock_name("neo-db").is_ok());
        assert!(check_lock_name(&"x".repeat(64)).is_ok());
        assert_eq!(
            check_lock_name(&"x".repeat(65)).unwrap_err(),
            "is 65 characters long; 64 at most"
        );
        assert_eq!(check_lock_name("..").unwrap_err(), "starts with `.`");
        assert_eq!(check_lock_name("").unwrap_err(), "is empty");
        assert_eq!(
            check_lock_name("neo db").unwrap_err(),
            "has ' ', which a lock name cannot have"
        );
        assert_eq!(
            check_lock_name("né").unwrap_err(),
            "has 'é', which a lock name cannot have"
        );
    }

    #[test]
    fn a_window_longer_than_the_time_between_fires_is_refused() {
        assert_eq!(
            messages("runbook r {\n  schedule \"*/30 * * * *\" window 2h\n}\n"),
            ["the window (2h) is longer than the shortest time between two fires (30m), so a run could still be going when the next one is due"]
        );
        assert!(messages("runbook r {\n  schedule \"*/30 * * * *\" window 30m\n}\n").is_empty());
        // The spring day in Amsterdam has 23 hours.
        assert!(messages("runbook r {\n  schedule \"0 2 * * *\" window 23h30m\n}\n").is_empty());
        assert_eq!(
            messages("runbook r {\n  schedule \"0 2 * * *\" timezone \"Europe/Amsterdam\" window 23h30m\n}\n").len(),
            1
        );
    }

    #[test]
    fn the_directory_file_holds_only_blackouts() {
        let source = "runbook blackouts {\n  about \"Freezes for every runbook here.\"\n  blackout \"2026-12-24\" until \"2027-01-02\"\n  blackout \"0 17 * * FRI\" for 63h timezone \"Europe/Amsterdam\"\n}\n";
        let blackouts = directory_blackouts(source).expect("reads");
        assert_eq!(blackouts.len(), 2);
        assert_eq!(blackouts[0].timezone, "UTC");
        assert_eq!(blackouts[1].timezone, "Europe/Amsterdam");
        assert_eq!(
            directory_blackouts("runbook blackouts {}\n").expect("reads"),
            []
        );

        let source = "runbook blackouts {\n  schedule \"0 2 * * *\"\n  param p: string\n  blackout \"2026-13-01\"\n  wait w { duration 1s }\n  lock \"x\"\n}\n";
        let found: Vec<String> = directory_blackouts(source)
            .unwrap_err()
            .into_iter()
            .map(|d| format!("{} {}", d.code.id(), d.message))
            .collect();
        assert_eq!(
            found,
            [
                "RB016 a blackouts file holds only blackouts, not `schedule`",
                "RB016 a blackouts file holds only blackouts, not a `param`",
                "RB020 \"2026-13-01\" is not a day of the calendar",
                "RB016 a blackouts file holds only blackouts, not a `wait` step",
                "RB016 a blackouts file holds only blackouts, not `lock`",
            ]
        );
    }
}
