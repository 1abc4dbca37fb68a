//! Starting programs: noted before they run, their own process group,
//! no signal of ours blocked, ignored or handled.
#![allow(unsafe_code)] // tests set up processes and files with raw calls

use super::*;
use std::io::Read;

fn launch(program: &str, args: &[&str]) -> Launch {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    Launch::new(program, &args, &[], None).expect("prepares")
}

fn output(spawned: Spawned) -> (String, i32) {
    let mut text = String::new();
    std::fs::File::from(spawned.stdout)
        .read_to_string(&mut text)
        .expect("reads");
    let mut status = 0;
    // SAFETY: waitpid(2) on the child this test started.
    unsafe { libc::waitpid(spawned.pid as i32, &mut status, 0) };
    (text, status)
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("runbook-spawn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn the_program_finds_its_own_note_written_before_it_ran() {
    let dir = temp("note");
    let notes = dir.join("notes");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&notes)
        .expect("opens");
    let mut text = [b' '; NOTE];
    let reserved = boot_clock_ms();
    let head = format!("{:>10} {:>16} deploy", "~1", reserved);
    text[..head.len()].copy_from_slice(head.as_bytes());
    text[NOTE - 1] = b'\n';
    let script = format!("echo $$; cat {}", notes.display());
    let spawned = spawn(
        &launch("sh", &["-c", &script]),
        Some(NoteSlot {
            file: &file,
            offset: NOTE as u64,
            text,
            join: None,
        }),
    )
    .expect("starts");
    let pid = spawned.pid;
    let (out, status) = output(spawned);
    assert_eq!(status, 0);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(pid.to_string().as_str()), "{out}");
    // The first slot was never written: zeros. The second is the note.
    let note = lines.next().expect("the note").trim_start_matches('\0');
    let fields: Vec<&str> = note.split_whitespace().collect();
    assert_eq!(fields[0], pid.to_string());
    assert_eq!(
        fields[1],
        reserved.to_string(),
        "the time of the reservation"
    );
    assert_eq!(fields[2], "deploy");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_program_leads_its_own_group_with_no_signal_blocked_ignored_or_caught() {
    let spawned = spawn(
        &launch(
            "sh",
            &["-c", "ps -o pid=,pgid= -p $$; cat /proc/self/status"],
        ),
        None,
    )
    .expect("starts");
    let pid = spawned.pid;
    let (out, status) = output(spawned);
    assert_eq!(status, 0, "{out}");
    let mut lines = out.lines();
    let ids: Vec<&str> = lines.next().expect("ps").split_whitespace().collect();
    assert_eq!(ids, [pid.to_string(), pid.to_string()], "its own group");
    // cat's own state: exec keeps the mask and the ignored signals, and
    // cat catches none. What this test was started ignoring (a shell's
    // `&` ignores SIGINT and SIGQUIT) stays ignored, as `nohup` means it
    // to; SIGPIPE, which Rust's runtime ignores here, does not.
    let status = std::fs::read_to_string("/proc/self/status").expect("our status");
    let inherited = standard_signals(status.lines(), "SigIgn") & !(1 << (libc::SIGPIPE - 1));
    for (name, expected) in [("SigBlk", 0), ("SigIgn", inherited), ("SigCgt", 0)] {
        assert_eq!(standard_signals(lines.clone(), name), expected, "{name}");
    }
}

/// A signal mask of /proc/PID/status, signals 1 to 31 (32 and up belong
/// to the C library and realtime use).
fn standard_signals<'a>(mut lines: impl Iterator<Item = &'a str>, name: &str) -> u64 {
    let line = lines.find(|l| l.starts_with(name)).expect("the field");
    let mask = line.split_once(':').expect("a field").1.trim();
    u64::from_str_radix(mask, 16).expect("hex") & 0x7fff_ffff
}

#[test]
fn a_broken_pipe_ends_the_program_as_it_would_from_a_shell() {
    // Rust ignores SIGPIPE in this process; the program must not inherit that.
    let spawned = spawn(
        &launch("sh", &["-c", "grep -E '^SigIgn' /proc/self/status"]),
        None,
    )
    .expect("starts");
    let (out, _) = output(spawned);
    let mask = u64::from_str_radix(out.split(':').nth(1).expect("a mask").trim(), 16).expect("hex");
    assert_eq!(mask & (1 << (libc::SIGPIPE - 1)), 0, "{out}");
}

#[test]
fn what_cannot_start_says_why_and_leaves_no_child() {
    let dir = temp("cannot");
    let not_executable = dir.join("script");
    std::fs::write(&not_executable, "#!/bin/sh\n").expect("writes");
    let missing = Launch::new("no-such-program-anywhere", &[], &[], None)
        .err()
        .expect("not found");
    assert_eq!(missing, "no such file");
    let denied = spawn(&launch(not_executable.to_str().expect("utf-8"), &[]), None)
        .err()
        .map(|e| e.to_string());
    assert_eq!(denied.as_deref(), Some("permission denied"));
    let gone = Launch::new("true", &[], &[], Some(&dir.join("nowhere"))).expect("prepares");
    let err = spawn(&gone, None).err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("entering its working directory: no such file")
    );
    let nul = Launch::new("echo", &["a\0b".to_string()], &[], None).err();
    assert_eq!(nul.as_deref(), Some("`a\0b` holds a NUL byte"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn path_env_and_working_directory_are_the_programs() {
    let dir = temp("env");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("dir");
    let tool = bin.join("hello-tool");
    std::fs::write(&tool, "#!/bin/sh\necho \"$GREETING from $(pwd)\"\n").expect("writes");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let env = vec![
        (
            "PATH".to_string(),
            format!("{}:/usr/bin:/bin", bin.display()),
        ),
        ("GREETING".to_string(), "hi".to_string()),
    ];
    let l = Launch::new("hello-tool", &[], &env, Some(&dir)).expect("found on the new PATH");
    let (out, status) = output(spawn(&l, None).expect("starts"));
    assert_eq!(status, 0);
    assert_eq!(out, format!("hi from {}\n", dir.display()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_killed_group_is_waited_until_it_is_gone() {
    let _kill_list = crate::actions::contain::kill_list_for_a_test();
    let spawned = spawn(&launch("sh", &["-c", "sleep 30 & sleep 30; wait"]), None).expect("starts");
    let pid = spawned.pid;
    std::thread::sleep(Duration::from_millis(50));
    kill_group(pid);
    reap_later(pid);
    assert!(wait_killed_gone(Duration::from_secs(5)).is_empty());
    assert!(!group_exists(pid as i32));
}

#[test]
fn a_relative_program_is_found_from_its_working_directory() {
    let dir = temp("relative");
    let deploy = dir.join("deploy");
    std::fs::create_dir_all(&deploy).expect("dir");
    let script = deploy.join("run.sh");
    std::fs::write(&script, "#!/bin/sh\necho ran from $(pwd)\n").expect("writes");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // `./run.sh` in `deploy`, with a working directory given relative to
    // where runbook runs.
    let here = std::env::current_dir().expect("cwd");
    let relative = pathdiff(&deploy, &here);
    let l = Launch::new("./run.sh", &[], &[], Some(&relative)).expect("prepares");
    let (out, status) = output(spawn(&l, None).expect("starts"));
    assert_eq!(status, 0, "{out}");
    assert_eq!(out, format!("ran from {}\n", deploy.display()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `to` relative to `from` (both absolute), with `..` as needed.
fn pathdiff(to: &std::path::Path, from: &std::path::Path) -> std::path::PathBuf {
    let to: Vec<_> = to.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut out = std::path::PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}
