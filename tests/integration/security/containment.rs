//! A program that leaves its process group (`setsid`, a daemon forking
//! twice) is still the step's: a timeout kills it, a holder of the step's
//! output is stopped with it, and after a SIGKILL of runbook, `resume` sees
//! it and `cancel` stops it. Where runbook may make cgroups (root here, or
//! a delegated cgroup); elsewhere the tests say loudly they were skipped.

use crate::common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Whether runbook contains programs on this machine: cgroup v2 mounted and
/// this process's own cgroup writable (as for root). Under CI it must be.
fn cgroups_here(test: &str) -> bool {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount = mounts.lines().find_map(|l| {
        let (before, after) = l.split_once(" - ")?;
        after
            .starts_with("cgroup2 ")
            .then(|| before.split(' ').nth(4))?
    });
    let relative = own.lines().find_map(|l| l.strip_prefix("0::"));
    let writable = match (mount, relative) {
        (Some(mount), Some(relative)) => {
            let dir = format!("{mount}{}", relative.trim_end_matches('/'));
            let c = std::ffi::CString::new(format!("{dir}/cgroup.procs")).expect("a path");
            // SAFETY: access(2) reads the NUL-terminated path it is given.
            unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
        }
        _ => false,
    };
    if !writable {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must run where runbook may make cgroups (as root, cgroup v2) ({test})"
        );
        eprintln!("SKIPPED: {test} needs a cgroup v2 cgroup this user may write (root)");
    }
    writable
}

/// The pid a step's escaped program wrote to `file`, once it has.
fn pid_in(file: &Path) -> i32 {
    let began = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "no pid in {file:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is alive (not a zombie) within 5 s; false once it is gone.
fn alive_after_a_while(pid: i32) -> bool {
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(5) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
        if !matches!(state, Some(Some(c)) if c != 'Z') {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn kill(pid: i32) {
    // SAFETY: kill(2) of a process this test made.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// A step whose shell starts `sleep` in a new session (outside its process
/// group), writing that program's pid to `pids/NAME`, then `rest`.
fn escaping_step(dir: &Path, name: &str, rest: &str, extra: &str) -> String {
    let file = dir.join("pids").join(name);
    format!(
        "  run {name} {{\n    shell \"setsid -f sh -c 'echo $$ > {}; exec sleep 300' >/dev/null 2>&1; {rest}\"\n{extra}  }}\n",
        file.display()
    )
}

/// Runs a step that starts `sleep` in a new session and times out after
/// 1 s, with `RUNBOOK_CGROUPS` set to `cgroups`; whether that `sleep`
/// outlived the step (it is killed either way before this returns).
fn escaped_a_timeout(name: &str, cgroups: &str) -> bool {
    let dir = scratch(name);
    std::fs::create_dir_all(dir.join("pids")).expect("mkdir");
    let body = escaping_step(&dir, "escape", "sleep 300", "    timeout 1s\n");
    let file = write(&dir, "t.runbook", format!("runbook t {{\n{body}}}\n"));
    let out = command(&dir.join("state"), &["run", path(&file)])
        .env("RUNBOOK_CGROUPS", cgroups)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("timed out after 1s"),
        "{}",
        stdout(&out)
    );
    let escaped = pid_in(&dir.join("pids/escape"));
    let left = alive_after_a_while(escaped);
    if left {
        kill(escaped);
    }
    // Nothing is left noted either way: its note, its cgroup are gone.
    let running: Vec<_> = walk(&dir.join("state/running"));
    assert!(running.is_empty(), "{running:?}");
    left
}

#[test]
fn a_timeout_kills_what_the_program_started_in_a_new_session() {
    if !cgroups_here("a_timeout_kills_what_the_program_started_in_a_new_session") {
        return;
    }
    assert!(
        !escaped_a_timeout("sec-contain-timeout", "auto"),
        "the program that left its process group outlived the timeout"
    );
    // Process groups alone (as before cgroups, and where runbook may make
    // none) do not see it: what this suite's cgroup tests guard against.
    assert!(
        escaped_a_timeout("sec-contain-timeout-off", "off"),
        "with RUNBOOK_CGROUPS=off, the program in a new session escapes"
    );
}

#[test]
fn runbook_cgroups_takes_auto_or_off() {
    let dir = scratch("sec-contain-setting");
    let out = command(&dir.join("state"), &["status"])
        .env("RUNBOOK_CGROUPS", "yes")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: RUNBOOK_CGROUPS is `auto` (contain step programs in cgroups where runbook may make them, the default) or `off` (process groups alone)\n"
    );
}

#[test]
fn a_program_in_a_new_session_holding_the_output_is_stopped_with_the_step() {
    if !cgroups_here("a_program_in_a_new_session_holding_the_output_is_stopped_with_the_step") {
        return;
    }
    let dir = scratch("sec-contain-holder");
    std::fs::create_dir_all(dir.join("pids")).expect("mkdir");
    let pid_file = dir.join("pids/holder");
    let file = write(
        &dir,
        "h.runbook",
        format!(
            "runbook h {{\n  run holder {{\n    shell \"setsid sh -c 'echo $$ > {}; exec sleep 300' & echo started\"\n    timeout 1m\n  }}\n}}\n",
            pid_file.display()
        ),
    );
    let began = Instant::now();
    let out = rb(&dir.join("state"), &["run", path(&file)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "it waited for its timeout"
    );
    assert!(
        stdout(&out).contains("kept its output open; they were stopped with it"),
        "{}",
        stdout(&out)
    );
    let holder = pid_in(&pid_file);
    let left = alive_after_a_while(holder);
    if left {
        kill(holder);
    }
    assert!(!left, "the holder in a new session outlived its step");
}

#[test]
fn after_a_sigkill_resume_sees_a_program_in_a_new_session_and_cancel_stops_it() {
    if !cgroups_here("after_a_sigkill_resume_sees_a_program_in_a_new_session_and_cancel_stops_it") {
        return;
    }
    let dir = scratch("sec-contain-crash");
    std::fs::create_dir_all(dir.join("pids")).expect("mkdir");
    let state = dir.join("state");
    let leader_file = dir.join("pids/leader");
    let rest = format!("echo $$ > {}; exec sleep 300", leader_file.display());
    let body = escaping_step(&dir, "long", &rest, "");
    let file = write(&dir, "k.runbook", format!("runbook k {{\n{body}}}\n"));
    let mut child = spawn(&state, &["run", path(&file)]);
    let escaped = pid_in(&dir.join("pids/long"));
    let leader = pid_in(&leader_file);
    let _ = child.kill();
    let _ = child.wait();
    // What stayed in the step's process group ends; what left it does not.
    // SAFETY: kill(2) of the process group the step's shell leads.
    unsafe { libc::kill(-leader, libc::SIGKILL) };
    assert!(!alive_after_a_while(leader));
    let out = rb(&state, &["resume", "1"]);
    let said = stderr(&out);
    let refused = out.status.code() == Some(1)
        && said.contains("still running: `long` (cgroup ")
        && said.contains(&format!("holding {escaped}"));
    if !refused {
        kill(escaped);
    }
    assert!(refused, "resume went on beside the escaped program: {said}");
    let out = rb(&state, &["cancel", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let left = alive_after_a_while(escaped);
    if left {
        kill(escaped);
    }
    assert!(!left, "cancel left the escaped program running");
    let running: Vec<_> = walk(&state.join("running"));
    assert!(running.is_empty(), "{running:?}");
}
