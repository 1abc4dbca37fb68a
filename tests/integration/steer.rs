//! Steering a run from other terminals and deciding about interrupted
//! steps: approvals (live and recorded), cancel, a step that changes
//! systems left mid-flight.

use crate::common::*;
use std::time::{Duration, Instant};

const GATED: &str = "runbook t {\n  param ledger: path\n  approve gate {\n    prompt \"Go on?\"\n    approvers [\"alice\"]\n  }\n  run after_gate after gate {\n    command \"sh\"\n    args [\"-c\", \"echo $1 >> \\\"$2\\\"\", \"sh\", \"after_gate\", \"${ledger}\"]\n  }\n}\n";

#[test]
fn an_approval_from_another_terminal_reaches_the_waiting_process() {
    let dir = scratch("run-approve-live");
    let ledger = dir.join("ledger");
    let file = write(&dir, "t.runbook", GATED);
    let state = dir.join("state");
    let child = spawn(
        &state,
        &[
            "run",
            path(&file),
            "-p",
            &format!("ledger={}", path(&ledger)),
        ],
    );
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    let refused = rb(&state, &["approve", "1", "gate", "--as", "mallory"]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        stderr(&refused),
        "error: `mallory` may not approve `gate`; it may be approved by alice\n"
    );
    let approved = rb(&state, &["approve", "1", "gate", "--as", "alice"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    let out = child.wait_with_output().expect("the run ends");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("gate succeeded"), "{}", stdout(&out));
    assert_eq!(ledger_lines(&ledger), ["after_gate"]);
    let again = rb(&state, &["approve", "1", "gate", "--as", "alice"]);
    assert_eq!(
        stderr(&again),
        "error: the run has finished (succeeded); there is nothing to approve\n"
    );
}

#[test]
fn an_approval_recorded_while_no_process_runs_is_picked_up_by_resume() {
    let dir = scratch("run-approve-offline");
    let ledger = dir.join("ledger");
    let file = write(&dir, "t.runbook", GATED);
    let state = dir.join("state");
    let child = spawn(
        &state,
        &[
            "run",
            path(&file),
            "-p",
            &format!("ledger={}", path(&ledger)),
        ],
    );
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    interrupt(&child);
    let out = child.wait_with_output().expect("the run ends");
    assert_eq!(out.status.code(), Some(130), "{}", stdout(&out));
    assert!(stdout(&out).contains("continue it with: runbook resume 1"));
    let (run_state, _) = status(&state, 1);
    assert_eq!(run_state, "waiting for approval");
    let approved = rb(&state, &["approve", "1", "gate", "--as", "alice"]);
    assert_eq!(
        stdout(&approved),
        "approved `gate` of run 1 as alice; continue the run with: runbook resume 1\n"
    );
    let resumed = rb(&state, &["resume", "1"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", stdout(&resumed));
    assert_eq!(ledger_lines(&ledger), ["after_gate"]);
}

#[test]
fn cancel_from_another_terminal_stops_the_whole_process_group() {
    let dir = scratch("run-cancel");
    let pidfile = dir.join("pid");
    let file = write(
        &dir,
        "t.runbook",
        format!("runbook t {{\n  run long {{\n    shell \"sleep 60 & echo $! > {}; wait\"\n  }}\n  run never after long {{\n    command \"true\"\n  }}\n}}\n", path(&pidfile)),
    );
    let state = dir.join("state");
    let child = spawn(&state, &["run", path(&file)]);
    wait_for(&state, 1, |_, steps| {
        steps.iter().any(|(n, s)| n == "long" && s == "running")
    });
    let start = Instant::now();
    while !pidfile.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let cancelled = rb(&state, &["cancel", "1"]);
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let out = child.wait_with_output().expect("the run ends");
    assert_eq!(out.status.code(), Some(4), "{}", stdout(&out));
    let sleeper: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    std::thread::sleep(Duration::from_millis(200));
    let stat = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
    let alive = stat
        .split(") ")
        .nth(1)
        .is_some_and(|rest| !rest.starts_with('Z'));
    assert!(
        !alive,
        "the sleep the step started in the background was killed"
    );
    let (run_state, steps) = status(&state, 1);
    assert_eq!(run_state, "cancelled");
    assert_eq!(steps[1].1, "pending", "nothing more started");
    let again = rb(&state, &["cancel", "1"]);
    assert_eq!(
        stderr(&again),
        "error: run 1 has already finished (cancelled); there is nothing to cancel\n"
    );
}

#[test]
fn an_interrupted_step_that_changes_systems_waits_for_a_decision() {
    let dir = scratch("run-ask");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  run migrate {\n    command \"sh\"\n    args [\"-c\", \"echo copied 1 of 3 tables; echo slow >&2; exec sleep 60\"]\n  }\n  run after_it after migrate {\n    command \"true\"\n  }\n}\n",
    );
    let state = dir.join("state");
    let mut child = spawn(&state, &["run", path(&file)]);
    wait_for(&state, 1, |_, steps| {
        steps.iter().any(|(n, s)| n == "migrate" && s == "running")
    });
    // What it printed reached the disk before the kill.
    let began = Instant::now();
    while !std::fs::read_to_string(state.join("output/1/0.1")).is_ok_and(|t| t.contains("slow")) {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "no output on disk"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (_, steps) = status(&state, 1);
    assert_eq!(steps[0].1, "interrupted");
    // Before deciding, the person sees what the interrupted attempt printed.
    let logs = rb(&state, &["logs", "1", "migrate"]);
    assert_eq!(
        stdout(&logs),
        "── migrate (attempt 1, interrupted: what it printed before its runbook stopped) ──\n  copied 1 of 3 tables\n! slow\n"
    );
    // SIGKILL does not reach the step's program: resume sees it still runs.
    let busy = rb(&state, &["resume", "1"]);
    assert_eq!(busy.status.code(), Some(1));
    let text = stderr(&busy);
    assert!(
        text.contains("was interrupted, but the programs of these steps are still running: `migrate` (process group "),
        "{text}"
    );
    let pgid: i32 = text
        .split("process group ")
        .nth(1)
        .and_then(|rest| rest.split([')', ',']).next())
        .and_then(|n| n.parse().ok())
        .expect("a process group");
    // SAFETY: kill(2) on the group the test's own step started.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(300));
    let asked = rb(&state, &["resume", "1"]);
    assert_eq!(asked.status.code(), Some(1));
    assert!(stderr(&asked).contains("these steps were interrupted while running and may have done part of their work: migrate"), "{}", stderr(&asked));
    assert!(stderr(&asked).contains("runbook resume 1 --rerun migrate"));
    let done = rb(&state, &["resume", "1", "--done", "migrate"]);
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}{}",
        stdout(&done),
        stderr(&done)
    );
    assert!(
        !stdout(&done).contains("migrate started"),
        "{}",
        stdout(&done)
    );
    assert!(
        !state.join("output/1").exists(),
        "a finished run's journal holds its output; the files are gone"
    );
}

#[test]
fn a_cancel_whose_run_process_dies_is_not_waited_out_and_says_what_happened() {
    let dir = scratch("run-cancel-dies");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  wait long { duration 30s }\n  run after_it after long {\n    command \"true\"\n  }\n}\n",
    );
    let state = dir.join("state");
    let mut child = spawn(&state, &["run", path(&file)]);
    wait_for(&state, 1, |s, _| s == "running");
    let pid = child.id() as i32;
    // Stopped, it cannot answer; killed a moment later, it never will.
    // SAFETY: kill(2) on the test's own child.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let began = Instant::now();
    let cancel = command(&state, &["cancel", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cancel starts");
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    let out = cancel.wait_with_output().expect("cancel ends");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "the full 10 s were waited: {:?}",
        began.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "note: the process that holds the store ended before it answered; the journal says what happened"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "run 1 cancelled\n");
    assert_eq!(status(&state, 1).0, "cancelled");
}

#[test]
fn a_rejection_with_its_reason_fails_the_step_live_or_recorded_and_history_says_who() {
    let dir = scratch("run-reject");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  approve gate {\n    prompt \"promote?\"\n  }\n  run promote after gate {\n    command \"true\"\n  }\n  on failure {\n    run roll_back {\n      command \"echo\"\n      args [\"rolling back\"]\n    }\n  }\n}\n",
    );
    let state = dir.join("state");
    let child = spawn(&state, &["run", path(&file)]);
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    let empty = rb(&state, &["reject", "1", "gate", "--reason", " "]);
    assert_eq!(empty.status.code(), Some(1));
    assert_eq!(stderr(&empty), "error: say why with --reason TEXT\n");
    // Without a name, the Unix user is who rejects (the tests run as root).
    let rejected = command(
        &state,
        &["reject", "1", "gate", "--reason", "the canary is red"],
    )
    .env_remove("RUNBOOK_ALLOW_AS")
    .output()
    .expect("runs");
    assert_eq!(rejected.status.code(), Some(0), "{}", stderr(&rejected));
    assert_eq!(
        stdout(&rejected),
        "rejected `gate` of run 1 as root: the step failed; the run goes on to its `on failure` steps\n"
    );
    let out = child.wait_with_output().expect("ends");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("gate failed in"), "{text}");
    assert!(
        text.contains(": rejected by root: the canary is red"),
        "{text}"
    );
    assert!(text.contains("roll_back | rolling back"), "{text}");
    let history = stdout(&rb(&state, &["history", "1"]));
    assert!(
        history.contains("`gate` rejected by root: the canary is red"),
        "{history}"
    );
    // A rejection is an answer like an approval: none after the step ended.
    let late = rb(&state, &["reject", "1", "gate", "--reason", "again"]);
    assert_eq!(late.status.code(), Some(1));
    assert_eq!(
        stderr(&late),
        "error: the run has finished (failed); there is nothing to approve\n"
    );
}
