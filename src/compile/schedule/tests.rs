//! Tests of `schedule.rs`. The daylight saving ones pin the policy the book
//! states ("Daylight saving time" in the runbook settings reference), in two
//! zones: Europe/Amsterdam (2026-03-29 02:00 → 03:00, 2026-10-25 03:00 →
//! 02:00) and America/New_York (2026-03-08 02:00 → 03:00, 2026-11-01 02:00 →
//! 01:00). Every instant is asserted in UTC.

use super::*;

const AMSTERDAM: &str = "Europe/Amsterdam";
const NEW_YORK: &str = "America/New_York";

fn utc(text: &str) -> DateTime<Utc> {
    text.parse().expect("a UTC instant in the test")
}

/// The fires strictly after `after`, `n` of them, in UTC as RFC 3339.
fn fires(cron: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
    let mut at = utc(after);
    let mut out = Vec::new();
    for _ in 0..n {
        at = next_fire(cron, zone, at).expect("fires again");
        out.push(at.format("%Y-%m-%dT%H:%MZ").to_string());
    }
    out
}

fn day(text: &str) -> NaiveDateTime {
    match parse_local(text).expect("a local time in the test") {
        Local::Day(d) => d.and_time(chrono::NaiveTime::MIN),
        Local::Time(t) => t,
    }
}

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

#[test]
fn a_fixed_time_in_the_spring_gap_fires_once_at_the_end_of_the_gap() {
    // 02:30 does not exist that day: it fires at 03:00 local, once; the
    // days around it at 02:30.
    assert_eq!(
        fires("30 2 * * *", AMSTERDAM, "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T01:30Z", // 02:30 CET
            "2026-03-29T01:00Z", // 03:00 CEST
            "2026-03-30T00:30Z", // 02:30 CEST
        ]
    );
    assert_eq!(
        fires("30 2 * * *", NEW_YORK, "2026-03-06T12:00:00Z", 3),
        [
            "2026-03-07T07:30Z", // 02:30 EST
            "2026-03-08T07:00Z", // 03:00 EDT
            "2026-03-09T06:30Z", // 02:30 EDT
        ]
    );
}

#[test]
fn a_fixed_time_in_the_repeated_hour_fires_once_at_its_first_occurrence() {
    assert_eq!(
        fires("30 2 * * *", AMSTERDAM, "2026-10-23T12:00:00Z", 3),
        [
            "2026-10-24T00:30Z", // 02:30 CEST
            "2026-10-25T00:30Z", // 02:30 CEST, the first of two
            "2026-10-26T01:30Z", // 02:30 CET
        ]
    );
    assert_eq!(
        fires("30 1 * * *", NEW_YORK, "2026-10-30T12:00:00Z", 3),
        [
            "2026-10-31T05:30Z", // 01:30 EDT
            "2026-11-01T05:30Z", // 01:30 EDT, the first of two
            "2026-11-02T06:30Z", // 01:30 EST
        ]
    );
    // Asked from inside either pass of the repeated hour, the next fire is
    // the next day's: the second 02:30 never fires.
    for after in ["2026-10-25T00:45:00Z", "2026-10-25T01:10:00Z"] {
        assert_eq!(
            fires("30 2 * * *", AMSTERDAM, after, 1),
            ["2026-10-26T01:30Z"]
        );
    }
    assert_eq!(
        fires("30 1 * * *", NEW_YORK, "2026-11-01T06:10:00Z", 1),
        ["2026-11-02T06:30Z"]
    );
}

#[test]
fn two_o_clock_every_day_across_both_changes() {
    assert_eq!(
        fires("0 2 * * *", AMSTERDAM, "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T01:00Z",
            "2026-03-29T01:00Z",
            "2026-03-30T00:00Z"
        ]
    );
    assert_eq!(
        fires("0 2 * * *", AMSTERDAM, "2026-10-23T12:00:00Z", 3),
        [
            "2026-10-24T00:00Z",
            "2026-10-25T00:00Z",
            "2026-10-26T01:00Z"
        ]
    );
    assert_eq!(
        fires("0 2 * * *", NEW_YORK, "2026-03-06T12:00:00Z", 3),
        [
            "2026-03-07T07:00Z",
            "2026-03-08T07:00Z",
            "2026-03-09T06:00Z"
        ]
    );
    // In New York the clocks go back at 02:00 EDT to 01:00 EST: 02:00
    // itself comes once, in EST.
    assert_eq!(
        fires("0 2 * * *", NEW_YORK, "2026-10-30T12:00:00Z", 3),
        [
            "2026-10-31T06:00Z",
            "2026-11-01T07:00Z",
            "2026-11-02T07:00Z"
        ]
    );
}

#[test]
fn the_books_table_of_the_days_the_clocks_change() {
    // book/src/reference/runbook-settings.md, "Daylight saving time": the
    // run on each day, asked from 23:00 local the evening before.
    let amsterdam = ("2026-03-28T22:00:00Z", "2026-10-24T21:00:00Z");
    let new_york = ("2026-03-08T04:00:00Z", "2026-11-01T03:00:00Z");
    // (schedule, zone, where to start on each day, the runs on each day)
    type Row = (
        &'static str,
        &'static str,
        (&'static str, &'static str),
        &'static str,
        &'static str,
    );
    let rows: [Row; 5] = [
        (
            "30 2 * * *",
            AMSTERDAM,
            amsterdam,
            "2026-03-29T01:00Z",
            "2026-10-25T00:30Z",
        ),
        (
            "0 2 * * *",
            AMSTERDAM,
            amsterdam,
            "2026-03-29T01:00Z",
            "2026-10-25T00:00Z",
        ),
        (
            "30 2 * * *",
            NEW_YORK,
            new_york,
            "2026-03-08T07:00Z",
            "2026-11-01T07:30Z",
        ),
        (
            "30 1 * * *",
            NEW_YORK,
            new_york,
            "2026-03-08T06:30Z",
            "2026-11-01T05:30Z",
        ),
        (
            "0 2 * * *",
            NEW_YORK,
            new_york,
            "2026-03-08T07:00Z",
            "2026-11-01T07:00Z",
        ),
    ];
    for (cron, zone, (spring, autumn), forward, back) in rows {
        // The next fire after each is the next day's: one run on the day.
        let day_after = |first: &str| {
            let next = fires(cron, zone, &format!("{}:00Z", &first[..16]), 1);
            assert!(next[0][..10] > first[..10], "{cron} in {zone}: {next:?}");
        };
        assert_eq!(fires(cron, zone, spring, 1), [forward], "{cron} in {zone}");
        day_after(forward);
        assert_eq!(fires(cron, zone, autumn, 1), [back], "{cron} in {zone}");
        day_after(back);
    }
}

#[test]
fn an_interval_keeps_real_time_pace_through_both_changes() {
    // Spring: 02:00 and 02:30 local do not exist and are skipped; every
    // fire is 30 minutes of real time after the one before.
    assert_eq!(
        fires("*/30 * * * *", AMSTERDAM, "2026-03-29T00:00:00Z", 3),
        [
            "2026-03-29T00:30Z", // 01:30 CET
            "2026-03-29T01:00Z", // 03:00 CEST
            "2026-03-29T01:30Z", // 03:30 CEST
        ]
    );
    assert_eq!(
        fires("*/30 * * * *", NEW_YORK, "2026-03-08T06:00:00Z", 3),
        [
            "2026-03-08T06:30Z",
            "2026-03-08T07:00Z",
            "2026-03-08T07:30Z"
        ]
    );
    // Autumn: both passes of the repeated hour run.
    assert_eq!(
        fires("*/30 * * * *", AMSTERDAM, "2026-10-24T23:45:00Z", 5),
        [
            "2026-10-25T00:00Z", // 02:00 CEST
            "2026-10-25T00:30Z", // 02:30 CEST
            "2026-10-25T01:00Z", // 02:00 CET
            "2026-10-25T01:30Z", // 02:30 CET
            "2026-10-25T02:00Z", // 03:00 CET
        ]
    );
    assert_eq!(
        fires("*/30 * * * *", NEW_YORK, "2026-11-01T04:45:00Z", 5),
        [
            "2026-11-01T05:00Z", // 01:00 EDT
            "2026-11-01T05:30Z", // 01:30 EDT
            "2026-11-01T06:00Z", // 01:00 EST
            "2026-11-01T06:30Z", // 01:30 EST
            "2026-11-01T07:00Z", // 02:00 EST
        ]
    );
}

#[test]
fn a_list_or_range_of_times_is_an_interval_to_croner() {
    // croner calls a job "fixed-time" only with one value each in the
    // seconds, minutes and hours fields. `30 1,2` is an interval job: its
    // 02:30 is skipped in the spring gap (no fire at 03:00) and runs in
    // both passes of the repeated hour.
    assert_eq!(
        fires("30 1,2 * * *", AMSTERDAM, "2026-03-28T12:00:00Z", 2),
        [
            "2026-03-29T00:30Z", // 01:30 CET; 02:30 does not exist
            "2026-03-29T23:30Z", // 01:30 CEST, the next day
        ]
    );
    assert_eq!(
        fires("30 1,2 * * *", AMSTERDAM, "2026-10-24T12:00:00Z", 4),
        [
            "2026-10-24T23:30Z", // 01:30 CEST
            "2026-10-25T00:30Z", // 02:30 CEST
            "2026-10-25T01:30Z", // 02:30 CET, again
            "2026-10-26T00:30Z", // 01:30 CET, the next day
        ]
    );
    // Two minutes in the gap: neither runs that day.
    assert_eq!(
        fires("0,30 2 * * *", NEW_YORK, "2026-03-07T12:00:00Z", 1),
        ["2026-03-09T06:00Z"]
    );
}

#[test]
fn fires_only_ever_move_forward() {
    // Through all of 2026, every fire is later than the one before it, so
    // none comes twice; dense expressions only around the four changes.
    let year = [("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")];
    let changes = [
        ("2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z"),
        ("2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z"),
        ("2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z"),
        ("2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z"),
    ];
    let cases: [(&str, &[(&str, &str)]); 7] = [
        ("30 2 * * *", &year),
        ("0 2 * * *", &year),
        ("30 1 * * *", &year),
        ("0 17 * * FRI", &year),
        ("15 * * * *", &changes),
        ("*/30 * * * *", &changes),
        ("*/7 1-3 * * *", &changes),
    ];
    for zone in [AMSTERDAM, NEW_YORK, "UTC"] {
        for (cron, spans) in cases {
            for (from, to) in spans {
                let (mut at, end) = (utc(from), utc(to));
                let mut count = 0;
                while let Some(next) = next_fire(cron, zone, at) {
                    assert!(next > at, "{cron} in {zone}: {next} after {at}");
                    if next >= end {
                        break;
                    }
                    at = next;
                    count += 1;
                }
                assert!(count > 0, "{cron} in {zone} fires from {from}");
            }
        }
    }
}

#[test]
fn the_shortest_gap_counts_real_time() {
    let hours = |h: u64| Some(Duration::from_secs(h * 3600));
    assert_eq!(shortest_gap("*/30 * * * *", "UTC"), hours(1).map(|d| d / 2));
    assert_eq!(shortest_gap("0 2 * * *", "UTC"), hours(24));
    // The spring day has 23 hours.
    assert_eq!(shortest_gap("0 2 * * *", AMSTERDAM), hours(23));
    assert_eq!(shortest_gap("0 17 * * FRI", AMSTERDAM), hours(7 * 24 - 1));
    // 02:30 CET, then 03:00 CEST (02:30 does not exist), then 02:30 CEST.
    assert_eq!(
        shortest_gap("30 2 * * *", AMSTERDAM),
        Some(Duration::from_secs(23 * 3600 + 1800))
    );
    assert_eq!(shortest_gap("0 2 * * *", "Mars/Olympus"), None);
}

#[test]
fn dates_and_times_are_read_exactly() {
    let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("a date");
    assert_eq!(
        parse_local("2026-12-24"),
        Ok(Local::Day(date(2026, 12, 24)))
    );
    assert_eq!(
        parse_local("2026-12-24 18:00"),
        Ok(Local::Time(
            date(2026, 12, 24).and_hms_opt(18, 0, 0).expect("a time")
        ))
    );
    assert_eq!(
        parse_local("2026-02-30").unwrap_err(),
        "is not a day of the calendar"
    );
    assert_eq!(
        parse_local("2026-12-24 24:00").unwrap_err(),
        "is not a day and time of the calendar"
    );
    for bad in [
        "2026-12-4",
        "24-12-2026",
        "2026-12-24T18:00",
        "2026-12-24 18:00:00",
    ] {
        assert_eq!(
            parse_local(bad).unwrap_err(),
            "is not a date: write YYYY-MM-DD or YYYY-MM-DD HH:MM",
            "{bad}"
        );
    }
    for date in [
        "2026-12-24",
        "2026-12-4",
        "24-12-2026",
        "2026/12/24 18:00",
        "1.2",
    ] {
        assert!(looks_like_date(date), "{date}");
    }
    for cron in ["0 17 * * FRI", "*/5 * * * *", "0 2", "@daily"] {
        assert!(!looks_like_date(cron), "{cron}");
    }
}

#[test]
fn a_skipped_local_time_is_the_end_of_the_gap_and_a_repeated_one_the_first() {
    let tz = |name: &str| check_timezone(name).expect("a zone");
    assert_eq!(
        instant(tz(AMSTERDAM), day("2026-03-29 02:30")),
        Some(utc("2026-03-29T01:00:00Z"))
    );
    assert_eq!(
        instant(tz(NEW_YORK), day("2026-03-08 02:00")),
        Some(utc("2026-03-08T07:00:00Z"))
    );
    assert_eq!(
        instant(tz(AMSTERDAM), day("2026-10-25 02:30")),
        Some(utc("2026-10-25T00:30:00Z"))
    );
    assert_eq!(
        instant(tz(NEW_YORK), day("2026-11-01 01:30")),
        Some(utc("2026-11-01T05:30:00Z"))
    );
}

fn once(zone: &str, from: &str, until: &str) -> Blackout {
    Blackout {
        text: format!("{from:?} until {until:?}"),
        timezone: zone.into(),
        period: Period::Once {
            from: day(from),
            until: day(until),
        },
    }
}

fn every(zone: &str, cron: &str, hours: u64) -> Blackout {
    Blackout {
        text: format!("{cron:?} for {hours}h"),
        timezone: zone.into(),
        period: Period::Every {
            cron: cron.into(),
            lasts: Duration::from_secs(hours * 3600),
        },
    }
}

#[test]
fn a_dated_blackout_covers_from_its_start_until_just_before_its_end() {
    // Christmas Eve, the whole local day, in three zones.
    for (zone, start, end) in [
        ("UTC", "2026-12-24T00:00:00Z", "2026-12-25T00:00:00Z"),
        (AMSTERDAM, "2026-12-23T23:00:00Z", "2026-12-24T23:00:00Z"),
        (NEW_YORK, "2026-12-24T05:00:00Z", "2026-12-25T05:00:00Z"),
    ] {
        let b = once(zone, "2026-12-24", "2026-12-25");
        let second = chrono::Duration::seconds(1);
        assert!(!b.covers(utc(start) - second), "{zone}");
        assert!(b.covers(utc(start)), "{zone}");
        assert!(b.covers(utc(end) - second), "{zone}");
        assert!(!b.covers(utc(end)), "{zone}: `until` is not included");
        assert_eq!(b.ends(utc(start)), Some(utc(end)));
        assert_eq!(b.ends(utc(end)), None);
    }
}

#[test]
fn a_dated_blackout_reads_skipped_and_repeated_times_as_the_schedule_does() {
    // From 02:30, which the clocks skip: from 03:00 CEST.
    let spring = once(AMSTERDAM, "2026-03-29 02:30", "2026-03-29 04:00");
    assert!(!spring.covers(utc("2026-03-29T00:59:59Z")));
    assert!(spring.covers(utc("2026-03-29T01:00:00Z")));
    assert_eq!(
        spring.ends(utc("2026-03-29T01:00:00Z")),
        Some(utc("2026-03-29T02:00:00Z"))
    );
    // From the first 02:30 to 03:00 CET: both passes of 02:30-03:00 and
    // the hour between, 1h30m of real time.
    let autumn = once(AMSTERDAM, "2026-10-25 02:30", "2026-10-25 03:00");
    assert!(!autumn.covers(utc("2026-10-25T00:29:59Z")));
    assert!(autumn.covers(utc("2026-10-25T00:30:00Z")));
    assert!(autumn.covers(utc("2026-10-25T01:35:00Z")));
    assert!(!autumn.covers(utc("2026-10-25T02:00:00Z")));
}

#[test]
fn a_recurring_blackout_lasts_its_duration_in_real_time() {
    // Friday 17:00 for 63h: to Monday 08:00 in an ordinary week.
    let weekend = every(AMSTERDAM, "0 17 * * FRI", 63);
    assert!(!weekend.covers(utc("2026-11-06T15:59:59Z")));
    assert!(weekend.covers(utc("2026-11-06T16:00:00Z"))); // Fri 17:00 CET
    assert_eq!(
        weekend.ends(utc("2026-11-08T12:00:00Z")),
        Some(utc("2026-11-09T07:00:00Z")) // Mon 08:00 CET
    );
    assert!(!weekend.covers(utc("2026-11-09T07:00:00Z")));
    // Nothing on a Wednesday.
    assert!(!weekend.covers(utc("2026-11-11T12:00:00Z")));
    // The weekend the clocks go back, 63 hours end an hour early on the
    // wall clock: on Monday at 07:00 CET.
    assert_eq!(
        weekend.ends(utc("2026-10-23T15:00:00Z")), // Fri 17:00 CEST
        Some(utc("2026-10-26T06:00:00Z"))
    );
    assert!(!weekend.covers(utc("2026-10-23T14:59:59Z")));
    // The weekend they go forward, an hour late: at 09:00 CEST.
    assert_eq!(
        weekend.ends(utc("2026-03-27T16:00:00Z")), // Fri 17:00 CET
        Some(utc("2026-03-30T07:00:00Z"))
    );
    // The same blackout in New York starts six hours later in UTC.
    let new_york = every(NEW_YORK, "0 17 * * FRI", 63);
    assert!(!new_york.covers(utc("2026-11-06T21:59:59Z")));
    assert!(new_york.covers(utc("2026-11-06T22:00:00Z"))); // Fri 17:00 EST
}

#[test]
fn a_recurring_blackout_that_starts_again_before_it_ends_carries_on() {
    // Monday and Friday at 17:00 for 84h: Friday to Tuesday 05:00, but the
    // Monday one starts first and carries it to Friday 05:00.
    let b = every("UTC", "0 17 * * MON,FRI", 84);
    assert_eq!(
        b.ends(utc("2026-11-07T12:00:00Z")), // Saturday
        Some(utc("2026-11-13T05:00:00Z"))
    );
    assert!(!b.covers(utc("2026-11-13T05:00:00Z")));
    assert!(b.covers(utc("2026-11-13T17:00:00Z")));
}

#[test]
fn a_blackout_in_an_unknown_zone_covers_nothing() {
    let b = once("Mars/Olympus", "2026-12-24", "2026-12-25");
    assert!(!b.covers(utc("2026-12-24T12:00:00Z")));
}
