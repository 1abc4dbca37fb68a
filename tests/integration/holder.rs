//! The process that holds the store serves it: while a run is live,
//! `status`, `logs`, `approve` and `cancel` from other terminals go through
//! the state directory's socket (`STATE/runbook.sock`) to that process, and
//! see every run, not only the live one. The socket is private, a stale one
//! (its process died) is replaced, and a long state directory path is no
//! obstacle.

use crate::common::*;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

/// A runbook that prints a line, then waits for an approval while a
/// program keeps running.
const LIVE: &str = r#"runbook live {
  run printing {
    command "sh"
    args ["-c", "echo first line; sleep 30"]
    timeout 1m
  }

  approve gate {
    prompt "go on?"
  }

  run after_gate after gate {
    command "true"
  }
}
"#;

#[test]
fn while_a_run_is_live_status_lists_every_run_and_logs_show_its_output_so_far() {
    let dir = scratch("holder-status");
    let quick = write(
        &dir,
        "quick.runbook",
        "runbook quick {\n  run hello {\n    command \"echo\"\n    args [\"hello from run 1\"]\n  }\n}\n",
    );
    let live = write(&dir, "live.runbook", LIVE);
    let state = dir.join("state");
    let first = rb(&state, &["run", path(&quick)]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let child = spawn(&state, &["run", path(&live)]);
    wait_for(&state, 2, |s, _| s == "waiting for approval");

    // Both runs, the finished one too, while run 2's process holds the store.
    let list = rb(&state, &["status"]);
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    let text = stdout(&list);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("succeeded") && lines[0].contains("quick"),
        "{text}"
    );
    assert!(lines[1].contains("live"), "{text}");
    // The finished run's logs, and the live run's running step, so far.
    let logs = rb(&state, &["logs", "1"]);
    assert!(
        stdout(&logs).contains("hello from run 1"),
        "{}",
        stderr(&logs)
    );
    let logs = rb(&state, &["logs", "2", "printing"]);
    assert_eq!(logs.status.code(), Some(0), "{}", stderr(&logs));
    assert_eq!(
        stdout(&logs),
        "── printing (attempt 1, running: what it printed so far) ──\n  first line\n"
    );

    let approved = rb(&state, &["approve", "2", "gate", "--as", "alice"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    assert_eq!(
        stdout(&approved),
        "approved `gate` of run 2 as alice; the run goes on\n"
    );
    let cancelled = rb(&state, &["cancel", "2"]);
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let out = child.wait_with_output().expect("the run ends");
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(status(&state, 2).0, "cancelled");
    assert!(
        !state.join("runbook.sock").exists(),
        "the socket goes with its process"
    );
}

#[test]
fn the_socket_is_private_and_one_left_by_a_dead_process_is_replaced() {
    let dir = scratch("holder-stale");
    let live = write(&dir, "live.runbook", LIVE);
    let state = dir.join("state");
    let first = rb(
        &state,
        &[
            "run",
            path(&write(
                &dir,
                "quick.runbook",
                "runbook quick {\n  run hello {\n    command \"true\"\n  }\n}\n",
            )),
        ],
    );
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    // A socket whose process died: its file stays, no one answers.
    let socket = state.join("runbook.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("binds"));
    assert!(socket.exists());
    let shown = rb(&state, &["status", "1"]);
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    assert!(stdout(&shown).contains("succeeded"), "{}", stdout(&shown));

    let mut child = spawn(&state, &["run", path(&live)]);
    wait_for(&state, 2, |s, _| s == "waiting for approval");
    let meta = std::fs::symlink_metadata(&socket).expect("the socket is there");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let cancelled = rb(&state, &["cancel", "2"]);
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let _ = child.wait();
    assert!(!socket.exists());
}

#[test]
fn a_state_directory_too_long_for_a_socket_address_is_served_all_the_same() {
    let dir = scratch("holder-long");
    let live = write(&dir, "live.runbook", LIVE);
    // A socket address holds 107 bytes; this path alone is longer.
    let state = dir.join(format!("state-{}", "d".repeat(120)));
    let child = spawn(&state, &["run", path(&live)]);
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    let approved = rb(&state, &["approve", "1", "gate", "--as", "alice"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    assert!(
        stdout(&approved).contains("the run goes on"),
        "{}",
        stdout(&approved)
    );
    let cancelled = rb(&state, &["cancel", "1"]);
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let out = child.wait_with_output().expect("ends");
    assert!(stdout(&out).contains("gate"), "{}", stdout(&out));
}

#[test]
fn a_stopped_holder_is_waited_for_within_a_bound() {
    let dir = scratch("holder-stopped");
    let live = write(&dir, "live.runbook", LIVE);
    let state = dir.join("state");
    let mut child = spawn(&state, &["run", path(&live)]);
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    let pid = child.id() as i32;
    // SAFETY: kill(2) on the test's own child.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    // A process that is stopped takes the connection (the kernel does) and
    // never answers: `status` gives up after its bound, in one sentence.
    let began = std::time::Instant::now();
    let shown = command(&state, &["status"])
        .env("RUNBOOK_ANSWER_WITHIN", "500ms")
        .output()
        .expect("runs");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(shown.status.code(), Some(1));
    assert!(
        stderr(&shown).starts_with("error: the process that holds the store did not answer within"),
        "{}",
        stderr(&shown)
    );
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    let shown = rb(&state, &["status"]);
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn another_terminal_watches_a_live_run_as_its_own_terminal_shows_it() {
    use std::io::BufRead;
    let dir = scratch("holder-watch");
    let file = write(
        &dir,
        "w.runbook",
        r#"runbook w {
  run before {
    command "echo"
    args ["printed before the watch"]
  }

  approve gate after before {
    prompt "go on?"
  }

  run after_gate after gate {
    command "sh"
    args ["-c", "echo printed while watched; exit 3"]
  }
}
"#,
    );
    let state = dir.join("state");
    let run = spawn(&state, &["run", path(&file)]);
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    let mut watcher = spawn(&state, &["watch", "1"]);
    let mut lines = std::io::BufReader::new(watcher.stdout.take().expect("piped")).lines();
    let mut seen = Vec::new();
    // What happened before the watch is shown first, as it was.
    for line in lines.by_ref() {
        let line = line.expect("a line");
        let waiting = line.contains("gate waiting for approval");
        seen.push(line);
        if waiting {
            break;
        }
    }
    let approved = rb(&state, &["approve", "1", "gate", "--as", "alice"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    seen.extend(lines.map(|l| l.expect("a line")));
    let watched = watcher.wait().expect("the watch ends");
    let text = seen.join("\n");
    assert_eq!(watched.code(), Some(1), "exits as the run does: {text}");
    assert!(seen[0].starts_with("watching run 1: w ("), "{text}");
    for said in [
        "before succeeded",
        "gate succeeded",
        "approved by alice",
        "after_gate | printed while watched",
        "after_gate failed",
        "run 1 failed",
    ] {
        assert!(text.contains(said), "`{said}` in:\n{text}");
    }
    let out = run.wait_with_output().expect("the run ends");
    assert_eq!(out.status.code(), Some(1));

    // A run that has finished, or that no one drives, is not watched.
    let finished = rb(&state, &["watch", "1"]);
    assert_eq!(finished.status.code(), Some(1));
    assert_eq!(
        stderr(&finished),
        "error: run 1 has finished (failed); `runbook status 1` shows how, `runbook logs 1` what it printed\n"
    );
    let none = rb(&state, &["watch", "9"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("no run 9"), "{}", stderr(&none));
}

#[test]
fn a_watcher_is_told_when_the_runs_process_is_killed() {
    let dir = scratch("holder-watch-killed");
    let live = write(&dir, "live.runbook", LIVE);
    let state = dir.join("state");
    let mut run = spawn(&state, &["run", path(&live)]);
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    let watcher = spawn(&state, &["watch", "1"]);
    std::thread::sleep(Duration::from_millis(500));
    let _ = run.kill();
    let _ = run.wait();
    let out = watcher.wait_with_output().expect("the watch ends");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("run 1's process went away (killed?) before the run finished"),
        "{}",
        stderr(&out)
    );
}
