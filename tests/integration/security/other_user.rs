//! Another local user: a state directory they made or can write, and a
//! process group of theirs named in a forged note.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const OTHER: &str = "runbook-test-other";

/// The second user's uid and gid, made if missing; `None` (said) where
/// this process cannot make users. Under CI it must.
pub fn other_user(test: &str) -> Option<(u32, u32)> {
    user_named(OTHER, test)
}

/// The user `name`'s uid and gid, made if missing; `None` (said) where
/// this process cannot make users. Under CI it must.
pub fn user_named(name: &str, test: &str) -> Option<(u32, u32)> {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: CI must run as root to test attacks by another user"
        );
        eprintln!("SKIPPED {test}: making a second user needs root");
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        // Two tests may make it at once: "already exists" is fine.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output();
    }
    Some((
        id("-u").expect("the user exists"),
        id("-g").expect("its group"),
    ))
}

/// `program args` run as the other user.
fn as_other(who: (u32, u32), program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={}", who.0))
        .arg(format!("--regid={}", who.1))
        .arg("--clear-groups")
        .arg("--")
        .arg(program)
        .args(args)
        .current_dir("/");
    c
}

/// A directory in /tmp (where every user may make one), new for the test.
fn in_tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("runbook-sec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn runbook_bin() -> &'static str {
    env!("CARGO_BIN_EXE_runbook")
}

fn refused(out: &Output, dir: &Path, why: &str) {
    let said = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.starts_with(&format!("error: {} is refused: {why}", dir.display())),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "one sentence: {said}");
}

#[test]
fn a_run_planted_by_another_user_never_runs_as_you() {
    let Some(other) = other_user("a_run_planted_by_another_user_never_runs_as_you") else {
        return;
    };
    // The attacker makes the directory the book once suggested, open to all,
    // and leaves a stopped run in it whose next step would run as whoever
    // resumes it.
    let drill = in_tmp("drill");
    let marker = in_tmp("pwned");
    let planted = in_tmp("planted.runbook");
    std::fs::write(
        &planted,
        format!(
            "runbook deploy {{\n  approve gate {{\n    prompt \"go on?\"\n  }}\n  run pwn after gate {{\n    shell \"id -u > {}\"\n  }}\n}}\n",
            marker.display()
        ),
    )
    .expect("writes");
    let made = as_other(other, "mkdir", &["-m", "0700", drill.to_str().unwrap()])
        .status()
        .expect("mkdir");
    assert!(made.success());
    let mut attacker = as_other(
        other,
        runbook_bin(),
        &[
            "--state",
            drill.to_str().unwrap(),
            "run",
            planted.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("starts");
    let began = Instant::now();
    while !drill.join("owner.json").exists() && began.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = attacker.kill();
    let _ = attacker.wait();
    assert!(
        drill.join("journal").is_dir(),
        "the attacker's run was recorded"
    );
    let opened = as_other(other, "chmod", &["0777", drill.to_str().unwrap()])
        .status()
        .expect("chmod");
    assert!(opened.success());
    // The victim, following old advice, looks and resumes: refused before
    // anything in the directory is read.
    let commands = [
        vec!["status"],
        vec!["status", "1"],
        vec!["logs", "1"],
        vec!["resume", "1"],
        vec!["approve", "1", "gate", "--as", "victim"],
        vec!["cancel", "1"],
        vec!["retry", "1", "--from", "pwn"],
        vec!["run", planted.to_str().unwrap()],
    ];
    for args in &commands {
        refused(
            &rb(&drill, args),
            &drill,
            &format!("it belongs to user {OTHER}"),
        );
    }
    // The victim's own directory, left open to all: the attacker wrote in it.
    let path = std::ffi::CString::new(drill.to_str().unwrap()).expect("a path");
    // SAFETY: chown(2) with a NUL-terminated path.
    assert_eq!(unsafe { libc::chown(path.as_ptr(), 0, 0) }, 0);
    for args in &commands {
        refused(
            &rb(&drill, args),
            &drill,
            "it can be written by every user (mode 0777)",
        );
    }
    // Closed again, what the attacker left inside is still refused.
    std::fs::set_permissions(&drill, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let out = rb(&drill, &["resume", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("belongs to user {OTHER}")),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "the planted step ran");
    let _ = std::fs::remove_dir_all(&drill);
    let _ = std::fs::remove_file(&planted);
}

#[test]
fn a_state_directory_under_a_parent_another_user_can_write_is_refused() {
    let Some(other) =
        other_user("a_state_directory_under_a_parent_another_user_can_write_is_refused")
    else {
        return;
    };
    // The victim's own directory, inside one the attacker owns: they could
    // move it aside and put theirs in its place; sticky like /tmp, but
    // theirs, it is the same.
    for (name, mode) in [("parent", "0755"), ("sticky", "1777")] {
        let parent = in_tmp(name);
        assert!(
            as_other(other, "mkdir", &["-m", mode, parent.to_str().unwrap()])
                .status()
                .expect("mkdir")
                .success()
        );
        let state = parent.join("state");
        std::fs::create_dir(&state).expect("makes");
        let out = rb(&state, &["status"]);
        assert_eq!(out.status.code(), Some(1), "{mode}");
        assert!(
            stderr(&out).contains(&format!(
                "its parent {} belongs to user {OTHER}",
                parent.display()
            )),
            "{}",
            stderr(&out)
        );
        let _ = std::fs::remove_dir_all(&parent);
    }
}

/// When process `pid` started, in ms since boot, as a note records it.
fn started_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let (_, rest) = stat.rsplit_once(") ").expect("a stat line");
    let ticks: u64 = rest
        .split_whitespace()
        .nth(19)
        .expect("starttime")
        .parse()
        .expect("a number");
    // SAFETY: sysconf reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    ticks * 1000 / per_second
}

#[test]
fn a_note_naming_another_users_process_group_never_gets_it_killed() {
    let Some(other) = other_user("a_note_naming_another_users_process_group_never_gets_it_killed")
    else {
        return;
    };
    let dir = scratch("sec-forged-note");
    let state = dir.join("state");
    // A run of ours stopped by SIGKILL while its step ran; its program is
    // ended by the test, as if it had finished.
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  run long {\n    shell \"sleep 60\"\n  }\n}\n",
    );
    let mut ours = spawn(&state, &["run", path(&file)]);
    wait_for(&state, 1, |_, steps| {
        steps.iter().any(|(_, s)| s == "running")
    });
    let note_path = state.join("running/1");
    let note = std::fs::read_to_string(&note_path).expect("a note");
    let our_pid: i32 = note
        .split_whitespace()
        .next()
        .expect("a pid")
        .parse()
        .expect("a number");
    let _ = ours.kill();
    let _ = ours.wait();
    // SAFETY: kill(2) on the process group our step's program leads.
    unsafe { libc::kill(-our_pid, libc::SIGKILL) };
    // Another user's process group, and a note that names it exactly.
    let mut theirs = as_other(other, "setsid", &["sleep", "60"])
        .spawn()
        .expect("starts");
    // `setsid` is not a group leader here, so it execs `sleep` in place.
    let their_pid = theirs.id();
    let began = Instant::now();
    while std::fs::read_to_string(format!("/proc/{their_pid}/comm")).unwrap_or_default()
        != "sleep\n"
    {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "their sleep did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut forged = format!("{their_pid:>10} {:>16} long", started_ms(their_pid)).into_bytes();
    forged.resize(127, b' ');
    forged.push(b'\n');
    std::fs::write(&note_path, &forged).expect("forges");
    let _ = rb(&state, &["cancel", "1"]);
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    let alive = unsafe { libc::kill(their_pid as i32, 0) } == 0;
    let _ = theirs.kill();
    let _ = theirs.wait();
    assert!(
        alive,
        "cancel killed another user's process group from a note"
    );
}

#[test]
fn a_users_own_private_group_may_write_their_directories() {
    let Some(other) = other_user("a_users_own_private_group_may_write_their_directories") else {
        return;
    };
    // Debian's default for a user with a group of their own: umask 002, so
    // what they make is group-writable by that group, which only they are in.
    let base = in_tmp("upg");
    let file = in_tmp("upg.runbook");
    std::fs::write(
        &file,
        "runbook upg {\n  wait w {\n    duration 1ms\n  }\n}\n",
    )
    .expect("writes");
    let script = format!(
        "umask 002 && mkdir -p {base}/ops && {bin} --state {base}/ops/state run {file}",
        base = base.display(),
        bin = runbook_bin(),
        file = file.display()
    );
    let out = as_other(other, "sh", &["-c", &script])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mode = std::fs::metadata(base.join("ops"))
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o775, "the parent stays as the user made it");
    let _ = std::fs::remove_dir_all(&base);
    let _ = std::fs::remove_file(&file);
}
