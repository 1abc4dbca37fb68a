//! One check of one scheduled runbook: the fires that came due since the
//! last check, and what becomes of each.

use super::{instant, ms, short_time, Active, Entry, EntryState, Ms, Record, Waiting, What};
use crate::compile::Overlap;

/// A fire found due within this long of its time is on time; later, the
/// scheduler was not running (or the machine slept) and it was missed.
pub const GRACE_MS: Ms = 60_000;

/// Missed fires recorded one by one after a long downtime; the rest are
/// counted in one record.
const MISSED_KEPT: usize = 100;

/// Due fires looked at in one check; beyond that the schedule starts again
/// from now (a schedule firing every second, down for a day).
const DUE_LIMIT: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a run for this fire. `st.active` already says so; the caller
    /// fills in the run and process, or clears it if the start failed.
    Start {
        fire: Ms,
        cutoff: Option<Ms>,
        catch_up: bool,
    },
    /// Ask the active run to cancel (overlap `cancel`).
    Cancel { run: Option<u64>, pid: Option<u32> },
    /// Add this to the runbook's history.
    Record(Record),
}

/// A run that would have less than this left of a window this long is not
/// started: it would only stop at once and run its `on failure` steps.
fn too_late(window: Ms) -> Ms {
    (window / 10).min(5_000)
}

/// What to do now for `entry`, updating what the scheduler keeps about it.
/// `busy` says, for a set of lock names, who holds one of them, if anyone.
pub fn tick(
    entry: &Entry,
    st: &mut EntryState,
    now: Ms,
    busy: &dyn Fn(&[String]) -> Option<String>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let schedule = &entry.schedule;
    if st.cron != schedule.cron || st.timezone != schedule.timezone || st.next_fire.is_none() {
        // New, or its schedule changed: count from now; the old schedule's
        // fires are not this one's to catch up.
        st.cron = schedule.cron.clone();
        st.timezone = schedule.timezone.clone();
        st.next_fire = schedule.next_fire(instant(now)).map(ms);
        return actions;
    }
    let due = due_fires(entry, st, now);
    let (late, on_time): (Vec<Ms>, Vec<Ms>) = due.fires.iter().partition(|f| now - **f > GRACE_MS);
    let catch_up = schedule.catch_up.and_then(|max| {
        let latest = *late.last()?;
        let young = (now - latest) as u128 <= max.as_millis();
        (on_time.is_empty() && young).then_some(latest)
    });
    for fire in late.iter().take(MISSED_KEPT) {
        let why = if Some(*fire) == catch_up {
            "the scheduler was not running; the latest missed fire, so catch-up considers it now"
                .to_string()
        } else {
            "the scheduler was not running".to_string()
        };
        actions.push(record(now, Some(*fire), What::Missed { why }));
    }
    let unrecorded = late.len().saturating_sub(MISSED_KEPT);
    if unrecorded > 0 || due.beyond_limit {
        let more = if due.beyond_limit { "more than " } else { "" };
        let why = format!("and {more}{unrecorded} more fires while the scheduler was not running");
        actions.push(record(now, None, What::Missed { why }));
    }
    // A fire that waited (queued, or for a lock) before a downtime is not
    // started days late: the fires missed since then are newer.
    if let (Some(waiting), Some(latest)) = (&st.waiting, late.last()) {
        if waiting.fire < *latest {
            let why = "the scheduler was not running when it could have started".to_string();
            actions.push(record(now, Some(waiting.fire), What::Skipped { why }));
            st.waiting = None;
        }
    }
    if let Some((last, earlier)) = on_time.split_last() {
        for fire in earlier {
            let why = "a later fire came due at the same check".to_string();
            actions.push(record(now, Some(*fire), What::Skipped { why }));
        }
        consider(entry, st, *last, false, now, busy, &mut actions);
    } else if let Some(fire) = catch_up {
        consider(entry, st, fire, true, now, busy, &mut actions);
    }
    if st.active.is_none() {
        if let Some(waiting) = st.waiting.take() {
            start_or_wait(entry, st, waiting, now, busy, &mut actions);
        }
    }
    actions
}

struct Due {
    fires: Vec<Ms>,
    /// There were more than `DUE_LIMIT`; the rest were not counted.
    beyond_limit: bool,
}

fn due_fires(entry: &Entry, st: &mut EntryState, now: Ms) -> Due {
    let mut due = Due {
        fires: Vec::new(),
        beyond_limit: false,
    };
    while let Some(fire) = st.next_fire.filter(|f| *f <= now) {
        if due.fires.len() == DUE_LIMIT {
            due.beyond_limit = true;
            st.next_fire = entry.schedule.next_fire(instant(now)).map(ms);
            break;
        }
        due.fires.push(fire);
        st.next_fire = entry.schedule.next_fire(instant(fire)).map(ms);
    }
    due
}

fn record(at: Ms, fire: Option<Ms>, what: What) -> Action {
    Action::Record(Record { at, fire, what })
}

/// A fire that is due now: start it, or say why not.
fn consider(
    entry: &Entry,
    st: &mut EntryState,
    fire: Ms,
    catch_up: bool,
    now: Ms,
    busy: &dyn Fn(&[String]) -> Option<String>,
    actions: &mut Vec<Action>,
) {
    let cutoff = entry
        .schedule
        .window
        .map(|w| fire.saturating_add(w.as_millis().min(i64::MAX as u128) as i64));
    let skip = |actions: &mut Vec<Action>, why: String| {
        actions.push(record(now, Some(fire), What::Skipped { why }));
    };
    let wait = |st: &mut EntryState, actions: &mut Vec<Action>, why: String| {
        actions.push(record(now, Some(fire), What::Waiting { why: why.clone() }));
        st.waiting = Some(Waiting {
            fire,
            cutoff,
            catch_up,
            why,
        });
    };
    if let Some(cutoff) = cutoff.filter(|c| now >= *c) {
        return skip(
            actions,
            format!("its window closed at {}", short_time(cutoff)),
        );
    }
    if let Some(active) = &mut st.active {
        let run = active.run;
        let named = run
            .map(|r| format!("run {r}"))
            .unwrap_or("the last run".into());
        if let Some(why) = &active.needs_operator {
            return skip(
                actions,
                format!("{named} is not finished and waits for an operator ({why})"),
            );
        }
        match entry.overlap() {
            Overlap::Skip => skip(actions, format!("{named} is still running (overlap skip)")),
            Overlap::Queue if st.waiting.is_some() => skip(
                actions,
                "one fire already waits (overlap queue keeps one)".into(),
            ),
            Overlap::Queue => wait(
                st,
                actions,
                format!("queued until {named} ends (overlap queue)"),
            ),
            Overlap::Cancel => {
                if !active.cancelling {
                    active.cancelling = true;
                    actions.push(Action::Cancel {
                        run,
                        pid: active.pid,
                    });
                    let why = format!("the {} fire replaces it (overlap cancel)", short_time(fire));
                    actions.push(record(
                        now,
                        Some(active.fire),
                        What::Cancelling { run, why },
                    ));
                }
                if let Some(older) = st.waiting.take() {
                    let why = "a later fire replaces it (overlap cancel)".to_string();
                    actions.push(record(now, Some(older.fire), What::Skipped { why }));
                }
                wait(
                    st,
                    actions,
                    format!("starts when {named} has ended (overlap cancel)"),
                );
            }
        }
        return;
    }
    if let Some(older) = st.waiting.take() {
        let why = "a later fire came due while it waited".to_string();
        actions.push(record(now, Some(older.fire), What::Skipped { why }));
    }
    let waiting = Waiting {
        fire,
        cutoff,
        catch_up,
        why: String::new(),
    };
    start_or_wait(entry, st, waiting, now, busy, actions);
}

/// Nothing of this runbook runs: start the fire unless its window closed
/// or a blackout holds (then it is skipped), or a lock is taken (then it
/// waits, within its window).
fn start_or_wait(
    entry: &Entry,
    st: &mut EntryState,
    mut waiting: Waiting,
    now: Ms,
    busy: &dyn Fn(&[String]) -> Option<String>,
    actions: &mut Vec<Action>,
) {
    let fire = waiting.fire;
    if let Some(cutoff) = waiting.cutoff.filter(|c| now + too_late(c - fire) >= *c) {
        let why = format!(
            "its window closed at {} before it could start",
            short_time(cutoff)
        );
        actions.push(record(now, Some(fire), What::Skipped { why }));
        return;
    }
    if let Some(blackout) = entry.blackouts.iter().find(|b| b.covers(instant(now))) {
        let why = format!("blackout {}", blackout.text);
        actions.push(record(now, Some(fire), What::Skipped { why }));
        return;
    }
    let why = match busy(&entry.locks) {
        Some(holder) => holder,
        None => {
            st.active = Some(Active {
                fire,
                run: None,
                pid: None,
                cutoff: waiting.cutoff,
                cancelling: false,
                needs_operator: None,
                resumed: false,
                catch_up: waiting.catch_up,
                started_at: None,
                blocked: None,
            });
            st.last_fire = Some(fire);
            actions.push(Action::Start {
                fire,
                cutoff: waiting.cutoff,
                catch_up: waiting.catch_up,
            });
            return;
        }
    };
    if waiting.cutoff.is_none() {
        // Without a window there is no time by which it must start: it is
        // not started late at some unknown hour.
        actions.push(record(now, Some(fire), What::Skipped { why }));
        return;
    }
    if waiting.why != why {
        actions.push(record(now, Some(fire), What::Waiting { why: why.clone() }));
        waiting.why = why;
    }
    st.waiting = Some(waiting);
}

#[cfg(test)]
mod tests;
