//! Running and resuming through the real binary: parallel steps, outputs,
//! logs, JSON, failures and retry, secrets, the source a run started with.

use crate::common::*;
use std::process::Stdio;

#[test]
fn a_run_goes_to_the_end_in_parallel_and_keeps_outputs_and_logs() {
    let dir = scratch("run-parallel");
    let ledger = dir.join("ledger");
    let body = [
        ledger_step("first", "", ""),
        ledger_step("left", "first", ""),
        ledger_step("right", "first", ""),
        "  run greet after left, right {\n    command \"echo\"\n    args [\"hello from greet\"]\n  }\n".into(),
        "  run reply after greet {\n    command \"sh\"\n    args [\"-c\", \"echo \\\"got: $1\\\" >> \\\"$2\\\"\", \"sh\", \"${greet.output.stdout}\", \"${ledger}\"]\n  }\n".into(),
    ]
    .concat();
    let file = write(&dir, "t.runbook", ledger_runbook(&body));
    let state = dir.join("state");
    let out = rb(
        &state,
        &[
            "run",
            path(&file),
            "-p",
            &format!("ledger={}", path(&ledger)),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.starts_with("run 1: t ("), "{text}");
    assert!(
        text.contains("continue it with: runbook resume 1"),
        "{text}"
    );
    assert!(
        text.contains("greet | hello from greet"),
        "output is streamed: {text}"
    );
    assert!(text.trim_end().ends_with("run 1 succeeded") || text.contains("run 1 succeeded in"));
    let lines = ledger_lines(&ledger);
    assert_eq!(lines.first().map(String::as_str), Some("first"));
    assert_eq!(
        lines.last().map(String::as_str),
        Some("got: hello from greet"),
        "an output reached a later step"
    );
    let (run_state, steps) = status(&state, 1);
    assert_eq!(run_state, "succeeded");
    assert!(steps.iter().all(|(_, s)| s == "succeeded"), "{steps:?}");
    let logs = rb(&state, &["logs", "1", "greet"]);
    assert_eq!(
        stdout(&logs),
        "── greet (attempt 1) ──\n  hello from greet\n"
    );
    let list = rb(&state, &["status"]);
    assert!(stdout(&list).contains("succeeded"), "{}", stdout(&list));
}

#[test]
fn json_mode_prints_one_object_per_event_and_line() {
    let dir = scratch("run-json");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  run hi {\n    command \"echo\"\n    args [\"hi\"]\n  }\n}\n",
    );
    let out = rb(&dir.join("state"), &["run", path(&file), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let objects: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert!(objects
        .iter()
        .any(|o| o["line"] == "hi" && o["step"] == "hi"));
    assert!(objects
        .iter()
        .any(|o| o["event"]["StepSucceeded"].is_object()));
    assert_eq!(
        objects.last().map(|o| o["ended"].clone()),
        Some("succeeded".into())
    );
}

/// `before`, then `flaky`, which fails until the file `flag` exists, then
/// `after_it`; run once (it fails at `flaky`). Each records itself in
/// `ledger`.
struct Flaky {
    state: std::path::PathBuf,
    ledger: std::path::PathBuf,
    flag: std::path::PathBuf,
    out: std::process::Output,
}

fn run_flaky(name: &str) -> Flaky {
    let dir = scratch(name);
    let ledger = dir.join("ledger");
    let flag = dir.join("fixed");
    let body = [
        ledger_step("before", "", ""),
        format!(
            "  run flaky after before {{\n    command \"test\"\n    args [\"-e\", \"{}\"]\n  }}\n",
            path(&flag)
        ),
        ledger_step("after_it", "flaky", ""),
    ]
    .concat();
    let file = write(&dir, "t.runbook", ledger_runbook(&body));
    let state = dir.join("state");
    let ledger_param = format!("ledger={}", path(&ledger));
    let out = rb(&state, &["run", path(&file), "-p", &ledger_param]);
    assert_eq!(out.status.code(), Some(1));
    Flaky {
        state,
        ledger,
        flag,
        out,
    }
}

#[test]
fn a_failed_step_says_where_to_look_and_retry_runs_from_it_keeping_the_rest() {
    let Flaky {
        state,
        ledger,
        flag,
        out,
    } = run_flaky("run-retry");
    let text = stdout(&out);
    assert!(text.contains("flaky failed"), "{text}");
    assert!(text.contains("runbook logs 1 flaky"), "{text}");
    assert!(text.contains("runbook retry 1 --from flaky"), "{text}");
    let resumed = rb(&state, &["resume", "1"]);
    assert_eq!(resumed.status.code(), Some(1));
    assert!(
        stderr(&resumed).contains("run 1 has already finished (failed)"),
        "{}",
        stderr(&resumed)
    );
    std::fs::write(&flag, "").expect("writes");
    let retried = rb(&state, &["retry", "1", "--from", "flaky"]);
    assert_eq!(
        retried.status.code(),
        Some(0),
        "{}{}",
        stdout(&retried),
        stderr(&retried)
    );
    assert_eq!(
        ledger_lines(&ledger),
        ["before", "after_it"],
        "`before` kept its result"
    );
    let wrong = rb(&state, &["retry", "1", "--from", "flakey"]);
    assert!(stderr(&wrong).contains("run 1 has no step `flakey` (did you mean `flaky`?)"));
    // The first pass stays in sight: how `flaky` failed then, under how it
    // ended now.
    let shown = stdout(&rb(&state, &["status", "1"]));
    let lines: Vec<&str> = shown.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("flaky "))
        .expect("flaky's line");
    assert!(lines[at].contains("succeeded (attempt 2)"), "{shown}");
    assert!(
        lines[at + 1]
            .trim_start()
            .starts_with("pass 1: failed: exited with code"),
        "{shown}"
    );
    assert!(lines[at + 1].ends_with("(attempt 1)"), "{shown}");
    assert!(
        shown.contains("pass 1: skipped: `flaky` did not succeed"),
        "after_it's first pass: {shown}"
    );
}

#[test]
fn secrets_reach_the_program_but_never_the_screen_the_logs_or_the_journal() {
    let dir = scratch("run-secrets");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  param token: secret = env(\"RB_TEST_TOKEN\")\n  run show {\n    shell \"echo token=$TOKEN; test \\${#TOKEN} -eq 15\"\n    env \"TOKEN\" \"${token}\"\n  }\n}\n",
    );
    let state = dir.join("state");
    let out = command(&state, &["run", path(&file)])
        .env("RB_TEST_TOKEN", "s3cr3t-value-42")
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "the program got the value: {}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("show | token=***"),
        "{}",
        stdout(&out)
    );
    let logs = rb(&state, &["logs", "1"]);
    assert!(stdout(&logs).contains("token=***"));
    for file in walk(&state) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let found = bytes.windows(15).any(|w| w == b"s3cr3t-value-42");
        assert!(!found, "{} holds the secret", file.display());
    }
    let missing = command(&state, &["run", path(&file)])
        .env_remove("RB_TEST_TOKEN")
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing)
        .contains("the secret `token` is read from $RB_TEST_TOKEN, which is not set"));
}

/// `run` reads its runbook once: the text the journal records is the text
/// compiled and run. (It used to read the file a second time to compile
/// it, so a file saved in between ran unrecorded.) Counted with strace.
#[test]
fn run_reads_its_runbook_file_once() {
    let strace = std::process::Command::new("strace").arg("-V").output();
    if strace.is_err() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must have strace (run_reads_its_runbook_file_once)"
        );
        eprintln!("SKIPPED: run_reads_its_runbook_file_once needs strace");
        return;
    }
    let dir = scratch("run-reads-once");
    let file = write(
        &dir,
        "read-once.runbook",
        "runbook once {\n  run hello {\n    command \"true\"\n  }\n}\n",
    );
    let trace = dir.join("trace");
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(dir.join("state"))
        .args(["run", path(&file)])
        .env("NO_COLOR", "1")
        .output()
        .expect("strace runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let trace = std::fs::read_to_string(&trace).expect("the trace");
    let opens: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("read-once.runbook"))
        .collect();
    assert_eq!(opens.len(), 1, "{opens:#?}");
}

#[test]
fn resume_runs_the_source_it_started_with_and_reads_secrets_again() {
    let dir = scratch("run-source-kept");
    let ledger = dir.join("ledger");
    let src = "runbook t {\n  param ledger: path\n  param token: secret = env(\"RB_TEST_KEPT\")\n  approve gate {\n    prompt \"Go on?\"\n  }\n  run after_gate after gate {\n    shell \"echo original-$T >> \\\"$L\\\"\"\n    env \"T\" \"${token}\"\n    env \"L\" \"${ledger}\"\n  }\n}\n";
    let file = write(&dir, "t.runbook", src);
    let state = dir.join("state");
    let ledger_param = format!("ledger={}", path(&ledger));
    let mut first = command(&state, &["run", path(&file), "-p", &ledger_param]);
    let child = first
        .env("RB_TEST_KEPT", "v1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    interrupt(&child);
    assert_eq!(
        child.wait_with_output().expect("ends").status.code(),
        Some(130)
    );
    // The file changes while the run waits: the run is not affected.
    write(&dir, "t.runbook", src.replace("original", "edited"));
    let approved = rb(&state, &["approve", "1", "gate", "--as", "bob"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    let missing = command(&state, &["resume", "1"])
        .env_remove("RB_TEST_KEPT")
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing),
        "error: the secret `token` is read from $RB_TEST_KEPT, which is not set; set it and try again\n"
    );
    let resumed = command(&state, &["resume", "1"])
        .env("RB_TEST_KEPT", "v2")
        .output()
        .expect("runs");
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert_eq!(
        ledger_lines(&ledger),
        ["original-v2"],
        "the recorded source, the secret read again"
    );
}

#[test]
fn the_copy_of_the_source_beside_the_journal_counts_only_when_it_is_the_recorded_one() {
    let dir = scratch("run-source-copy");
    let ledger = dir.join("ledger");
    let src = "runbook t {\n  param ledger: path\n  approve gate {\n    prompt \"Go on?\"\n  }\n  run after_gate after gate {\n    command \"sh\"\n    args [\"-c\", \"echo original >> \\\"$1\\\"\", \"sh\", \"${ledger}\"]\n  }\n}\n";
    let file = write(&dir, "t.runbook", src);
    let state = dir.join("state");
    let ledger_param = format!("ledger={}", path(&ledger));
    let child = spawn(&state, &["run", path(&file), "-p", &ledger_param]);
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    interrupt(&child);
    assert_eq!(
        child.wait_with_output().expect("ends").status.code(),
        Some(130)
    );
    // `run` keeps a copy, so that `resume` can compile while the store opens.
    let copy = state.join("sources").join("1.runbook");
    assert_eq!(std::fs::read_to_string(&copy).expect("a copy"), src);
    // A copy that is not the recorded source changes nothing, and is put right.
    std::fs::write(&copy, src.replace("original", "edited")).expect("writes");
    let approved = rb(&state, &["approve", "1", "gate", "--as", "bob"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    let resumed = rb(&state, &["resume", "1"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert_eq!(ledger_lines(&ledger), ["original"]);
    assert_eq!(std::fs::read_to_string(&copy).expect("a copy"), src);
    // No copy at all: `status` compiles the journal's source and keeps one.
    std::fs::remove_file(&copy).expect("removes");
    let shown = rb(&state, &["status", "1"]);
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    assert!(stdout(&shown).contains("succeeded"), "{}", stdout(&shown));
    assert_eq!(std::fs::read_to_string(&copy).expect("a copy again"), src);
    // A link there is refused, never followed nor written through; a pipe
    // is refused, not waited for.
    let victim = write(&dir, "victim", "keep me");
    std::fs::remove_file(&copy).expect("removes");
    std::os::unix::fs::symlink(&victim, &copy).expect("links");
    let shown = rb(&state, &["status", "1"]);
    assert_eq!(shown.status.code(), Some(1), "{}", stderr(&shown));
    assert!(
        stderr(&shown).starts_with(&format!(
            "error: {} is refused: it is a link",
            copy.display()
        )),
        "{}",
        stderr(&shown)
    );
    assert_eq!(std::fs::read_to_string(&victim).expect("reads"), "keep me");
    std::fs::remove_file(&copy).expect("removes");
    let fifo = std::ffi::CString::new(path(&copy)).expect("a path");
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let mut status = command(&state, &["status", "1"])
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    let start = std::time::Instant::now();
    while status.try_wait().expect("waits").is_none() {
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = status.kill();
            panic!("status waited on a pipe in place of the source's copy");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(status.wait().expect("ended").code(), Some(1));
}

/// Waits (up to 5 s) for `file` to exist with other bytes than `not`: the
/// kept plan is written on a thread of its own.
fn written_other_than(file: &std::path::Path, not: &[u8]) -> Vec<u8> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match std::fs::read(file) {
            Ok(bytes) if bytes != not => return bytes,
            _ if std::time::Instant::now() > deadline => {
                panic!("{} was not written", file.display())
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

#[test]
fn the_plan_kept_with_a_run_is_compiled_again_when_damaged_and_kept_anew() {
    let Flaky {
        state,
        ledger,
        flag,
        ..
    } = run_flaky("run-kept-plan");
    let kept = state.join("sources").join("1.plan");
    let first = written_other_than(&kept, b"");
    assert!(first.starts_with(b"runbook kept plan\n"));
    // Damaged: the recorded source is compiled again, and the run goes on
    // exactly as it would have.
    let mut damaged = first.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&kept, &damaged).expect("writes");
    std::fs::write(&flag, "").expect("writes");
    let retried = rb(&state, &["retry", "1", "--from", "flaky"]);
    assert_eq!(retried.status.code(), Some(0), "{}", stderr(&retried));
    assert_eq!(ledger_lines(&ledger), ["before", "after_it"]);
    assert_eq!(written_other_than(&kept, &damaged), first, "kept anew");
}
