use super::*;
use crate::compile::schedule::{Blackout, Period};
use crate::compile::Schedule;
use crate::scheduler::EntryState;
use chrono::{NaiveDate, TimeZone, Utc};
use std::time::Duration;

fn at(day: u32, h: u32, m: u32) -> Ms {
    Utc.with_ymd_and_hms(2026, 11, day, h, m, 0)
        .single()
        .map(ms)
        .expect("a valid time")
}

fn entry(overlap: Overlap, window: Option<u64>, catch_up: Option<u64>) -> Entry {
    Entry {
        name: "db_maintenance".into(),
        file: "db_maintenance.runbook".into(),
        schedule: Schedule {
            cron: "0 2 * * *".into(),
            description: "At 02:00".into(),
            timezone: "UTC".into(),
            window: window.map(|h| Duration::from_secs(h * 3600)),
            overlap,
            catch_up: catch_up.map(|h| Duration::from_secs(h * 3600)),
        },
        blackouts: Vec::new(),
        locks: vec!["neo-db".into()],
        source: String::new(),
    }
}

/// A state that has seen the schedule, with its next fire at `next`.
fn seen(e: &Entry, next: Ms) -> EntryState {
    EntryState {
        cron: e.schedule.cron.clone(),
        timezone: e.schedule.timezone.clone(),
        next_fire: Some(next),
        ..EntryState::default()
    }
}

fn free(_: &[String]) -> Option<String> {
    None
}

fn whats(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Record(r) => r.sentence(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_new_runbook_counts_its_first_fire_from_now() {
    let e = entry(Overlap::Skip, Some(2), None);
    let mut st = EntryState::default();
    assert!(tick(&e, &mut st, at(27, 13, 0), &free).is_empty());
    assert_eq!(st.next_fire, Some(at(28, 2, 0)));
}

#[test]
fn a_fire_on_time_starts_a_run_with_its_window_as_cutoff() {
    let e = entry(Overlap::Skip, Some(2), None);
    let mut st = seen(&e, at(28, 2, 0));
    assert!(tick(&e, &mut st, at(28, 1, 59), &free).is_empty());
    let actions = tick(&e, &mut st, at(28, 2, 0) + 400, &free);
    assert_eq!(
        actions,
        vec![Action::Start {
            fire: at(28, 2, 0),
            cutoff: Some(at(28, 4, 0)),
            catch_up: false
        }]
    );
    assert_eq!(st.next_fire, Some(at(29, 2, 0)));
    assert_eq!(st.active.as_ref().map(|a| a.fire), Some(at(28, 2, 0)));
}

#[test]
fn overlap_skip_records_the_fire_and_leaves_the_run_alone() {
    let e = entry(Overlap::Skip, None, None);
    let mut st = seen(&e, at(28, 2, 0));
    tick(&e, &mut st, at(28, 2, 0), &free);
    if let Some(a) = st.active.as_mut() {
        a.run = Some(7);
    }
    let actions = tick(&e, &mut st, at(29, 2, 0), &free);
    assert_eq!(
        whats(&actions),
        ["the 2026-11-29 02:00:00 UTC fire: skipped: run 7 is still running (overlap skip)"]
    );
    assert_eq!(st.active.as_ref().and_then(|a| a.run), Some(7));
}

#[test]
fn overlap_queue_keeps_one_fire_and_starts_it_when_the_run_ends() {
    let mut e = entry(Overlap::Queue, None, None);
    e.schedule.cron = "0 * * * *".into();
    let mut st = seen(&e, at(28, 2, 0));
    tick(&e, &mut st, at(28, 2, 0), &free);
    let queued = tick(&e, &mut st, at(28, 3, 0), &free);
    assert_eq!(
        whats(&queued),
        ["the 2026-11-28 03:00:00 UTC fire: waiting: queued until the last run ends (overlap queue)"]
    );
    let second = tick(&e, &mut st, at(28, 4, 0), &free);
    assert_eq!(
        whats(&second),
        ["the 2026-11-28 04:00:00 UTC fire: skipped: one fire already waits (overlap queue keeps one)"]
    );
    st.active = None; // the run ended
    let started = tick(&e, &mut st, at(28, 4, 10), &free);
    assert_eq!(
        started,
        vec![Action::Start {
            fire: at(28, 3, 0),
            cutoff: None,
            catch_up: false
        }]
    );
}

#[test]
fn overlap_cancel_cancels_the_run_once_and_starts_the_new_fire_after_it() {
    let mut e = entry(Overlap::Cancel, None, None);
    e.schedule.cron = "0 * * * *".into();
    let mut st = seen(&e, at(28, 2, 0));
    tick(&e, &mut st, at(28, 2, 0), &free);
    if let Some(a) = st.active.as_mut() {
        a.run = Some(3);
        a.pid = Some(99);
    }
    let actions = tick(&e, &mut st, at(28, 3, 0), &free);
    assert_eq!(
        actions[0],
        Action::Cancel {
            run: Some(3),
            pid: Some(99)
        }
    );
    assert_eq!(
        whats(&actions[1..]),
        [
            "the 2026-11-28 02:00:00 UTC fire: cancelling run 3: the 2026-11-28 03:00:00 UTC fire replaces it (overlap cancel)",
            "the 2026-11-28 03:00:00 UTC fire: waiting: starts when run 3 has ended (overlap cancel)"
        ]
    );
    assert!(
        tick(&e, &mut st, at(28, 3, 0) + 500, &free).is_empty(),
        "one cancel, not one per check"
    );
    st.active = None;
    assert_eq!(
        tick(&e, &mut st, at(28, 3, 1), &free),
        vec![Action::Start {
            fire: at(28, 3, 0),
            cutoff: None,
            catch_up: false
        }]
    );
}

#[test]
fn a_held_lock_delays_the_start_within_the_window_then_gives_up() {
    let e = entry(Overlap::Skip, Some(2), None);
    let mut st = seen(&e, at(28, 2, 0));
    let held = |_: &[String]| Some("lock `neo-db` is held by backups run 4".to_string());
    let actions = tick(&e, &mut st, at(28, 2, 0), &held);
    assert_eq!(
        whats(&actions),
        ["the 2026-11-28 02:00:00 UTC fire: waiting: lock `neo-db` is held by backups run 4"]
    );
    assert!(
        tick(&e, &mut st, at(28, 2, 30), &held).is_empty(),
        "said once"
    );
    assert_eq!(
        tick(&e, &mut st, at(28, 2, 40), &free),
        vec![Action::Start {
            fire: at(28, 2, 0),
            cutoff: Some(at(28, 4, 0)),
            catch_up: false
        }]
    );

    let mut st = seen(&e, at(28, 2, 0));
    tick(&e, &mut st, at(28, 2, 0), &held);
    let late = tick(&e, &mut st, at(28, 4, 0), &held);
    assert_eq!(
        whats(&late),
        ["the 2026-11-28 02:00:00 UTC fire: skipped: its window closed at 2026-11-28 04:00:00 UTC before it could start"]
    );
    assert_eq!(st.waiting, None);
}

#[test]
fn without_a_window_a_held_lock_skips_the_fire() {
    let e = entry(Overlap::Skip, None, None);
    let mut st = seen(&e, at(28, 2, 0));
    let held = |_: &[String]| Some("lock `neo-db` is held by backups run 4".to_string());
    let actions = tick(&e, &mut st, at(28, 2, 0), &held);
    assert_eq!(
        whats(&actions),
        ["the 2026-11-28 02:00:00 UTC fire: skipped: lock `neo-db` is held by backups run 4"]
    );
    assert!(st.active.is_none() && st.waiting.is_none());
}

#[test]
fn a_blackout_skips_the_fire() {
    let mut e = entry(Overlap::Skip, Some(2), None);
    let day = |d| NaiveDate::from_ymd_opt(2026, 12, d).and_then(|d| d.and_hms_opt(0, 0, 0));
    e.blackouts.push(Blackout {
        text: "\"2026-12-24\" until \"2026-12-27\"".into(),
        timezone: "UTC".into(),
        period: Period::Once {
            from: day(24).expect("date"),
            until: day(27).expect("date"),
        },
    });
    let dec = |d: u32, h: u32| {
        Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0)
            .single()
            .map(ms)
            .expect("time")
    };
    let mut st = seen(&e, dec(25, 2));
    assert_eq!(
        whats(&tick(&e, &mut st, dec(25, 2), &free)),
        ["the 2026-12-25 02:00:00 UTC fire: skipped: blackout \"2026-12-24\" until \"2026-12-27\""]
    );
    let mut st = seen(&e, dec(27, 2));
    assert!(matches!(
        tick(&e, &mut st, dec(27, 2), &free)[..],
        [Action::Start { .. }]
    ));
}

#[test]
fn three_days_down_records_every_missed_fire_and_catches_up_the_latest_young_one() {
    let e = entry(Overlap::Skip, Some(2), Some(6));
    let mut st = seen(&e, at(25, 2, 0));
    let actions = tick(&e, &mut st, at(28, 3, 0), &free);
    assert_eq!(
        whats(&actions[..4]),
        [
            "the 2026-11-25 02:00:00 UTC fire: missed: the scheduler was not running",
            "the 2026-11-26 02:00:00 UTC fire: missed: the scheduler was not running",
            "the 2026-11-27 02:00:00 UTC fire: missed: the scheduler was not running",
            "the 2026-11-28 02:00:00 UTC fire: missed: the scheduler was not running; the latest missed fire, so catch-up considers it now",
        ]
    );
    assert_eq!(
        actions[4],
        Action::Start {
            fire: at(28, 2, 0),
            cutoff: Some(at(28, 4, 0)),
            catch_up: true
        }
    );
    assert_eq!(st.next_fire, Some(at(29, 2, 0)));
}

#[test]
fn without_catch_up_or_past_the_window_missed_fires_are_only_recorded() {
    let none = entry(Overlap::Skip, Some(2), None);
    let mut st = seen(&none, at(25, 2, 0));
    let actions = tick(&none, &mut st, at(28, 3, 0), &free);
    assert_eq!(actions.len(), 4);
    assert!(actions
        .iter()
        .all(|a| matches!(a, Action::Record(r) if matches!(r.what, What::Missed { .. }))));

    let closed = entry(Overlap::Skip, Some(2), Some(6));
    let mut st = seen(&closed, at(25, 2, 0));
    let actions = tick(&closed, &mut st, at(28, 5, 0), &free);
    assert_eq!(
        whats(&actions[4..]),
        ["the 2026-11-28 02:00:00 UTC fire: skipped: its window closed at 2026-11-28 04:00:00 UTC"]
    );

    let old = entry(Overlap::Skip, None, Some(1));
    let mut st = seen(&old, at(25, 2, 0));
    let actions = tick(&old, &mut st, at(28, 3, 1), &free);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Start { .. })),
        "older than catch-up 1h"
    );
}

#[test]
fn a_long_downtime_of_a_busy_schedule_is_counted_not_listed() {
    let mut e = entry(Overlap::Skip, None, None);
    e.schedule.cron = "* * * * *".into();
    let mut st = seen(&e, at(25, 0, 0));
    let actions = tick(&e, &mut st, at(28, 0, 0) + 30_000, &free);
    // 3 days of minutes, the last one on time.
    assert_eq!(actions.len(), 101 + 1);
    assert_eq!(
        whats(&actions[100..101]),
        ["the runbook: missed: and 4220 more fires while the scheduler was not running"]
    );
    assert!(matches!(actions[101], Action::Start { fire, .. } if fire == at(28, 0, 0)));
    assert!(st.next_fire > Some(at(28, 0, 0)));
}

#[test]
fn a_changed_schedule_starts_counting_afresh() {
    let e = entry(Overlap::Skip, None, None);
    let mut st = seen(&e, at(25, 2, 0));
    st.cron = "0 3 * * *".into();
    assert!(
        tick(&e, &mut st, at(28, 12, 0), &free).is_empty(),
        "no missed fires of the old schedule"
    );
    assert_eq!(st.next_fire, Some(at(29, 2, 0)));
}

#[test]
fn a_fire_that_waited_before_a_downtime_is_not_started_days_late() {
    let mut e = entry(Overlap::Queue, None, None);
    e.schedule.cron = "0 * * * *".into();
    let mut st = seen(&e, at(25, 2, 0));
    tick(&e, &mut st, at(25, 2, 0), &free);
    tick(&e, &mut st, at(25, 3, 0), &free); // queued behind the run
    assert!(st.waiting.is_some());
    st.active = None; // the run ended while the scheduler was down
    let actions = tick(&e, &mut st, at(28, 3, 30), &free);
    assert!(whats(&actions).contains(
        &"the 2026-11-25 03:00:00 UTC fire: skipped: the scheduler was not running when it could have started".to_string()
    ));
    assert!(!actions.iter().any(|a| matches!(a, Action::Start { .. })));
}

#[test]
fn a_fire_is_not_started_in_the_last_tenth_of_its_window() {
    let e = entry(Overlap::Skip, Some(2), None);
    let mut st = seen(&e, at(28, 2, 0));
    let held = |_: &[String]| Some("lock `neo-db` is held by backups run 4".to_string());
    tick(&e, &mut st, at(28, 2, 0), &held);
    let late = tick(&e, &mut st, at(28, 4, 0) - 4_000, &free);
    assert_eq!(
        whats(&late),
        ["the 2026-11-28 02:00:00 UTC fire: skipped: its window closed at 2026-11-28 04:00:00 UTC before it could start"]
    );
}

#[test]
fn a_catch_up_start_is_marked_so_in_the_run_it_starts() {
    let e = entry(Overlap::Skip, Some(2), Some(6));
    let mut st = seen(&e, at(27, 2, 0));
    tick(&e, &mut st, at(28, 3, 0), &free);
    assert_eq!(st.active.as_ref().map(|a| a.catch_up), Some(true));
}
