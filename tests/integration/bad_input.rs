//! Bad input and a hostile world, each a plain sentence and nothing lost:
//! a store held by another process, bad run ids and choices, a step that
//! prints 100 MB, a full disk, a damaged or newer store, a closed pipe;
//! byte-by-byte damage to the journal in `bad_input/damage.rs`.

mod damage;
mod full_disk;

use crate::common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn resuming_a_run_that_is_live_is_refused_within_a_second_naming_its_process() {
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
        format!("error: run 1 is running (process {pid} drives it); `runbook watch 1` follows it, `runbook cancel 1` stops it\n")
    );
    // Looking is not refused: the process that holds the store answers.
    let logs = rb(&state, &["logs", "1"]);
    assert_eq!(logs.status.code(), Some(0), "{}", stderr(&logs));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_run_ids_and_choices_are_plain_sentences() {
    let dir = scratch("run-bad-ids");
    let state = dir.join("state");
    let commands = [
        vec!["resume", "42"],
        vec!["status", "42"],
        vec!["logs", "42"],
        vec!["cancel", "42"],
        vec!["approve", "42", "gate", "--as", "alice"],
        vec!["retry", "42", "--from", "x"],
    ];
    // A state directory no run was recorded in (a mistyped --state): each
    // says so, and none of them creates it.
    for args in &commands {
        let out = rb(&state, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out),
            format!("error: there is no run 42: no runbook has run with the state directory {}; is --state right?\n", state.display()),
            "{args:?}"
        );
        assert!(!state.exists(), "{args:?} created the state directory");
    }
    let status = rb(&state, &["status"]);
    assert_eq!(
        stdout(&status),
        format!("no runs yet in {}\n", state.display())
    );
    assert!(!state.exists(), "status created the state directory");
    // A store with runs, none of them 42.
    let ok = write(
        &dir,
        "ok.runbook",
        "runbook ok {\n  run a {\n    shell \"true\"\n  }\n}\n",
    );
    assert_eq!(rb(&state, &["run", path(&ok)]).status.code(), Some(0));
    for args in &commands {
        let out = rb(&state, args);
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
pub(crate) struct SmallDisk(pub(crate) PathBuf);

impl SmallDisk {
    pub(crate) fn mount(name: &str, size: &str) -> Option<SmallDisk> {
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
        format!("error: the store at {}/journal was written by a newer runbook (format 9, this one reads up to 5); use the newer runbook\n", state.display())
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
