//! A team shares a state directory through a group (`RUNBOOK_SHARED_GROUP`):
//! while one user's run waits for an approval, another user of the group
//! approves it through the socket of the process that holds the store, and
//! the approval records who they are as the kernel says, whatever name
//! `--as` gives. A user outside the group gets nothing.

use super::other_user::{other_user, OTHER};
use crate::common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TEAM: &str = "runbook-test-team";

/// The team's gid, the group made if missing, with the other user in it.
fn team() -> u32 {
    let gid = || -> Option<u32> {
        let out = Command::new("getent").args(["group", TEAM]).output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .nth(2)?
            .trim()
            .parse()
            .ok()
    };
    if gid().is_none() {
        // Two tests may make it at once: "already exists" is fine.
        let _ = Command::new("groupadd").args(["--system", TEAM]).output();
    }
    let added = Command::new("gpasswd")
        .args(["--add", OTHER, TEAM])
        .output()
        .expect("gpasswd runs");
    assert!(added.status.success(), "{}", stderr(&added));
    gid().expect("the group exists")
}

/// `runbook --state STATE args`, as `uid`/`gid` with the team as its only
/// supplementary group (or none), sharing the directory with the team.
fn runbook_as(state: &Path, who: (u32, u32), groups: Option<u32>, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={}", who.0))
        .arg(format!("--regid={}", who.1));
    match groups {
        Some(gid) => c.arg(format!("--groups={gid}")),
        None => c.arg("--clear-groups"),
    };
    c.arg("--")
        .arg(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(state)
        .args(args)
        .env("RUNBOOK_SHARED_GROUP", TEAM)
        .env("NO_COLOR", "1")
        .current_dir("/");
    c
}

fn output(mut c: Command) -> Output {
    c.output().expect("setpriv starts")
}

#[test]
fn a_team_member_approves_through_the_socket_as_themselves_and_an_outsider_cannot() {
    let Some(other) = other_user("a_team_member_approves_through_the_socket") else {
        return;
    };
    let team = team();
    let dir = std::env::temp_dir().join(format!("runbook-sec-team-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory");
    let file = write(
        &dir,
        "gate.runbook",
        "runbook gate {\n  approve gate {\n    prompt \"ship it?\"\n  }\n  run shipped after gate {\n    command \"true\"\n  }\n}\n",
    );
    let state = dir.join("state");
    let me = (0, 0);
    let holder = runbook_as(&state, me, Some(team), &["run", path(&file)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let began = Instant::now();
    loop {
        let shown = output(runbook_as(&state, me, Some(team), &["status", "1"]));
        if stdout(&shown).contains("waiting for approval") {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "{}{}",
            stdout(&shown),
            stderr(&shown)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Outside the team: not even the directory is theirs to look into.
    let outsider = output(runbook_as(
        &state,
        other,
        None,
        &["approve", "1", "gate", "--as", "root"],
    ));
    assert_eq!(outsider.status.code(), Some(1), "{}", stdout(&outsider));
    assert_eq!(
        stderr(&outsider).lines().count(),
        1,
        "{}",
        stderr(&outsider)
    );

    // In the team, but a run's programs would run as the holder's user:
    // starting one there is that user's alone, said in one sentence.
    let started = output(runbook_as(&state, other, Some(team), &["run", path(&file)]));
    assert_eq!(started.status.code(), Some(1), "{}", stdout(&started));
    let said = stderr(&started);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.contains("run their programs as user root (0), so only that user may start, resume, retry or stop one here"),
        "{said}"
    );
    assert!(said.contains(OTHER), "{said}");

    // In the team: approved through the socket, recorded as who they are.
    let approved = output(runbook_as(
        &state,
        other,
        Some(team),
        &["approve", "1", "gate", "--as", "root"],
    ));
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    assert_eq!(
        stdout(&approved),
        "approved `gate` of run 1 as root; the run goes on\n"
    );
    let out = holder.wait_with_output().expect("the run ends");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = output(runbook_as(&state, me, Some(team), &["status", "1"]));
    assert!(
        stdout(&shown).contains(&format!("root (Unix user {OTHER})")),
        "the account the kernel named is kept beside the name given: {}",
        stdout(&shown)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
