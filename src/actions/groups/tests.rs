//! The notes of running programs: written by the program itself before it
//! runs, seen until its group is gone, and blanked after.
#![allow(unsafe_code)] // tests set up processes and files with raw calls

use super::*;
use std::time::Duration;

/// A fresh directory per test, and the notes kept under it.
fn notes(name: &str) -> (PathBuf, GroupNotes) {
    let dir = std::env::temp_dir().join(format!("runbook-groups-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let notes = GroupNotes::new(dir.join("running"));
    (dir, notes)
}

/// Starts `sleep` for `step` of run 7, noted as the executor does; its
/// pid and slot.
fn start_sleep(notes: &GroupNotes, step: &str) -> (u32, usize) {
    let reserved = notes.reserve(RunId(7), step).expect("reserves");
    let launch = spawn::Launch::new("sleep", &["30".to_string()], &[], None).expect("prepares");
    let pid = spawn::spawn(&launch, Some(reserved.slot()))
        .expect("starts")
        .pid;
    (pid, reserved.index())
}

fn end(pid: u32) {
    let _kill_list = crate::actions::contain::kill_list_for_a_test();
    spawn::kill_group(pid);
    spawn::reap_later(pid);
    assert!(spawn::wait_killed_gone(Duration::from_secs(5)).is_empty());
}

#[test]
fn a_started_program_is_seen_until_it_ends_and_then_forgotten() {
    let (_dir, notes) = notes("seen");
    let (deploy, deploy_slot) = start_sleep(&notes, "deploy");
    let (backup, _) = start_sleep(&notes, "backup");
    let seen = |step| match notes.still_running(RunId(7), step) {
        Some(Noted::Running(g)) => Some(g.pid),
        other => {
            assert_eq!(other, None);
            None
        }
    };
    assert_eq!(seen("deploy"), Some(deploy));
    assert_eq!(seen("backup"), Some(backup));
    assert_eq!(seen("other"), None);
    assert_eq!(notes.still_running(RunId(8), "deploy"), None);
    end(deploy);
    assert_eq!(seen("deploy"), None, "its group is gone");
    notes.forget(RunId(7), deploy_slot);
    assert_eq!(seen("backup"), Some(backup));
    // The freed slot is used again: the file does not grow.
    let (verify, _) = start_sleep(&notes, "verify");
    let len = std::fs::metadata(notes.path(RunId(7))).expect("file").len();
    assert_eq!(len, 2 * NOTE as u64);
    assert_eq!(seen("verify"), Some(verify));
    end(backup);
    end(verify);
}

#[test]
fn a_group_whose_leader_is_gone_is_running_while_members_are_left() {
    let _kill_list = crate::actions::contain::kill_list_for_a_test();
    let (_dir, notes) = notes("members");
    let reserved = notes.reserve(RunId(7), "migrate").expect("reserves");
    let launch = spawn::Launch::new(
        "sh",
        &["-c".to_string(), "sleep 30 & exit 0".to_string()],
        &[],
        None,
    )
    .expect("prepares");
    let leader = spawn::spawn(&launch, Some(reserved.slot()))
        .expect("starts")
        .pid;
    let mut status = 0;
    // SAFETY: waitpid(2) on the child this test started.
    unsafe { libc::waitpid(leader as i32, &mut status, 0) };
    assert!(matches!(
        notes.still_running(RunId(7), "migrate"),
        Some(Noted::Running(g)) if g.pid == leader
    ));
    spawn::kill_group(leader);
    assert!(spawn::wait_killed_gone(Duration::from_secs(5)).is_empty());
    assert_eq!(notes.still_running(RunId(7), "migrate"), None);
}

#[test]
fn a_reused_pid_is_not_the_program_noted() {
    let (_dir, notes) = notes("reused");
    notes.reserve(RunId(1), "deploy").expect("reserves");
    // This process's pid, noted as started an hour after it really did.
    let line = format!(
        "{:>10} {:>16} deploy",
        std::process::id(),
        spawn::boot_clock_ms() + 3_600_000
    );
    std::fs::write(notes.path(RunId(1)), format!("{line:<127}\n")).expect("writes");
    assert_eq!(notes.still_running(RunId(1), "deploy"), None);
}

#[test]
fn a_slot_still_being_started_is_a_program_while_its_group_has_a_new_process() {
    let _kill_list = crate::actions::contain::kill_list_for_a_test();
    let (_dir, notes) = notes("starting");
    notes.reserve(RunId(1), "deploy").expect("reserves");
    let text = std::fs::read_to_string(notes.path(RunId(1))).expect("reads");
    // SAFETY: getpgrp(2) cannot fail.
    let ours = unsafe { libc::getpgrp() };
    assert!(
        text.trim_start().starts_with(&format!("~{ours} ")),
        "{text}"
    );
    // A single-threaded process started since, still in the group the slot
    // names, may be about to become the program: one stands in for it.
    let since = spawn::boot_clock_ms();
    let launch = spawn::Launch::new("sleep", &["30".to_string()], &[], None).expect("prepares");
    let stand_in = spawn::spawn(&launch, None).expect("starts").pid;
    let line = format!("{:>10} {since:>16} deploy", format!("~{stand_in}"));
    std::fs::write(notes.path(RunId(1)), format!("{line:<127}\n")).expect("writes");
    assert_eq!(
        notes.still_running(RunId(1), "deploy"),
        Some(Noted::Starting)
    );
    spawn::kill_group(stand_in);
    spawn::reap_later(stand_in);
    assert!(spawn::wait_killed_gone(Duration::from_secs(5)).is_empty());
    assert_eq!(
        notes.still_running(RunId(1), "deploy"),
        None,
        "it never ran"
    );
}

#[test]
fn a_program_that_noted_itself_late_is_still_the_program() {
    let (_dir, notes) = notes("late");
    let reserved = notes.reserve(RunId(1), "deploy").expect("reserves");
    // The new process was not scheduled for over a second after its slot
    // was reserved (a starved machine, a SIGSTOP).
    std::thread::sleep(Duration::from_millis(1_200));
    let launch = spawn::Launch::new("sleep", &["30".to_string()], &[], None).expect("prepares");
    let pid = spawn::spawn(&launch, Some(reserved.slot()))
        .expect("starts")
        .pid;
    assert!(matches!(
        notes.still_running(RunId(1), "deploy"),
        Some(Noted::Running(g)) if g.pid == pid
    ));
    end(pid);
}

#[test]
fn releasing_a_retry_leaves_an_earlier_attempt_that_still_runs_noted() {
    let (_dir, notes) = notes("retry");
    let notes = Arc::new(notes);
    let step = StepNotes::new(Arc::clone(&notes), RunId(7), "flaky");
    let (first, first_slot) = start_sleep(&notes, "flaky");
    // Its attempt ended, but its group lives on: its note stays.
    step.release(first_slot, Some(first), None);
    let second = step.reserve().expect("reserves");
    assert_ne!(second.index(), first_slot);
    step.release(second.index(), None, None);
    assert!(matches!(
        notes.still_running(RunId(7), "flaky"),
        Some(Noted::Running(g)) if g.pid == first
    ));
    end(first);
}

#[test]
fn a_very_long_step_name_is_noted_by_its_hash() {
    let (_dir, notes) = notes("long");
    let long = "s".repeat(500);
    let (pid, _) = start_sleep(&notes, &long);
    assert!(matches!(
        notes.still_running(RunId(7), &long),
        Some(Noted::Running(g)) if g.pid == pid
    ));
    assert_eq!(notes.still_running(RunId(7), &"s".repeat(499)), None);
    end(pid);
}

#[test]
fn a_run_whose_programs_ended_leaves_no_file() {
    let (dir, notes) = notes("ended");
    let a = notes.reserve(RunId(3), "a").expect("reserves");
    notes.forget(RunId(3), a.index());
    notes.reserve(RunId(4), "b").expect("reserves");
    drop(notes);
    let running = dir.join("running");
    assert!(!running.join("3").exists());
    assert!(
        running.join("4").exists(),
        "a program still noted stays noted"
    );
}

#[test]
fn a_contained_program_is_running_while_its_cgroup_holds_what_left_its_group() {
    let _kill_list = crate::actions::contain::kill_list_for_a_test();
    let Some(cgroups) =
        super::contain::tests::cgroups_here("a_contained_program_is_running_while_its_cgroup")
    else {
        return;
    };
    let (dir, notes) = notes("contained");
    let notes = notes.containing(Some(cgroups));
    let step = StepNotes::new(std::sync::Arc::new(notes), RunId(9), "daemonize");
    let reserved = step.reserve().expect("reserves");
    let cgroup = reserved.cgroup().expect("a cgroup of its own");
    let launch = spawn::Launch::new(
        "sh",
        &[
            "-c".to_string(),
            "setsid -f sleep 30 >/dev/null 2>&1".to_string(),
        ],
        &[],
        None,
    )
    .expect("prepares");
    let leader = spawn::spawn(&launch, Some(reserved.slot()))
        .expect("starts")
        .pid;
    let mut status = 0;
    // SAFETY: waitpid(2) on the child this test started.
    unsafe { libc::waitpid(leader as i32, &mut status, 0) };
    // `setsid -f` forks first: its child leaves the group a moment later.
    let began = std::time::Instant::now();
    while spawn::group_exists(leader as i32) {
        assert!(began.elapsed() < Duration::from_secs(5), "the group stays");
        std::thread::sleep(Duration::from_millis(5));
    }
    step.release(reserved.index(), Some(leader), Some(&cgroup));
    // A later process (`resume`, `cancel`) reads the notes afresh.
    let later = GroupNotes::new(dir.join("running"));
    let Some(Noted::Running(group)) = later.still_running(RunId(9), "daemonize") else {
        panic!("the program that left its process group is not seen");
    };
    assert_eq!(group.cgroup.as_ref(), Some(&cgroup));
    assert!(
        group.describe().starts_with("cgroup "),
        "{}",
        group.describe()
    );
    group.kill();
    assert!(spawn::wait_killed_gone(Duration::from_secs(5)).is_empty());
    assert_eq!(later.still_running(RunId(9), "daemonize"), None);
    // Its slot is freed once its cgroup is empty, and the run's cgroups and
    // notes are removed with the last of them.
    drop(step);
    assert!(!dir.join("running/9").exists());
    assert!(!dir.join("running/9.cgroup").exists());
    assert!(!cgroup.to_string().is_empty() && !std::path::Path::new(&cgroup.to_string()).exists());
}

#[test]
fn a_slot_is_freed_only_once_the_attempt_and_the_starting_thread_let_go() {
    let (_dir, notes) = notes("release");
    let step = StepNotes::new(std::sync::Arc::new(notes), RunId(5), "deploy");
    let reserved = step.reserve().expect("reserves");
    let attempt = crate::actions::child::SlotRelease::new(step.clone(), &reserved);
    let starting = std::sync::Arc::clone(&attempt);
    // The attempt is dropped (a timeout) while its program is being started:
    // the slot stays taken, for the program about to note itself there.
    drop(attempt);
    let next = step.reserve().expect("reserves");
    assert_ne!(next.index(), reserved.index());
    step.release(next.index(), None, None);
    // The start ends (its program killed and gone, or never made).
    drop(starting);
    let again = step.reserve().expect("reserves");
    assert_eq!(again.index(), reserved.index(), "freed now");
}

#[test]
fn an_earlier_process_s_cgroup_note_is_dropped_even_where_this_one_contains_nothing() {
    let (dir, notes) = notes("stale-cgroup-note");
    let running = dir.join("running");
    std::fs::create_dir_all(&running).expect("mkdir");
    // An earlier, contained process's directory: its slot 0 held a
    // finished step's background program.
    std::fs::write(running.join("9.cgroup"), "/nonexistent/runbook.9.0a0b0c0d").expect("writes");
    notes.reserve(RunId(9), "next").expect("reserves");
    assert!(
        !running.join("9.cgroup").exists(),
        "slot 0 of this process is not slot 0 of the earlier one"
    );
}
