//! A team shares a state directory through a group (`RUNBOOK_SHARED_GROUP`):
//! while one user's run waits for an approval, another user of the group
//! approves it through the socket of the process that holds the store, and
//! the approval records who they are as the kernel says, whatever name
//! `--as` gives. A user outside the group gets nothing.

use super::other_user::{other_user, user_named, OTHER};
use crate::common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TEAM: &str = "runbook-test-team";

/// The third user, for a second approval.
const THIRD: &str = "runbook-test-third";

/// The team's gid, the group made if missing, with the other user in it.
fn team() -> u32 {
    team_with(OTHER)
}

/// The team's gid, the group made if missing, with `user` in it.
fn team_with(user: &str) -> u32 {
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
        .args(["--add", user, TEAM])
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
    wait_waiting(&state, team);

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

    // In the team: a name of their choosing is refused (the holder does
    // not allow names), and their approval is recorded as who they are.
    let named = output(runbook_as(
        &state,
        other,
        Some(team),
        &["approve", "1", "gate", "--as", "root"],
    ));
    assert_eq!(named.status.code(), Some(1), "{}", stdout(&named));
    assert_eq!(
        stderr(&named),
        format!("error: --as is not allowed here: an approval is recorded as the Unix user who gives it ({OTHER}); to let people of a shared login name themselves, the process that holds the store runs with RUNBOOK_ALLOW_AS=1\n")
    );
    let approved = output(runbook_as(
        &state,
        other,
        Some(team),
        &["approve", "1", "gate"],
    ));
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    assert_eq!(
        stdout(&approved),
        format!("approved `gate` of run 1 as {OTHER}; the run goes on\n")
    );
    let out = holder.wait_with_output().expect("the run ends");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = output(runbook_as(&state, me, Some(team), &["status", "1"]));
    assert!(
        stdout(&shown).contains(&format!("approved by {OTHER} at")),
        "the account the kernel named: {}",
        stdout(&shown)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until run 1 of `state` waits for approval, asking as root.
fn wait_waiting(state: &Path, team: u32) {
    let began = Instant::now();
    loop {
        let shown = output(runbook_as(state, (0, 0), Some(team), &["status", "1"]));
        if stdout(&shown).contains("waiting for approval") {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "{}{}",
            stdout(&shown),
            stderr(&shown)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_approvals_from_the_group_need_two_people_none_of_them_the_starter() {
    let test = "two_approvals_from_the_group_need_two_people";
    let (Some(other), Some(third)) = (other_user(test), user_named(THIRD, test)) else {
        return;
    };
    team_with(OTHER);
    let team = team_with(THIRD);
    let dir = std::env::temp_dir().join(format!("runbook-sec-two-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory");
    let file = write(
        &dir,
        "gate.runbook",
        format!("runbook gate {{\n  approve gate {{\n    prompt \"ship it?\"\n    groups [\"{TEAM}\"]\n    approvals 2\n  }}\n  run shipped after gate {{\n    command \"true\"\n  }}\n}}\n"),
    );
    let state = dir.join("state");
    let holder = runbook_as(&state, (0, 0), Some(team), &["run", path(&file)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    wait_waiting(&state, team);
    let approve = |who: (u32, u32)| {
        output(runbook_as(
            &state,
            who,
            Some(team),
            &["approve", "1", "gate"],
        ))
    };

    // The starter (root, outside the group) may not.
    let starter = approve((0, 0));
    assert_eq!(starter.status.code(), Some(1));
    assert_eq!(
        stderr(&starter),
        format!("error: `root` may not approve `gate`; it may be approved by a member of {TEAM}\n")
    );
    let first = approve(other);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(
        stdout(&first),
        format!("approved `gate` of run 1 as {OTHER}; 1 more approval is needed, from a member of {TEAM}\n")
    );
    // The same person again counts once.
    let again = approve(other);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(
        stdout(&again),
        format!("`gate` of run 1 was approved by {OTHER} already; nothing more is recorded; 1 more approval is needed, from a member of {TEAM}\n")
    );
    let shown = stdout(&output(runbook_as(
        &state,
        (0, 0),
        Some(team),
        &["status", "1"],
    )));
    assert!(
        shown.contains(&format!("\"ship it?\"; approved by {OTHER}; 1 more from a member of {TEAM}, not the starter (approve with: runbook approve 1 gate)")),
        "{shown}"
    );
    let second = approve(third);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(
        stdout(&second),
        format!("approved `gate` of run 1 as {THIRD}; the run goes on\n")
    );
    let out = holder.wait_with_output().expect("the run ends");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let history = stdout(&output(runbook_as(
        &state,
        (0, 0),
        Some(team),
        &["history", "1"],
    )));
    for said in [
        format!("`gate` approved by {OTHER}"),
        format!("`gate` approved by {THIRD}"),
        format!("`gate` succeeded: approved by {OTHER}, {THIRD}"),
    ] {
        assert!(history.contains(&said), "`{said}` in:\n{history}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The whole scene: two terminals start two runs in one state
/// directory, a third watches both, a fourth approves both as another Unix
/// user, and the history names everyone.
#[test]
fn two_runs_two_terminals_a_third_watches_both_a_fourth_approves_as_another_user() {
    let Some(other) = other_user("two_runs_two_terminals") else {
        return;
    };
    let team = team();
    let dir = std::env::temp_dir().join(format!("runbook-sec-scene-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory");
    let gated = |name: &str| {
        format!("runbook {name} {{\n  approve gate {{\n    prompt \"ship {name}?\"\n    groups [\"{TEAM}\"]\n  }}\n  run shipped after gate {{\n    command \"echo\"\n    args [\"{name} shipped\"]\n  }}\n}}\n")
    };
    let canary = write(&dir, "canary.runbook", gated("canary"));
    let nightly = write(&dir, "nightly.runbook", gated("nightly"));
    let state = dir.join("state");
    let me = (0, 0);
    let spawn_as = |args: &[&str]| {
        runbook_as(&state, me, Some(team), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts")
    };
    // Terminal 1 holds the store; terminal 2's run goes beside it.
    let first = spawn_as(&["run", path(&canary)]);
    wait_waiting(&state, team);
    let second = spawn_as(&["run", path(&nightly)]);
    let began = Instant::now();
    while !stdout(&output(runbook_as(
        &state,
        me,
        Some(team),
        &["status", "2"],
    )))
    .contains("waiting for approval")
    {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "run 2 never waited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Terminal 3 watches both.
    let watch_1 = spawn_as(&["watch", "1"]);
    let watch_2 = spawn_as(&["watch", "2"]);
    std::thread::sleep(Duration::from_millis(300));
    // Terminal 4, another Unix user of the team, approves both.
    for run in ["1", "2"] {
        let approved = output(runbook_as(
            &state,
            other,
            Some(team),
            &["approve", run, "gate"],
        ));
        assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
        assert_eq!(
            stdout(&approved),
            format!("approved `gate` of run {run} as {OTHER}; the run goes on\n")
        );
    }
    for (name, child) in [("canary", first), ("nightly", second)] {
        let out = child.wait_with_output().expect("ends");
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert!(
            stdout(&out).contains(&format!("{name} shipped")),
            "{}",
            stdout(&out)
        );
    }
    for (name, watcher) in [("canary", watch_1), ("nightly", watch_2)] {
        let out = watcher.wait_with_output().expect("the watch ends");
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let seen = stdout(&out);
        assert!(seen.contains(&format!("approved by {OTHER}")), "{seen}");
        assert!(
            seen.contains(&format!("shipped | {name} shipped")),
            "{seen}"
        );
    }
    for run in ["1", "2"] {
        let history = stdout(&output(runbook_as(
            &state,
            me,
            Some(team),
            &["history", run],
        )));
        assert!(
            history.contains(&format!("`gate` approved by {OTHER}")),
            "{history}"
        );
        assert!(
            history
                .lines()
                .next()
                .unwrap_or_default()
                .ends_with(" by root"),
            "{history}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
