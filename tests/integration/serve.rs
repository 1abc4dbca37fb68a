//! `runbook serve`, through the library with a clock the tests set, and the
//! runs it starts as the real binary: fires, windows, overlap, locks,
//! catch-up after days down, a restart that resumes a run, SIGTERM, reload.

use crate::common;
mod serving;
mod submitted;

use crate::common::{scratch, write};
use chrono::Utc;
use serving::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn a_fire_starts_a_run_and_the_history_keeps_how_it_ended() {
    let dir = scratch("serve-fire");
    let state = dir.join("state");
    let out = dir.join("out");
    let schedule = "\"0 2 * * *\" timezone \"UTC\" window 2h";
    write(&dir, "nightly.runbook", nightly(&out, schedule, MARK));
    let s = serve_in(&dir, &state, TestClock::at(utc("2026-11-28T01:59:57Z")));
    s.wait_for("loaded `nightly`", 5);
    s.wait_for(
        "nightly: the 2026-11-28 02:00:00 UTC fire: started run 1",
        10,
    );
    s.wait_for(
        "nightly: the 2026-11-28 02:00:00 UTC fire: run 1 succeeded",
        20,
    );
    let list = || {
        let listed = common::runbook(&[
            "--state",
            &state.display().to_string(),
            "schedule",
            &dir.display().to_string(),
        ]);
        assert_eq!(listed.status.code(), Some(0), "{}", common::stderr(&listed));
        common::stdout(&listed)
    };
    // While it serves (it holds its store), and after.
    let serving = list();
    s.stop();
    for text in [serving, list()] {
        assert!(
            text.contains("history    the 2026-11-28 02:00:00 UTC fire: run 1 succeeded"),
            "{text}"
        );
        assert!(
            text.contains("\"0 2 * * *\" UTC: At 02:00; window 2h; overlap skip"),
            "{text}"
        );
    }
    assert_eq!(read(&out), "ran\n", "one fire, one run");
}

#[test]
fn the_window_closing_stops_the_run_and_its_on_failure_steps_run() {
    let dir = scratch("serve-window");
    let state = dir.join("state");
    let out = dir.join("out");
    let steps = "  run slow {\n    command \"sleep\"\n    args [\"60\"]\n  }\n\n  on failure {\n    run undo {\n      command \"sh\"\n      args [\"-c\", \"echo undone >> \\\"$1\\\"\", \"sh\", \"${out}\"]\n    }\n  }";
    write(
        &dir,
        "nightly.runbook",
        nightly(&out, "\"0 2 * * *\" window 3s", steps),
    );
    let s = serve_in(&dir, &state, TestClock::at(utc("2026-11-28T01:59:57Z")));
    s.wait_for("started run 1", 10);
    let ended = s.wait_for("run 1 failed", 30);
    s.stop();
    assert_eq!(read(&out), "undone\n", "the on failure step ran");
    let logs = common::runbook(&[
        "--state",
        &state.join("scheduled/nightly").display().to_string(),
        "status",
        "1",
    ]);
    let status = common::stdout(&logs);
    assert!(
        status.contains("its window closed at 2026-11-28 02:00:03 UTC"),
        "{status}\n{ended}"
    );
}

#[test]
fn overlap_cancel_cancels_the_running_run_for_the_new_fire() {
    let dir = scratch("serve-cancel");
    let state = dir.join("state");
    let steps = "  run slow {\n    command \"sleep\"\n    args [\"60\"]\n  }";
    write(
        &dir,
        "nightly.runbook",
        nightly(&dir.join("out"), "\"*/3 * * * * *\" overlap cancel", steps),
    );
    let s = serve_in(&dir, &state, TestClock::at(Utc::now()));
    s.wait_for("started run 1", 10);
    s.wait_for("cancelling run 1", 10);
    s.wait_for("run 1 cancelled", 15);
    s.wait_for("started run 2", 10);
    let lines = s.stop();
    let started = lines.iter().filter(|l| l.contains(": started run")).count();
    assert!(started >= 2, "{}", lines.join("\n"));
}

#[test]
fn a_lock_shared_by_two_runbooks_keeps_them_apart_by_hand_or_scheduled() {
    let dir = scratch("serve-lock");
    let state = dir.join("state");
    let by_hand = scratch("serve-lock-hand");
    let holder = write(
        &by_hand,
        "holder.runbook",
        "runbook holder {\n  lock \"neo-db\"\n\n  run hold {\n    command \"sleep\"\n    args [\"7\"]\n  }\n}\n",
    );
    let maint = "runbook maint {\n  schedule \"0 2 * * *\" window 1m\n  lock \"neo-db\"\n\n  run work {\n    command \"sleep\"\n    args [\"3\"]\n  }\n}\n";
    write(&dir, "maint.runbook", maint);
    let hand = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(&state)
        .arg("run")
        .arg(&holder)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let mut hand = hand;
    let locks = state.join("locks");
    let start = Instant::now();
    while runbook::store::locks::probe(&locks, &["neo-db".to_string()]).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the run by hand never took its lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = serve_in(&dir, &state, TestClock::at(utc("2026-11-28T01:59:57Z")));
    let waiting = s.wait_for(
        "maint: the 2026-11-28 02:00:00 UTC fire: waiting: lock `neo-db` is held by holder run 1",
        10,
    );
    assert!(waiting.contains("process"), "{waiting}");
    assert!(hand.wait().expect("ends").success());
    s.wait_for("maint: the 2026-11-28 02:00:00 UTC fire: started run 1", 10);
    // Now the scheduled run holds it: a run by hand is refused at once.
    let refused = common::runbook(&[
        "--state",
        &state.display().to_string(),
        "run",
        &holder.display().to_string(),
    ]);
    assert_eq!(refused.status.code(), Some(5));
    let said = common::stderr(&refused);
    assert!(
        said.contains("lock `neo-db` is held by maint run 1"),
        "{said}"
    );
    // A `resume` or `retry` by hand in the runbook's own state directory
    // takes the same locks.
    let pointed = runbook::store::locks::lock_dir(&state.join("scheduled/maint"));
    assert_eq!(pointed.canonicalize().ok(), locks.canonicalize().ok());
    s.wait_for("run 1 succeeded", 15);
    s.stop();
}

#[test]
fn after_three_days_down_missed_fires_are_recorded_and_the_latest_caught_up() {
    let dir = scratch("serve-catch-up");
    let state = dir.join("state");
    let out = dir.join("out");
    let schedule = "\"0 2 * * *\" window 2h catch-up 6h";
    write(&dir, "nightly.runbook", nightly(&out, schedule, MARK));
    let s = serve_in(&dir, &state, TestClock::at(utc("2026-11-25T01:00:00Z")));
    s.wait_for("serving 1 scheduled runbooks", 5);
    std::thread::sleep(Duration::from_millis(500));
    s.stop();
    let s = serve_in(&dir, &state, TestClock::at(utc("2026-11-28T03:00:00Z")));
    for day in 25..=27 {
        s.wait_for(
            &format!("the 2026-11-{day} 02:00:00 UTC fire: missed: the scheduler was not running"),
            5,
        );
    }
    s.wait_for("the 2026-11-28 02:00:00 UTC fire: missed: the scheduler was not running; the latest missed fire, so catch-up considers it now", 5);
    s.wait_for(
        "the 2026-11-28 02:00:00 UTC fire: started run 1 (catching up)",
        10,
    );
    s.wait_for("run 1 succeeded", 20);
    s.stop();
    assert_eq!(read(&out), "ran\n");
}

#[test]
fn a_restarted_scheduler_resumes_the_run_it_had_started() {
    let dir = scratch("serve-restart");
    let state = dir.join("state");
    let out = dir.join("out");
    let steps = &sleep_then_mark("2.37", "    on-interrupt rerun\n");
    write(
        &dir,
        "nightly.runbook",
        nightly(&out, "\"0 2 * * *\" window 2h", steps),
    );
    let clock = TestClock::at(utc("2026-11-28T01:59:57Z"));
    let s = serve_in(&dir, &state, Arc::clone(&clock));
    s.wait_for("started run 1", 10);
    // Its step's program runs (killed before that, the run's process could
    // leave it being started, and it would start only after the wait below
    // had seen no `sleep`).
    let start = Instant::now();
    while !sleeping("2.37") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the step's program never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The scheduler dies, and so does the run's process (not its step's).
    s.crash();
    let owner =
        std::fs::read_to_string(state.join("scheduled/nightly/owner.json")).unwrap_or_default();
    let pid: serde_json::Value = serde_json::from_str(&owner).unwrap_or_default();
    let pid = pid["pid"].as_i64().expect("the run's process is known");
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    // Its step's program outlives it (its own process group): resuming
    // waits until it has ended, as for any run.
    let start = Instant::now();
    while sleeping("2.37") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the step's program never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = serve_in(&dir, &state, clock);
    s.wait_for(
        "nightly: the 2026-11-28 02:00:00 UTC fire: resumed run 1",
        10,
    );
    s.wait_for("run 1 succeeded", 20);
    s.stop();
    assert_eq!(read(&out), "ran\n", "the second step ran once");
}

#[test]
fn a_file_that_stops_checking_keeps_its_last_good_schedule_and_bad_files_are_said() {
    let dir = scratch("serve-reload");
    let state = dir.join("state");
    let out = dir.join("out");
    let good = nightly(&out, "\"0 2 * * *\"", MARK);
    let file = write(&dir, "nightly.runbook", &good);
    write(
        &dir,
        "zone.runbook",
        nightly(&out, "\"0 2 * * *\" timezone \"Europe/Amsterdm\"", MARK)
            .replace("nightly", "zone"),
    );
    write(
        &dir,
        "never.runbook",
        nightly(&out, "\"0 0 30 2 *\"", MARK).replace("nightly", "never"),
    );
    let s = serve_in(&dir, &state, TestClock::at(utc("2026-11-28T01:00:00Z")));
    s.wait_for("loaded `nightly`", 5);
    s.wait_for("did you mean `Europe/Amsterdam`?", 5);
    s.wait_for("never fires", 5);
    std::thread::sleep(Duration::from_millis(1100)); // a new modification time
    std::fs::write(&file, good.replace("schedule", "schedul")).expect("writes");
    s.wait_for(
        "nightly.runbook does not check; it keeps its last good schedule",
        5,
    );
    std::fs::write(&file, good.replace("0 2 * * *", "30 2 * * *")).expect("writes");
    s.wait_for("reloaded `nightly`: 30 2 * * *", 5);
    s.stop();

    let missing = common::runbook(&[
        "serve",
        "/nonexistent/runbooks",
        "--state",
        &state.display().to_string(),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        common::stderr(&missing),
        "error: cannot read the directory /nonexistent/runbooks: no such file\n"
    );
}

#[test]
fn sigterm_stops_the_runs_at_a_checkpoint_and_the_next_start_resumes_them() {
    let dir = scratch("serve-sigterm");
    let state = dir.join("state");
    let out = dir.join("out");
    let steps = &sleep_then_mark("2", "");
    write(
        &dir,
        "nightly.runbook",
        nightly(&out, "\"*/2 * * * * *\"", steps),
    );
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
            .arg("--state")
            .arg(&state)
            .arg("serve")
            .arg(&dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starts")
    };
    let lines = |child: &mut std::process::Child| {
        let out = child.stdout.take().expect("piped");
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let kept = Arc::clone(&seen);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                kept.lock().expect("lines").push(line);
            }
        });
        seen
    };
    let wait = |seen: &Arc<Mutex<Vec<String>>>, text: &str| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if seen.lock().expect("lines").iter().any(|l| l.contains(text)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no `{text}`:\n{}", seen.lock().expect("lines").join("\n"));
    };
    let mut first = start();
    let seen = lines(&mut first);
    wait(&seen, "started run 1");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    let status = first.wait().expect("ends");
    assert!(status.success(), "{status:?}");
    wait(
        &seen,
        "run 1 stopped at a checkpoint; it is resumed when the scheduler starts again",
    );
    wait(&seen, "UTC stopped");
    assert_eq!(read(&out), "", "the second step did not start");

    let mut again = start();
    let seen = lines(&mut again);
    wait(&seen, "resumed run 1");
    wait(&seen, "run 1 succeeded");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &again.id().to_string()])
        .status();
    let _ = again.wait();
    assert!(read(&out).starts_with("ran\n"), "{}", read(&out));
}

#[test]
fn a_restarted_scheduler_watches_a_run_that_outlived_it() {
    let dir = scratch("serve-adopt");
    let state = dir.join("state");
    let out = dir.join("out");
    let steps = &sleep_then_mark("3", "");
    write(
        &dir,
        "nightly.runbook",
        nightly(&out, "\"0 2 * * *\" window 2h", steps),
    );
    let clock = TestClock::at(utc("2026-11-28T01:59:57Z"));
    let s = serve_in(&dir, &state, Arc::clone(&clock));
    s.wait_for("started run 1", 10);
    s.crash();
    let s = serve_in(&dir, &state, clock);
    s.wait_for("nightly: run 1 is still running (process", 10);
    s.wait_for("the 2026-11-28 02:00:00 UTC fire: run 1 succeeded", 20);
    let lines = s.stop();
    assert!(
        !lines.iter().any(|l| l.contains("resumed")),
        "{}",
        lines.join("\n")
    );
    assert_eq!(read(&out), "ran\n");
}

#[test]
fn overlap_queue_starts_the_waiting_fire_when_the_run_ends() {
    let dir = scratch("serve-queue");
    let state = dir.join("state");
    let steps = "  run slow {\n    command \"sleep\"\n    args [\"7\"]\n  }";
    write(
        &dir,
        "nightly.runbook",
        nightly(&dir.join("out"), "\"*/3 * * * * *\" overlap queue", steps),
    );
    let s = serve_in(&dir, &state, TestClock::at(Utc::now()));
    s.wait_for("started run 1", 10);
    s.wait_for("waiting: queued until run 1 ends (overlap queue)", 10);
    s.wait_for(
        "skipped: one fire already waits (overlap queue keeps one)",
        10,
    );
    s.wait_for("run 1 succeeded", 15);
    s.wait_for("started run 2", 5);
    s.stop();
}

#[test]
fn a_directory_blackout_skips_every_runbook_and_a_second_scheduler_is_refused() {
    let dir = scratch("serve-blackout");
    let state = dir.join("state");
    let out = dir.join("out");
    write(
        &dir,
        "nightly.runbook",
        nightly(&out, "\"0 2 * * *\" window 2h", MARK),
    );
    write(
        &dir,
        "blackouts.runbook",
        "runbook blackouts {\n  blackout \"2026-12-24\" until \"2027-01-02\"\n}\n",
    );
    let s = serve_in(&dir, &state, TestClock::at(utc("2026-12-25T01:59:57Z")));
    s.wait_for("1 directory-wide blackouts", 5);
    s.wait_for(
        "the 2026-12-25 02:00:00 UTC fire: skipped: blackout \"2026-12-24\" until \"2027-01-02\"",
        10,
    );
    let second = common::runbook(&[
        "--state",
        &state.display().to_string(),
        "serve",
        &dir.display().to_string(),
    ]);
    assert_eq!(second.status.code(), Some(1));
    let said = common::stderr(&second);
    assert!(said.contains("is in use by another process: is `runbook serve` already running on this state directory?"), "{said}");
    s.stop();
    assert_eq!(read(&out), "", "nothing ran");
}

#[test]
fn schedule_lists_the_fires_across_a_clock_change_as_the_book_says() {
    let dir = scratch("serve-list-dst");
    let out = dir.join("out");
    let amsterdam = "\"30 2 * * *\" timezone \"Europe/Amsterdam\" window 30m";
    write(&dir, "nightly.runbook", nightly(&out, amsterdam, MARK));
    let state = dir.join("state").display().to_string();
    let list = |from: &str| {
        let o = common::runbook(&[
            "--state",
            &state,
            "schedule",
            &dir.display().to_string(),
            "--count",
            "3",
            "--from",
            from,
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
        common::stdout(&o)
    };
    // Spring: 02:30 does not exist on 28 March 2027; it fires once, at 03:00.
    let spring = list("2027-03-27T00:00:00Z");
    assert!(spring.contains("next       2027-03-27 01:30:00 UTC (2027-03-27 02:30 Europe/Amsterdam)\n             2027-03-28 01:00:00 UTC (2027-03-28 03:00 Europe/Amsterdam)\n             2027-03-29 00:30:00 UTC (2027-03-29 02:30 Europe/Amsterdam)"), "{spring}");
    // Autumn: 02:30 comes twice on 31 October 2027; it fires once, at the first.
    let autumn = list("2027-10-30T12:00:00Z");
    assert!(autumn.contains("next       2027-10-31 00:30:00 UTC (2027-10-31 02:30 Europe/Amsterdam)\n             2027-11-01 01:30:00 UTC (2027-11-01 02:30 Europe/Amsterdam)"), "{autumn}");
}

#[test]
fn a_lock_outlives_a_killed_run_while_its_step_still_runs() {
    let dir = scratch("serve-lock-kill");
    let state = dir.join("state");
    let file = write(
        &dir,
        "holder.runbook",
        "runbook holder {\n  lock \"neo-db\"\n\n  run hold {\n    command \"sleep\"\n    args [\"3.71\"]\n  }\n}\n",
    );
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(&state)
        .arg("run")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let locks = state.join("locks");
    let names = ["neo-db".to_string()];
    let start = Instant::now();
    while !sleeping("3.71") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the step never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    run.kill().expect("SIGKILL");
    run.wait().expect("reaped");
    let held = runbook::store::locks::probe(&locks, &names);
    assert!(
        held.is_some_and(|h| h.contains("held by holder run 1")),
        "the step's program still holds it"
    );
    while sleeping("3.71") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the step never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        runbook::store::locks::probe(&locks, &names),
        None,
        "released with the last holder"
    );
}

#[test]
fn a_fire_of_a_file_that_stopped_checking_runs_its_last_good_version() {
    let dir = scratch("serve-last-good");
    let state = dir.join("state");
    let out = dir.join("out");
    let good = nightly(&out, "\"0 2 * * *\" window 2h", MARK);
    let file = write(&dir, "nightly.runbook", &good);
    let s = serve_in(&dir, &state, TestClock::at(utc("2026-11-28T01:59:57Z")));
    s.wait_for("loaded `nightly`", 5);
    std::fs::write(&file, good.replace("command", "comand")).expect("writes");
    s.wait_for(
        "nightly.runbook does not check; it keeps its last good schedule",
        5,
    );
    s.wait_for(
        "no longer checks; running its last good version, kept in",
        10,
    );
    s.wait_for("run 1 succeeded", 20);
    s.stop();
    assert_eq!(read(&out), "ran\n");
}
