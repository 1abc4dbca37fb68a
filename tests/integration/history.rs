//! Who did what: a run records who started it and with which parameters
//! (a secret only as where it came from), and every approval, cancel,
//! resume and retry with the Unix account that asked and the time;
//! `runbook history` prints it all, readable or as JSON lines.

use crate::common::*;
use std::time::Duration;

const SECRET: &str = "hunter2-never-shown";

#[test]
fn history_shows_who_started_approved_cancelled_and_retried_and_never_a_secret() {
    let dir = scratch("history");
    let flag = dir.join("go-fast");
    let file = write(
        &dir,
        "h.runbook",
        format!(
            r#"runbook h {{
  param token: secret
  param region: string = "eu"

  run hello {{
    command "echo"
    args ["hello ${{region}}"]
  }}

  approve gate after hello {{
    prompt "go on?"
  }}

  run work after gate {{
    command "sh"
    args ["-c", "test -f {} || sleep 30"]
  }}
}}
"#,
            flag.display()
        ),
    );
    let state = dir.join("state");
    let token = format!("token={SECRET}");
    let run = spawn(
        &state,
        &["run", path(&file), "-p", &token, "-p", "region=us"],
    );
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    let approved = rb(&state, &["approve", "1", "gate", "--as", "alice"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    wait_for(&state, 1, |_, steps| {
        steps.iter().any(|(n, s)| n == "work" && s == "running")
    });
    let cancelled = rb(&state, &["cancel", "1"]);
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let _ = run.wait_with_output();
    std::fs::write(&flag, "").expect("writes");
    let retried = rb(&state, &["retry", "1", "--from", "work", "-p", &token]);
    assert_eq!(retried.status.code(), Some(0), "{}", stderr(&retried));

    let me = account();
    let listed = stdout(&rb(&state, &["status"]));
    // When, how long, who: `... UTC    2s16ms  root      h.runbook`.
    let line = listed.lines().next().unwrap_or_default();
    let after_date: Vec<&str> = line
        .split(" UTC ")
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(after_date.get(1), Some(&me.as_str()), "{listed}");
    assert!(after_date[0].ends_with('s'), "a duration: {listed}");
    let out = rb(&state, &["history", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("run 1: h (") && lines[0].ends_with(&format!(" by {me}")),
        "{text}"
    );
    assert_eq!(
        lines[1],
        "  parameters: token=(secret, given with -p), region=us"
    );
    let said: Vec<&str> = lines[2..].iter().map(|l| &l[29..]).collect();
    assert_eq!(
        said,
        [
            "run started",
            "`hello` started",
            "`hello` succeeded",
            "`gate` started",
            &format!("`gate` approved by alice (Unix user {me})"),
            &format!("`gate` succeeded: approved by alice (Unix user {me})"),
            "`work` started",
            &format!("cancelled by {me}"),
            "cancel requested: running steps stopped",
            "`work` failed: cancelled",
            "run finished: cancelled",
            &format!("retried from `work` by {me}"),
            "running again: `work`",
            "`work` started (attempt 2)",
            "`work` succeeded",
            "run finished: succeeded",
        ],
        "{text}"
    );

    let json = rb(&state, &["history", "1", "--json"]);
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let parsed: Vec<serde_json::Value> = stdout(&json)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(parsed[0]["started_by"], me.as_str());
    assert_eq!(parsed[0]["params"]["token"], "(secret, given with -p)");
    assert_eq!(parsed.len(), said.len() + 1);
    for (i, line) in parsed[1..].iter().enumerate() {
        assert_eq!(line["seq"], i + 1);
    }
    for shown in [&text, &stdout(&json)] {
        assert!(!shown.contains(SECRET), "a secret in the history: {shown}");
    }
}

#[test]
fn a_resume_is_recorded_with_who_asked() {
    let dir = scratch("history-resume");
    let file = write(
        &dir,
        "r.runbook",
        "runbook r {\n  wait pause {\n    duration 2s\n  }\n}\n",
    );
    let state = dir.join("state");
    let run = spawn(&state, &["run", path(&file)]);
    wait_for(&state, 1, |_, steps| {
        steps.iter().any(|(n, s)| n == "pause" && s == "running")
    });
    interrupt(&run);
    let out = run.wait_with_output().expect("stops");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(100));
    let resumed = rb(&state, &["resume", "1"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    let text = stdout(&rb(&state, &["history", "1"]));
    assert!(
        text.contains(&format!("  resumed by {}\n", account())),
        "{text}"
    );
}

/// The account of this process's user, as runbook names it.
fn account() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_run_exported_and_imported_elsewhere_reads_the_same_and_is_never_driven_there() {
    let dir = scratch("history-export");
    let file = write(
        &dir,
        "e.runbook",
        "runbook e {\n  param token: secret\n  run say {\n    shell \"echo saying with $T\"\n    env \"T\" \"${token}\"\n  }\n  approve gate after say {\n    prompt \"go?\"\n  }\n}\n",
    );
    let state = dir.join("state");
    let mut run = spawn(
        &state,
        &["run", path(&file), "-p", &format!("token={SECRET}")],
    );
    wait_for(&state, 1, |s, _| s == "waiting for approval");
    // Exported while its process holds the store: asked of that process.
    let exported = dir.join("run-1.json");
    let out = rb(&state, &["export", "1", "--output", path(&exported)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let body = std::fs::read_to_string(&exported).expect("written");
    assert!(!body.contains(SECRET), "no secret in an export");
    assert!(body.contains("saying with ***"), "what it printed: {body}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&exported)
        .expect("there")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = rb(&state, &["export", "1", "--output", path(&exported)]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("it is there already"),
        "{}",
        stderr(&again)
    );
    interrupt(&run);
    let _ = run.wait();

    // Imported elsewhere, twice: each a new run, read as the original.
    let review = dir.join("review");
    for expected in ["1", "2"] {
        let out = rb(&review, &["import", path(&exported)]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            stdout(&out).starts_with("imported run 1 ("),
            "{}",
            stdout(&out)
        );
        assert!(stdout(&out).contains(&format!("as run {expected}, a copy for review")));
    }
    let shown = stdout(&rb(&review, &["status", "2"]));
    assert!(shown.contains("not finished (an imported copy)"), "{shown}");
    assert!(
        shown.contains("a copy imported for review, from run 1 of "),
        "{shown}"
    );
    let logs = stdout(&rb(&review, &["logs", "2", "say"]));
    assert!(logs.contains("saying with ***"), "{logs}");
    let history = stdout(&rb(&review, &["history", "2"]));
    assert!(history.contains("`say` succeeded"), "{history}");
    assert!(
        history.contains("imported for review by root, from run 1 of"),
        "{history}"
    );
    // Looked at, never driven or answered here.
    let resumed = rb(&review, &["resume", "2"]);
    assert_eq!(resumed.status.code(), Some(1));
    assert!(
        stderr(&resumed).contains("run 2 is a copy imported for review"),
        "{}",
        stderr(&resumed)
    );
    let approved = rb(&review, &["approve", "2", "gate"]);
    assert_eq!(approved.status.code(), Some(1));
    assert!(
        stderr(&approved).contains("this run is a copy imported for review"),
        "{}",
        stderr(&approved)
    );
    // Not an export: one sentence, nothing written.
    let bad = write(&dir, "bad.json", "{\"format\": \"runbook-export/9\"}");
    let refused = rb(&review, &["import", path(&bad)]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        stderr(&refused),
        format!("error: {} is a `runbook-export/9` document; this runbook imports `runbook-export/1` (is it from a newer runbook?)\n", bad.display())
    );
    assert_eq!(stdout(&rb(&review, &["status"])).lines().count(), 2);
}
