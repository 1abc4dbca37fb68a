//! A disk that fills while steps print a lot: the run stops within
//! seconds with its sentence, names its process to `status` meanwhile,
//! and loses nothing. On a small tmpfs where the machine lets us mount
//! one (CI runs as root), and everywhere through a file-size limit
//! (`ulimit -f`), which needs no root: writes past it fail as a full
//! disk's do.

use crate::common::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Thirty steps in a chain, each printing 100 KB.
fn printing_runbook(dir: &Path) -> std::path::PathBuf {
    let mut body = String::from("runbook fill {\n");
    for i in 0..30 {
        let after = if i == 0 {
            String::new()
        } else {
            format!(" after s{}", i - 1)
        };
        body.push_str(&format!(
            "  run s{i}{after} {{\n    command \"sh\"\n    args [\"-c\", \"yes 0123456789abcdef | head -c 100000\"]\n  }}\n"
        ));
    }
    body.push_str("}\n");
    write(dir, "fill.runbook", body)
}

/// Runs `runbook run` to its end within 30 s (the bug was a process that
/// never ended), its output drained on the side.
fn run_bounded(mut command: std::process::Command) -> (Option<i32>, String, Duration) {
    let began = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
        text
    });
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            let text = reader.join().expect("reads");
            return (status.code(), text, began.elapsed());
        }
        if began.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("runbook run did not end within 30 s of a full disk");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stopped_then_resumed(state: &Path, said: &str, why: &str) {
    assert!(
        said.contains("error: run 1 stopped because its progress could not be recorded: ")
            && said.contains(why)
            && said.contains("Everything recorded before is kept; fix this, then continue with `runbook resume 1`"),
        "{said}"
    );
    let (run_state, steps) = status(state, 1);
    assert_eq!(run_state, "stopped (not finished)");
    let done = steps.iter().filter(|(_, s)| s == "succeeded").count();
    assert!(done >= 1, "{steps:?}");
    let interrupted: Vec<&str> = steps
        .iter()
        .filter(|(_, s)| s == "interrupted")
        .map(|(n, _)| n.as_str())
        .collect();
    let mut args = vec!["resume", "1"];
    for step in &interrupted {
        args.extend(["--rerun", step]);
    }
    let resumed = rb(state, &args);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    for (step, s) in steps.iter().filter(|(_, s)| s == "succeeded") {
        assert!(
            !stdout(&resumed).contains(&format!("{step} started")),
            "{step} was {s} and ran again"
        );
    }
    assert_eq!(status(state, 1).0, "succeeded");
}

#[test]
fn a_disk_that_fills_with_output_stops_the_run_within_seconds() {
    let Some(disk) = super::SmallDisk::mount("full-disk-output", "2m") else {
        return;
    };
    let dir = scratch("full-disk-output-file");
    let file = printing_runbook(&dir);
    let state = disk.0.join("state");
    let (code, said, took) = run_bounded(command(&state, &["run", path(&file)]));
    assert_eq!(code, Some(1), "{said}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Free the disk by growing it: nothing in the store is touched.
    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&disk.0)
        .output()
        .expect("mount runs");
    assert!(grown.status.success());
    stopped_then_resumed(&state, &said, "no space is left on its disk");
}

#[test]
fn a_file_size_limit_stops_the_run_as_a_full_disk_does_without_root() {
    let dir = scratch("full-disk-limit");
    let file = printing_runbook(&dir);
    let state = dir.join("state");
    let mut limited = command(&state, &["run", path(&file)]);
    // SAFETY: between fork and exec only async-signal-safe calls are made.
    unsafe {
        limited.pre_exec(|| {
            // Writes past 1.2 MB fail with EFBIG instead of killing us.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 1_200_000,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (code, said, took) = run_bounded(limited);
    assert_eq!(code, Some(1), "{said}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    stopped_then_resumed(&state, &said, "(ulimit -f)");
}

#[test]
fn a_process_that_could_not_say_which_run_it_drives_is_still_named() {
    let dir = scratch("full-disk-owner");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  wait long { duration 30s }\n}\n",
    );
    let state = dir.join("state");
    let mut child = spawn(&state, &["run", path(&file)]);
    wait_for(&state, 1, |s, _| s == "running");
    // As when the disk was full when the run began: no owner.json, and no
    // socket either (the holder is waited for, 12 s, then named).
    std::fs::remove_file(state.join("owner.json")).expect("removes");
    std::fs::remove_file(state.join("runbook.sock")).expect("removes");
    let other = rb(&state, &["resume", "1"]);
    assert_eq!(other.status.code(), Some(1));
    assert_eq!(
        stderr(&other),
        format!(
            "error: the store at {} is in use by process {}, which did not say which run it drives ({}/owner.json is missing); wait for it to finish and try again\n",
            state.display(),
            child.id(),
            state.display()
        )
    );
    let _ = child.kill();
    let _ = child.wait();
}
