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
