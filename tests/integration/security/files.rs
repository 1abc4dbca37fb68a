//! Odd files: a runbook that is a device or a pipe, and the modes of what
//! runbook creates under a careless umask.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn a_runbook_file_that_is_a_device_or_a_pipe_is_refused_at_once() {
    let dir = scratch("sec-odd-files");
    let fifo = dir.join("pipe.runbook");
    let c = std::ffi::CString::new(path(&fifo)).expect("a path");
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (args, what) in [
        (vec!["check", "/dev/zero"], "/dev/zero"),
        (vec!["run", "/dev/zero"], "/dev/zero"),
        (vec!["check", path(&fifo)], path(&fifo)),
        (vec!["plan", path(&fifo)], path(&fifo)),
    ] {
        let mut child = command(&dir.join("state"), &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let began = Instant::now();
        while child.try_wait().expect("waits").is_none() {
            if began.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("{args:?} waited on {what}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("ends");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("it is not a plain file"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

fn modes_under(dir: &std::path::Path, out: &mut Vec<(String, u32, bool)>) {
    for entry in std::fs::read_dir(dir).expect("lists").flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).expect("stat");
        out.push((
            entry.path().display().to_string(),
            meta.permissions().mode() & 0o7777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            modes_under(&entry.path(), out);
        }
    }
}

#[test]
fn everything_runbook_creates_is_private_whatever_the_umask_and_steps_keep_theirs() {
    let dir = scratch("sec-umask");
    let state = dir.join("state");
    let made = dir.join("made-by-a-step");
    let file = write(
        &dir,
        "t.runbook",
        format!(
            "runbook t {{\n  run first {{\n    shell \"echo hello; touch {}\"\n  }}\n  run second after first {{\n    shell \"echo failing >&2; exit 3\"\n  }}\n}}\n",
            made.display()
        ),
    );
    let careless = |args: &[&str]| {
        let mut c = command(&state, args);
        // SAFETY: umask(2) in the child before exec; it cannot fail.
        unsafe {
            c.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        c.output().expect("runs")
    };
    assert_eq!(careless(&["run", path(&file)]).status.code(), Some(1));
    for args in [
        vec!["status"],
        vec!["logs", "1"],
        vec!["retry", "1", "--from", "second"],
    ] {
        careless(&args);
    }
    let mut modes = Vec::new();
    modes_under(&state, &mut modes);
    assert!(modes.len() > 5, "{modes:?}");
    for (path, mode, dir) in &modes {
        let private = if *dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, private, "{path} is {mode:04o}");
    }
    let state_mode = std::fs::metadata(&state)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(state_mode, 0o700);
    // The step's own file follows the umask runbook was started with.
    let step_mode = std::fs::metadata(&made)
        .expect("the step made it")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(step_mode, 0o666);
}

/// Runs `body` as a runbook with `from` standing for a pipe nobody writes
/// into, and says how it ended and how long it took.
fn run_against_a_pipe(name: &str, body: &str) -> (std::process::Output, Duration) {
    let dir = scratch(name);
    let fifo = dir.join("pipe");
    let c = std::ffi::CString::new(path(&fifo)).expect("a path");
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let file = write(&dir, "t.runbook", body.replace("PIPE", path(&fifo)));
    let began = Instant::now();
    let mut child = command(&dir.join("state"), &["run", path(&file)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    while child.try_wait().expect("waits").is_none() {
        if began.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{name}: the run was still going after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().expect("ends"), began.elapsed())
}

#[test]
fn a_step_reading_a_pipe_fails_at_once_and_never_stalls_the_run() {
    let (out, took) = run_against_a_pipe(
        "sec-pipe-cert",
        "runbook t {\n  verify cert {\n    certificate \"PIPE\"\n    expect days_left > 30\n    timeout 2s\n  }\n  wait beside {\n    duration 1s\n  }\n}\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("it is not a plain file"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("beside succeeded"),
        "{}",
        stdout(&out)
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let (out, _) = run_against_a_pipe(
        "sec-pipe-rdb",
        "runbook t {\n  restore cache {\n    redis \"redis://127.0.0.1:1\"\n    from \"PIPE\"\n  }\n}\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("it is not a plain file"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_backup_goes_only_into_a_directory_of_yours_and_the_dump_is_private() {
    if !postgres_here("a_backup_goes_only_into_a_directory_of_yours_and_the_dump_is_private") {
        return;
    }
    let dir = scratch("sec-backup");
    let open = dir.join("open");
    std::fs::create_dir(&open).expect("makes");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let body = "runbook t {\n  backup db {\n    postgres \"postgres://postgres@127.0.0.1:5432/postgres\"\n    to \"TO\"\n  }\n}\n";
    let refused = write(&dir, "refused.runbook", body.replace("TO", path(&open)));
    let out = rb(&dir.join("state"), &["run", path(&refused)]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!(
            "the backup directory {} is refused: it can be written by every user (mode 0777)",
            open.display()
        )),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read_dir(&open).expect("lists").count(),
        0,
        "nothing written there"
    );
    let mine = dir.join("mine");
    let fine = write(&dir, "fine.runbook", body.replace("TO", path(&mine)));
    let out = rb(&dir.join("state"), &["run", path(&fine)]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let dumps: Vec<_> = std::fs::read_dir(&mine).expect("lists").flatten().collect();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let mode = dumps[0].metadata().expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(&mine).expect("stat").permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
}
