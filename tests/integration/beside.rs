//! Runs beside a live one: while a process holds a state directory's store,
//! `runbook run`, `resume` and `retry` from other terminals are submitted
//! to it through the socket and driven there, with the submitting
//! terminal's environment and working directory, and followed from that
//! terminal until they end. The holder leaves only once every run it
//! drives has ended.

use crate::common::*;
use std::io::BufRead;
use std::time::Duration;

/// Waits for an approval, then succeeds.
const GATED: &str = r#"runbook gated {
  approve gate {
    prompt "go on?"
  }

  run after_gate after gate {
    command "true"
  }
}
"#;

fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) on the test's own child.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

#[test]
fn a_second_run_goes_beside_the_live_one_with_its_own_environment_and_directory() {
    let dir = scratch("beside-env");
    let gated = write(&dir, "gated.runbook", GATED);
    let here = dir.join("elsewhere");
    std::fs::create_dir_all(&here).expect("mkdir");
    write(
        &here,
        "b.runbook",
        r#"runbook b {
  run where {
    shell "echo \"in $(pwd) with $GREETING\"; echo kept > written.txt"
  }
}
"#,
    );
    let state = dir.join("state");
    let holder = spawn(&state, &["run", path(&gated)]);
    wait_for(&state, 1, |s, _| s == "waiting for approval");

    let second = command(&state, &["run", "b.runbook"])
        .current_dir(&here)
        .env("GREETING", "hello from terminal 2")
        .output()
        .expect("runs");
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let text = stdout(&second);
    assert!(
        text.starts_with("run 2: b (b.runbook), driven by the process that holds the store"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "where | in {} with hello from terminal 2",
            here.display()
        )),
        "the program ran where the command was typed, with its variables: {text}"
    );
    assert!(text.contains("\nrun 2 succeeded in "), "{text}");
    assert_eq!(
        std::fs::read_to_string(here.join("written.txt")).expect("written there"),
        "kept\n"
    );
    // Both runs, one live and one done, in one state directory.
    assert_eq!(status(&state, 1).0, "waiting for approval");
    assert_eq!(status(&state, 2).0, "succeeded");

    let approved = rb(&state, &["approve", "1", "gate", "--as", "alice"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    let out = holder.wait_with_output().expect("ends");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn the_holder_drives_a_submitted_run_to_its_end_after_its_own_has_ended() {
    let dir = scratch("beside-outlives");
    let gated = write(&dir, "gated.runbook", GATED);
    let state = dir.join("state");
    let mut holder = spawn(&state, &["run", path(&gated)]);
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    let submitter = spawn(&state, &["run", path(&gated)]);
    wait_for(&state, 2, |s, _| s == "waiting for approval");

    // The holder's own run ends first; it says so, and stays.
    let approved = rb(&state, &["approve", "1", "gate", "--as", "alice"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    wait_for(&state, 1, |s, _| s == "succeeded");
    let mut lines = std::io::BufReader::new(holder.stdout.take().expect("piped")).lines();
    let said = lines
        .by_ref()
        .map(|l| l.expect("a line"))
        .find(|l| l.contains("goes on driving"))
        .expect("the holder says why it stays");
    assert_eq!(
        said,
        "run 1 has ended; this process goes on driving run 2, started from other terminals, and exits when it ends (Ctrl-C stops it at a checkpoint; `runbook resume` continues it)"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        holder.try_wait().expect("waits").is_none(),
        "still driving run 2"
    );

    let approved = rb(&state, &["approve", "2", "gate", "--as", "bob"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    let submitted = submitter.wait_with_output().expect("ends");
    assert_eq!(submitted.status.code(), Some(0), "{}", stderr(&submitted));
    assert!(
        stdout(&submitted).contains("approved by bob"),
        "{}",
        stdout(&submitted)
    );
    let rest: Vec<String> = lines.map(|l| l.expect("a line")).collect();
    let code = holder.wait().expect("the holder ends").code();
    assert_eq!(code, Some(0), "its own run's code: {rest:?}");
    assert!(
        rest.iter().any(|l| l.starts_with("run 1 succeeded in")),
        "its own last words, as long as its own run took: {rest:?}"
    );
    assert!(!state.join("runbook.sock").exists());
}

#[test]
fn ctrl_c_without_a_terminal_stops_a_submitted_run_which_resumes_through_the_holder() {
    let dir = scratch("beside-stop");
    let gated = write(&dir, "gated.runbook", GATED);
    let two = write(
        &dir,
        "two.runbook",
        r#"runbook two {
  run first {
    shell "echo first; sleep 1"
  }

  run second after first {
    command "echo"
    args ["second"]
  }
}
"#,
    );
    let state = dir.join("state");
    let holder = spawn(&state, &["run", path(&gated)]);
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    let submitter = spawn(&state, &["run", path(&two)]);
    wait_for(&state, 2, |_, steps| {
        steps.iter().any(|(n, s)| n == "first" && s == "running")
    });
    // As a script's Ctrl-C (no terminal to ask): the run stops at a
    // checkpoint, `first` finishing, `second` never starting.
    interrupt(&submitter);
    let out = submitter.wait_with_output().expect("ends");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("the run was asked to stop"), "{text}");
    assert!(
        text.contains("run 2 stopped; continue it with: runbook resume 2"),
        "{text}"
    );
    let (state2, steps) = status(&state, 2);
    assert_eq!(state2, "stopped (not finished)");
    assert!(
        steps.contains(&("first".into(), "succeeded".into())),
        "{steps:?}"
    );

    // Resumed from a third terminal, in the same holder; the live run 1
    // cannot be resumed beside itself.
    let resumed = rb(&state, &["resume", "2"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert!(
        stdout(&resumed).contains("second | second"),
        "{}",
        stdout(&resumed)
    );
    let twice = rb(&state, &["resume", "1"]);
    assert_eq!(twice.status.code(), Some(1));
    assert_eq!(
        stderr(&twice),
        format!(
            "error: run 1 is running (process {} drives it); `runbook watch 1` follows it, `runbook cancel 1` stops it\n",
            holder.id()
        )
    );
    let history = rb(&state, &["history", "2"]);
    assert!(
        stdout(&history).contains("resumed by root"),
        "{}",
        stdout(&history)
    );
    let cancelled = rb(&state, &["cancel", "1"]);
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let _ = holder.wait_with_output();
}

#[test]
fn a_submitting_terminal_killed_leaves_its_run_going_and_a_killed_holder_leaves_both_resumable() {
    let dir = scratch("beside-killed");
    let gated = write(&dir, "gated.runbook", GATED);
    let state = dir.join("state");
    let mut holder = spawn(&state, &["run", path(&gated)]);
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    let mut submitter = spawn(&state, &["run", path(&gated)]);
    wait_for(&state, 2, |s, _| s == "waiting for approval");
    signal(&submitter, libc::SIGKILL);
    let _ = submitter.wait();
    // Its run goes on in the holder: it still waits, and is approved.
    let approved = rb(&state, &["approve", "2", "gate", "--as", "alice"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    assert_eq!(
        stdout(&approved),
        "approved `gate` of run 2 as alice; the run goes on\n"
    );
    wait_for(&state, 2, |s, _| s == "succeeded");

    // A third run, then the holder killed with runs 1 and 3 waiting: each
    // is resumed as after any crash.
    let third = spawn(&state, &["run", path(&gated)]);
    wait_for(&state, 3, |s, _| s == "waiting for approval");
    signal(&holder, libc::SIGKILL);
    let _ = holder.wait();
    let gone = third.wait_with_output().expect("the follower ends");
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).contains("run 3's process went away (killed?) before the run finished"),
        "{}",
        stderr(&gone)
    );
    for run in [1, 3] {
        let resumed = spawn(&state, &["resume", &run.to_string()]);
        wait_for(&state, run, |s, _| s == "waiting for approval");
        let approved = rb(
            &state,
            &["approve", &run.to_string(), "gate", "--as", "carol"],
        );
        assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
        let out = resumed.wait_with_output().expect("ends");
        assert_eq!(out.status.code(), Some(0), "run {run}: {}", stderr(&out));
    }
}
