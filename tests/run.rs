//! Running, resuming and steering runs through the real binary.

mod common;

use common::{scratch, stderr, stdout, write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary with its own state directory.
fn rb(state: &Path, args: &[&str]) -> Output {
    command(state, args)
        .output()
        .expect("the runbook binary starts")
}

fn command(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
    c.arg("--state")
        .arg(state)
        .args(args)
        .current_dir(common::root())
        .env("NO_COLOR", "1");
    c
}

fn spawn(state: &Path, args: &[&str]) -> Child {
    command(state, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the runbook binary starts")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `status RUN --json`, parsed: (run state, step name → state word).
fn status(state: &Path, run: u32) -> (String, Vec<(String, String)>) {
    let out = rb(state, &["status", &run.to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("status is JSON");
    let v = if v.is_array() { v[0].clone() } else { v };
    let steps = v["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    let name = s["name"].as_str().unwrap_or_default().to_string();
                    (name, s["state"].as_str().unwrap_or_default().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    (v["state"].as_str().unwrap_or_default().to_string(), steps)
}

/// Polls `status` until `done` holds, for at most 20 s.
fn wait_for(state: &Path, run: u32, done: impl Fn(&str, &[(String, String)]) -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let out = rb(state, &["status", &run.to_string(), "--json"]);
        if out.status.success() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&stdout(&out)) {
                let v = if v.is_array() { v[0].clone() } else { v };
                let steps: Vec<(String, String)> = v["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        (
                            s["name"].as_str().unwrap_or_default().to_string(),
                            s["state"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                if done(v["state"].as_str().unwrap_or_default(), &steps) {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("run {run} did not reach the expected state in 20 s");
}

fn ledger_lines(ledger: &Path) -> Vec<String> {
    std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A step that appends its name to the ledger (argv only, no shell text).
fn ledger_step(name: &str, after: &str, extra: &str) -> String {
    let after = if after.is_empty() {
        String::new()
    } else {
        format!(" after {after}")
    };
    format!(
        "  run {name}{after} {{\n    command \"sh\"\n    args [\"-c\", \"echo $1 >> \\\"$2\\\"\", \"sh\", \"{name}\", \"${{ledger}}\"]\n{extra}  }}\n"
    )
}

fn ledger_runbook(body: &str) -> String {
    format!("runbook t {{\n  param ledger: path\n  concurrency 4\n{body}}}\n")
}

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

#[test]
fn a_failed_step_says_where_to_look_and_retry_runs_from_it_keeping_the_rest() {
    let dir = scratch("run-retry");
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

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

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
        "error: `mallory` may not approve `gate`; its approvers are alice\n"
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

fn interrupt(child: &Child) {
    // SAFETY: kill(2) on a child we started; it reads no memory of ours.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
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
fn a_second_process_is_told_who_holds_the_store_within_a_second() {
    let dir = scratch("run-locked");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  wait long { duration 30s }\n}\n",
    );
    let state = dir.join("state");
    let mut child = spawn(&state, &["run", path(&file)]);
    wait_for(&state, 1, |s, _| s == "running");
    let start = Instant::now();
    let other = rb(&state, &["resume", "1"]);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(other.status.code(), Some(1));
    let pid = child.id();
    assert_eq!(
        stderr(&other),
        format!("error: the store at {} is in use by run 1 (process {pid}); wait for it to finish, or use `runbook approve`/`runbook cancel` on that run\n", state.display())
    );
    let logs = rb(&state, &["logs", "1"]);
    assert_eq!(logs.status.code(), Some(1));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_run_ids_and_choices_are_plain_sentences() {
    let dir = scratch("run-bad-ids");
    let state = dir.join("state");
    for args in [
        vec!["resume", "42"],
        vec!["status", "42"],
        vec!["logs", "42"],
        vec!["cancel", "42"],
        vec!["approve", "42", "gate", "--as", "alice"],
        vec!["retry", "42", "--from", "x"],
    ] {
        let out = rb(&state, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out),
            "error: there is no run 42; `runbook status` lists the runs\n",
            "{args:?}"
        );
    }
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  restore d {\n    files \"/etc/neo-service-layer\"\n    from \"/backup/config.tar.gz\"\n  }\n}\n",
    );
    let out = rb(&state, &["run", path(&file)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("this runbook has steps this version cannot run yet: `d` (only `restore` into `postgres` or `redis` runs so far)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_interrupted_step_that_changes_systems_waits_for_a_decision() {
    let dir = scratch("run-ask");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  run migrate {\n    command \"sleep\"\n    args [\"60\"]\n  }\n  run after_it after migrate {\n    command \"true\"\n  }\n}\n",
    );
    let state = dir.join("state");
    let mut child = spawn(&state, &["run", path(&file)]);
    wait_for(&state, 1, |_, steps| {
        steps.iter().any(|(n, s)| n == "migrate" && s == "running")
    });
    let _ = child.kill();
    let _ = child.wait();
    let (_, steps) = status(&state, 1);
    assert_eq!(steps[0].1, "interrupted");
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
        .and_then(|rest| rest.split(')').next())
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
}

#[test]
fn a_step_printing_100_mb_keeps_memory_bounded() {
    let dir = scratch("run-flood");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  run flood {\n    shell \"yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 | head -c 100000000\"\n  }\n}\n",
    );
    let state = dir.join("state");
    let mut child = command(&state, &["run", path(&file)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let pid = child.id();
    let mut peak_kb = 0u64;
    while child.try_wait().expect("waits").is_none() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(kb) = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait().expect("waits").success());
    assert!(peak_kb > 0, "the peak was read");
    assert!(peak_kb < 64 * 1024, "peak resident memory {peak_kb} KiB");
    let logs = rb(&state, &["logs", "1", "flood"]);
    assert!(stdout(&logs).contains("more bytes were printed and not kept"));
}

/// A small tmpfs of our own, so that filling it harms nothing else. Needs
/// root (CI runs as root); elsewhere the test says it was skipped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(name: &str, size: &str) -> Option<SmallDisk> {
        let dir = scratch(name);
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var("CI").is_err(),
                "CI must be able to mount a tmpfs for the full-disk test"
            );
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here (not root?); the full-disk test did not run"
            );
            return None;
        }
        Some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn a_full_disk_stops_the_run_with_a_sentence_and_loses_nothing() {
    let Some(disk) = SmallDisk::mount("run-full-disk", "4m") else {
        return;
    };
    let filler = disk.0.join("filler");
    let mut body = format!(
        "runbook t {{\n  run fill {{\n    command \"sh\"\n    args [\"-c\", \"dd if=/dev/zero of={} bs=4k 2>/dev/null; true\"]\n  }}\n",
        path(&filler)
    );
    let mut previous = "fill".to_string();
    for i in 0..2000 {
        body.push_str(&format!("  wait w{i} after {previous} {{ duration 0s }}\n"));
        previous = format!("w{i}");
    }
    body.push_str("}\n");
    let dir = scratch("run-full-disk-file");
    let file = write(&dir, "t.runbook", body);
    let state = disk.0.join("state");
    let out = rb(&state, &["run", path(&file)]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!("error: run 1 stopped because its progress could not be recorded: the store at {}/journal cannot be used: no space is left on its disk. Everything recorded before is kept; fix this, then continue with `runbook resume 1`", state.display())),
        "{}",
        stderr(&out)
    );
    // Opening the store may need a little space too: it reads, or says why not.
    let reading = rb(&state, &["status", "1"]);
    assert!(
        reading.status.success() || stderr(&reading).contains("no space is left on its disk"),
        "{}",
        stderr(&reading)
    );
    std::fs::remove_file(&filler).expect("frees the disk");
    let (_, before) = status(&state, 1);
    assert_eq!(before[0].1, "succeeded", "fill was recorded");
    let resumed = rb(&state, &["resume", "1"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert!(
        !stdout(&resumed).contains("fill started"),
        "what was recorded is kept: {}",
        stdout(&resumed)
    );
    let (run_state, _) = status(&state, 1);
    assert_eq!(run_state, "succeeded");
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
fn a_damaged_or_newer_store_is_one_sentence_and_is_left_as_it_is() {
    let dir = scratch("run-damaged");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  run a {\n    command \"true\"\n  }\n}\n",
    );
    let state = dir.join("state");
    assert_eq!(rb(&state, &["run", path(&file)]).status.code(), Some(0));
    {
        let db = sled::open(state.join("journal")).expect("opens");
        let events = db.open_tree("events").expect("tree");
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&1u64.to_be_bytes());
        let mut value = events.get(key).expect("reads").expect("there").to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x01;
        events.insert(key, value).expect("writes");
        db.flush().expect("flushes");
    }
    // `logs` reads no events, so the output stays readable; the rest refuse.
    assert_eq!(rb(&state, &["logs", "1"]).status.code(), Some(0));
    for args in [
        vec!["status", "1"],
        vec!["resume", "1"],
        vec!["approve", "1", "a", "--as", "x"],
    ] {
        let out = rb(&state, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out),
            "error: the store is damaged: run 1, event 0: a record's checksum does not match; keep a copy of it for the record before you do anything else\n",
            "{args:?}"
        );
    }
    {
        let db = sled::open(state.join("journal")).expect("opens");
        let meta = db.open_tree("meta").expect("tree");
        meta.insert("format", &9u32.to_be_bytes()).expect("writes");
        db.flush().expect("flushes");
    }
    let out = rb(&state, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("error: the store at {}/journal was written by a newer runbook (format 9, this one reads up to 2); use the newer runbook\n", state.display())
    );
}

#[test]
fn a_closed_output_pipe_does_not_stop_the_run() {
    let dir = scratch("run-closed-pipe");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  run a {\n    command \"echo\"\n    args [\"x\"]\n  }\n  run b after a {\n    command \"echo\"\n    args [\"y\"]\n  }\n}\n",
    );
    let state = dir.join("state");
    let mut child = spawn(&state, &["run", path(&file)]);
    drop(child.stdout.take());
    let status = child.wait().expect("ends");
    assert_eq!(status.code(), Some(0));
    let (run_state, _) = self::status(&state, 1);
    assert_eq!(run_state, "succeeded");
}
