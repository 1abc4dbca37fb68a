//! Finding where cgroups may be made, and a contained program that leaves
//! its process group: still seen, and killed whole.
#![allow(unsafe_code)] // tests set up processes and files with raw calls

use super::*;
use crate::actions::spawn;
use std::time::{Duration, Instant};

#[test]
fn the_cgroup2_mount_is_the_whole_hierarchy_with_its_escapes_undone() {
    let mountinfo = "\
24 29 0:22 / /sys rw,nosuid - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
31 24 0:27 /sub /mnt/part rw - cgroup2 cgroup2 rw
32 24 0:28 / /sys/fs/cgroup/my\\040unified rw,relatime - cgroup2 cgroup2 rw
";
    assert_eq!(
        cgroup2_mount(mountinfo),
        Some(PathBuf::from("/sys/fs/cgroup/my unified")),
        "a bind mount of part of the hierarchy is passed over"
    );
    assert_eq!(
        cgroup2_mount("30 24 0:26 / /x rw - cgroup cgroup rw\n"),
        None
    );
    assert_eq!(unescape(r"a\134b\011c\0"), "a\\b\tc\\0");
}

#[test]
fn only_a_runbook_directory_named_by_absolute_path_is_taken_from_a_note() {
    let dir = std::env::temp_dir().join(format!("runbook-contain-note-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let note = dir.join("1.cgroup");
    for (text, taken) in [
        ("/sys/fs/cgroup/runbook.1.0a0b0c0d", true),
        ("/sys/fs/cgroup/runbook.1.0a0b0c0d\n", true),
        ("/sys/fs/cgroup/user.slice", false),
        ("runbook.1.0a0b0c0d", false),
        ("", false),
    ] {
        std::fs::write(&note, text).expect("writes");
        assert_eq!(run_dir_named(&note).is_some(), taken, "{text:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where this test may make cgroups, or None (said loudly; CI must have it).
pub(crate) fn cgroups_here(test: &str) -> Option<Cgroups> {
    let found = Cgroups::find();
    if found.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must run where runbook may make cgroups (as root, cgroup v2) ({test})"
        );
        eprintln!("SKIPPED: {test} needs a cgroup v2 cgroup this user may write (root)");
    }
    found
}

#[test]
fn a_contained_program_that_left_its_process_group_is_seen_and_killed_whole() {
    let _kill_list = crate::actions::contain::kill_list_for_a_test();
    let Some(cgroups) = cgroups_here("a_contained_program_that_left_its_process_group") else {
        return;
    };
    let dir = cgroups
        .make_run_dir(crate::engine::RunId(1))
        .expect("makes a run's directory");
    Cgroup::make(dir.join("0")).expect("makes a slot's cgroup");
    let cgroup = Cgroup::make(dir.join("0")).expect("making it again is no error");
    let procs = cgroup.joining().expect("opens it for joining");
    let notes = std::fs::File::create(
        std::env::temp_dir().join(format!("runbook-contain-{}", std::process::id())),
    )
    .expect("a notes file");
    let launch = spawn::Launch::new(
        "sh",
        &["-c".into(), "setsid -f sleep 30 >/dev/null 2>&1".into()],
        &[],
        None,
    )
    .expect("prepares");
    let leader = spawn::spawn(
        &launch,
        Some(spawn::NoteSlot {
            file: &notes,
            offset: 0,
            text: [b' '; spawn::NOTE],
            join: Some(&procs),
        }),
    )
    .expect("starts")
    .pid;
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child.
    unsafe { libc::waitpid(leader as i32, &mut status, 0) };
    assert_eq!(status, 0);
    // The shell has ended, and its process group with it; its `sleep` is
    // in a session of its own, and still in the cgroup.
    // (`setsid -f` forks first: its child leaves the group a moment later.)
    let began = Instant::now();
    while spawn::group_exists(leader as i32) {
        assert!(began.elapsed() < Duration::from_secs(5), "the group stays");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(cgroup.populated(), "the escaped program is in the cgroup");
    assert_eq!(cgroup.pids().len(), 1);
    assert!(cgroup.ours());
    assert!(!cgroup.remove(), "a cgroup holding a process stays");
    cgroup.kill();
    let began = Instant::now();
    while !killed_left().is_empty() {
        assert!(began.elapsed() < Duration::from_secs(5), "still alive");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!cgroup.populated());
    tidy(&dir);
    assert!(!dir.exists(), "empty cgroups are removed");
}

#[test]
fn a_cgroup_removed_since_it_was_made_leaves_the_program_running_uncontained() {
    let Some(cgroups) = cgroups_here("a_cgroup_removed_since_it_was_made") else {
        return;
    };
    let dir = cgroups
        .make_run_dir(crate::engine::RunId(2))
        .expect("makes a run's directory");
    let cgroup = Cgroup::make(dir.join("0")).expect("makes a slot's cgroup");
    let procs = cgroup.joining().expect("opens it for joining");
    tidy(&dir);
    assert!(!dir.exists(), "someone removed it");
    let notes = std::fs::File::create(
        std::env::temp_dir().join(format!("runbook-contain-gone-{}", std::process::id())),
    )
    .expect("a notes file");
    let launch = spawn::Launch::new("true", &[], &[], None).expect("prepares");
    let spawned = spawn::spawn(
        &launch,
        Some(spawn::NoteSlot {
            file: &notes,
            offset: 0,
            text: [b' '; spawn::NOTE],
            join: Some(&procs),
        }),
    )
    .expect("starts all the same");
    assert!(
        spawned.uncontained.is_some(),
        "the start says it is not contained"
    );
    let pid = spawned.pid;
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child.
    unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    assert_eq!(status, 0, "it ran");
    assert!(!cgroup.populated());
}

#[test]
fn a_cgroup_killed_for_an_earlier_program_is_not_waited_for_once_given_to_the_next() {
    let _kill_list = crate::actions::contain::kill_list_for_a_test();
    let Some(cgroups) = cgroups_here("a_cgroup_killed_for_an_earlier_program") else {
        return;
    };
    let dir = cgroups
        .make_run_dir(crate::engine::RunId(3))
        .expect("makes a run's directory");
    let cgroup = Cgroup::make(dir.join("0")).expect("makes a slot's cgroup");
    // Killed (empty by now), then the slot's next program starts in it.
    cgroup.kill();
    let procs = cgroup.joining().expect("opens it for joining");
    let notes = std::fs::File::create(
        std::env::temp_dir().join(format!("runbook-contain-next-{}", std::process::id())),
    )
    .expect("a notes file");
    let launch = spawn::Launch::new("sleep", &["30".into()], &[], None).expect("prepares");
    let next = spawn::spawn(
        &launch,
        Some(spawn::NoteSlot {
            file: &notes,
            offset: 0,
            text: [b' '; spawn::NOTE],
            join: Some(&procs),
        }),
    )
    .expect("starts")
    .pid;
    assert!(
        killed_left().contains(&cgroup),
        "what the kill list would wait for"
    );
    forget_killed(&cgroup);
    assert!(!killed_left().contains(&cgroup));
    cgroup.kill();
    spawn::reap_later(next);
    let began = Instant::now();
    while cgroup.populated() {
        assert!(began.elapsed() < Duration::from_secs(5), "still alive");
        std::thread::sleep(Duration::from_millis(10));
    }
    spawn::wait_killed_gone(Duration::from_secs(5));
    tidy(&dir);
}

#[test]
fn a_contained_program_is_born_in_its_cgroup() {
    let Some(cgroups) = cgroups_here("a_contained_program_is_born_in_its_cgroup") else {
        return;
    };
    let dir = cgroups
        .make_run_dir(crate::engine::RunId(4))
        .expect("makes a run's directory");
    let cgroup = Cgroup::make(dir.join("0")).expect("makes a slot's cgroup");
    let joining = cgroup.joining().expect("opens it for joining");
    let notes = std::fs::File::create(
        std::env::temp_dir().join(format!("runbook-contain-born-{}", std::process::id())),
    )
    .expect("a notes file");
    let launch =
        spawn::Launch::new("cat", &["/proc/self/cgroup".into()], &[], None).expect("prepares");
    let spawned = spawn::spawn(
        &launch,
        Some(spawn::NoteSlot {
            file: &notes,
            offset: 0,
            text: [b' '; spawn::NOTE],
            join: Some(&joining),
        }),
    )
    .expect("starts");
    assert!(spawned.uncontained.is_none());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(spawned.stdout), &mut out)
        .expect("reads what it printed");
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child.
    unsafe { libc::waitpid(spawned.pid as i32, &mut status, 0) };
    assert_eq!(status, 0);
    let relative = cgroup
        .to_string()
        .strip_prefix(&cgroups.base.display().to_string())
        .map(str::to_string)
        .expect("under the base");
    assert!(
        out.lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&relative)),
        "{out} (wanted {relative})"
    );
    // On x86-64 with Linux 5.7 or later it was clone3 that put it there,
    // not a write of its own (which the test above would also pass).
    let (release, version) = linux();
    if cfg!(target_arch = "x86_64") && version >= (5, 7) {
        assert!(
            spawn::clone3_supported(),
            "clone3 was given up on, on Linux {release}"
        );
    }
    tidy(&dir);
}

#[test]
fn a_program_killed_as_it_is_born_in_a_killed_cgroup_is_started_again_the_other_way() {
    let Some(cgroups) = cgroups_here("a_program_killed_as_it_is_born") else {
        return;
    };
    let dir = cgroups
        .make_run_dir(crate::engine::RunId(5))
        .expect("makes a run's directory");
    let cgroup = Cgroup::make(dir.join("0")).expect("makes a slot's cgroup");
    // Killed by someone else (runbook's own kill would keep the program
    // from being born there at all), empty since.
    std::fs::write(dir.join("0/cgroup.kill"), "1").expect("kills it");
    let joining = cgroup.joining().expect("opens it for joining");
    assert!(joining.may_be_born_in());
    let notes = std::fs::File::create(
        std::env::temp_dir().join(format!("runbook-contain-reborn-{}", std::process::id())),
    )
    .expect("a notes file");
    let launch =
        spawn::Launch::new("sh", &["-c".into(), "exit 7".into()], &[], None).expect("prepares");
    let spawned = spawn::spawn(
        &launch,
        Some(spawn::NoteSlot {
            file: &notes,
            offset: 0,
            text: [b' '; spawn::NOTE],
            join: Some(&joining),
        }),
    )
    .expect("starts");
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child.
    unsafe { libc::waitpid(spawned.pid as i32, &mut status, 0) };
    assert_eq!(
        (libc::WIFEXITED(status), libc::WEXITSTATUS(status)),
        (true, 7),
        "it ran (status {status}), not killed at birth"
    );
    let (release, version) = linux();
    if cfg!(target_arch = "x86_64") && version >= (6, 14) {
        assert!(
            !joining.may_be_born_in(),
            "the start born dead was seen, on Linux {release}"
        );
    }
    tidy(&dir);
}

/// The running kernel's release, and its major and minor numbers.
fn linux() -> (String, (u32, u32)) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (release.trim().to_string(), version)
}
