#![allow(unsafe_code)] // tests set up processes and files with raw calls
use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "runbook-private-{name}-{}-{:x}",
        std::process::id(),
        random()
    ));
    make_dir(&dir).expect("scratch");
    dir
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).expect("exists").mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn a_missing_state_directory_is_made_private_only_when_asked() {
    let base = scratch("missing");
    let state = base.join("a/b");
    assert_eq!(state_dir(&state, false), Ok(Found::Missing));
    assert!(
        !base.join("a").exists(),
        "a command that reads creates nothing"
    );
    assert_eq!(state_dir(&state, true), Ok(Found::Present));
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&base.join("a")), 0o700);
}

#[test]
fn a_state_directory_others_can_write_is_refused_in_one_sentence() {
    let state = scratch("open");
    chmod(&state, 0o777);
    let said = state_dir(&state, true).expect_err("refused");
    assert!(
        said.contains("can be written by every user (mode 0777)"),
        "{said}"
    );
    assert!(said.contains("mktemp -d"), "{said}");
    assert!(!said.contains('\n'), "{said}");
    // Group-write by a group other than the user's own private one (group
    // 0 is never taken as private: system accounts share it). A private
    // group is tried in tests/security (a second user, umask 002).
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        chmod(&state, 0o775);
        let said = state_dir(&state, true).expect_err("refused");
        assert!(
            said.contains("can be written by the group root (0)"),
            "{said}"
        );
        let path = std::ffi::CString::new(state.to_str().unwrap()).unwrap();
        // SAFETY: chown reads a NUL-terminated path.
        assert_eq!(unsafe { libc::chown(path.as_ptr(), 0, 65534) }, 0);
        chmod(&state, 0o770);
        let said = state_dir(&state, true).expect_err("refused");
        assert!(said.contains("can be written by the group"), "{said}");
    }
}

#[test]
fn links_pipes_and_writable_files_inside_are_refused() {
    let state = scratch("inside");
    std::os::unix::fs::symlink("/etc/passwd", state.join("owner.json")).expect("link");
    let said = state_dir(&state, true).expect_err("refused");
    assert!(
        said.contains("owner.json is refused: it is a link"),
        "{said}"
    );
    std::fs::remove_file(state.join("owner.json")).expect("rm");

    let fifo = std::ffi::CString::new(state.join("live.json").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let said = state_dir(&state, true).expect_err("refused");
    assert!(said.contains("neither a file nor a directory"), "{said}");
    std::fs::remove_file(state.join("live.json")).expect("rm");

    // The socket of the process that holds the store is the one socket
    // allowed, and only while no one else can write it.
    let served = std::os::unix::net::UnixListener::bind(state.join(SOCKET)).expect("binds");
    chmod(&state.join(SOCKET), 0o600);
    state_dir(&state, true).expect("the holder's socket is allowed");
    chmod(&state.join(SOCKET), 0o666);
    let said = state_dir(&state, true).expect_err("refused");
    assert!(said.contains("can be written by every user"), "{said}");
    drop(served);
    std::fs::remove_file(state.join(SOCKET)).expect("rm");
    let other = std::os::unix::net::UnixListener::bind(state.join("other.sock")).expect("binds");
    let said = state_dir(&state, true).expect_err("refused");
    assert!(
        said.contains("other.sock is refused: it is neither a file nor a directory"),
        "{said}"
    );
    drop(other);
    std::fs::remove_file(state.join("other.sock")).expect("rm");

    make_dir(&state.join("journal")).expect("dir");
    std::fs::write(state.join("journal/db"), b"x").expect("write");
    chmod(&state.join("journal/db"), 0o666);
    let said = state_dir(&state, true).expect_err("refused");
    assert!(
        said.contains("journal/db is refused: it can be written by every user"),
        "{said}"
    );
}

#[test]
fn what_an_earlier_version_left_readable_is_made_private() {
    let state = scratch("tighten");
    std::fs::create_dir(state.join("sources")).expect("dir");
    chmod(&state.join("sources"), 0o755);
    std::fs::write(state.join("sources/1.runbook"), b"x").expect("write");
    chmod(&state.join("sources/1.runbook"), 0o644);
    assert_eq!(state_dir(&state, false), Ok(Found::Present));
    assert_eq!(mode(&state.join("sources")), 0o700);
    assert_eq!(mode(&state.join("sources/1.runbook")), 0o600);
}

#[test]
fn a_parent_others_can_write_is_refused_unless_sticky() {
    let base = scratch("parent");
    let state = base.join("state");
    make_dir(&state).expect("dir");
    chmod(&base, 0o777);
    let said = state_dir(&state, true).expect_err("refused");
    assert!(said.contains("its parent"), "{said}");
    chmod(&base, 0o1777);
    assert_eq!(state_dir(&state, true), Ok(Found::Present));
}

#[test]
fn a_state_directory_of_another_user_is_refused() {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: changing a directory's owner needs root");
        return;
    }
    let state = scratch("owner");
    let path = std::ffi::CString::new(state.to_str().unwrap()).unwrap();
    // SAFETY: chown reads a NUL-terminated path.
    assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
    let said = state_dir(&state, true).expect_err("refused");
    assert!(said.contains("belongs to user"), "{said}");
    assert!(said.contains("not to you"), "{said}");
}

#[test]
fn files_are_created_new_private_and_never_through_a_link() {
    let dir = scratch("files");
    let file = dir.join("f");
    create_new(&file).expect("new");
    assert_eq!(mode(&file), 0o600);
    assert!(create_new(&file).is_err(), "never one already there");
    std::os::unix::fs::symlink(dir.join("target"), dir.join("l")).expect("link");
    assert!(create_new(&dir.join("l")).is_err());
    assert!(open_rw(&dir.join("l")).is_err());
    assert!(
        !dir.join("target").exists(),
        "nothing made through the link"
    );
    write_whole(&dir, "owner.json", b"{}").expect("whole");
    assert_eq!(mode(&dir.join("owner.json")), 0o600);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty());
}

#[test]
fn reading_refuses_pipes_links_and_what_is_too_large_without_waiting() {
    let dir = scratch("read");
    let fifo = dir.join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = read(&fifo, 10).expect_err("a pipe is not read");
    assert!(e.to_string().contains("not a plain file"), "{e}");
    std::fs::write(dir.join("big"), vec![b'x'; 11]).expect("write");
    assert!(read(&dir.join("big"), 10).is_err());
    assert_eq!(read(&dir.join("big"), 11).expect("fits").len(), 11);
    std::os::unix::fs::symlink(dir.join("big"), dir.join("l")).expect("link");
    assert!(read(&dir.join("l"), 100).is_err());
}

#[test]
fn a_temporary_file_a_killed_writer_left_is_removed_and_a_live_ones_kept() {
    let dir = std::env::temp_dir().join(format!("runbook-whole-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // No process has pid i32::MAX - 1 here (pid_max is far below it).
    let dead = dir.join(format!(".owner.json.{}.tmp", i32::MAX - 1));
    let live = dir.join(".owner.json.1.tmp");
    let other = dir.join(format!(".live.json.{}.tmp", i32::MAX - 1));
    for f in [&dead, &live, &other] {
        std::fs::write(f, b"{").expect("writes");
    }
    write_whole(&dir, "owner.json", b"{}").expect("writes");
    assert!(!dead.exists(), "left by a writer that is gone");
    assert!(live.exists(), "pid 1 lives: its file may be being written");
    assert!(other.exists(), "another name's files are not touched");
    let left: Vec<String> = std::fs::read_dir(&dir)
        .expect("lists")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&std::process::id().to_string()))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
