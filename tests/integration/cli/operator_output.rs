//! What an operator reads, pinned whole: `run`'s plain lines, `status` and
//! `status --json`, `plan`, `graph` in every format, `schedule`, and the
//! sentences a failed step ends with, shown under the line they concern.
//! Times, durations, epoch milliseconds and the state directory are
//! replaced by placeholders (insta filters); everything else is compared
//! byte for byte.

use crate::common::{scratch, stderr, write};
use std::path::Path;
use std::process::Output;

/// One step of each way to fail, and steps that succeed, at concurrency 1
/// so that the order of the lines is the plan's.
const STEPS: &str = r#"runbook snap {
  about "What an operator reads."
  param release: string = "v1"
  concurrency 1

  run prepare {
    command "echo"
    args ["preparing ${release}"]
  }

  run check after prepare {
    shell "echo checked"
  }

  run warn after prepare {
    shell "echo 'a warning' >&2"
  }

  run missing after prepare {
    command "/nonexistent/program"
  }

  run fails after check {
    shell "echo about to fail; exit 3"
  }

  run slow after check {
    command "sleep"
    args ["5"]
    timeout 1s
  }

  verify degraded after check {
    command "echo"
    args ["degraded"]
    expect stdout contains "ok"
  }

  run never after fails {
    command "true"
  }
}
"#;

fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        // A clock time at the start of a line.
        (r"(?m)^\d\d:\d\d:\d\d ", "[time] "),
        // How long something took: `in 31ms`, `in 1s2ms`, `in 2m5s`.
        (r"\bin (\d+(ms|h|m|s))+\b", "in [duration]"),
        // Epoch milliseconds in JSON.
        (r#"("(started_at|since|at|finished_at)": )\d+"#, "$1[ms]"),
        // Who started the run: whoever runs the tests.
        (r#""started_by": "[^"]*""#, r#""started_by": "[user]""#),
    ]
}

/// The binary in `dir`, with the state directory `st` there.
fn rb(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["--state", "st"])
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUNBOOK_STATE")
        .output()
        .expect("the runbook binary starts")
}

/// Standard output, then standard error under a marker, then the exit code.
fn shown(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = stderr(out);
    if !err.is_empty() {
        text.push_str("--- stderr\n");
        text.push_str(&err);
    }
    text.push_str(&format!("--- exit {:?}\n", out.status.code()));
    text
}

fn pinned(name: &str, text: &str) {
    pinned_with(name, text, &[]);
}

/// `pinned`, with `more` filters for this output alone.
fn pinned_with(name: &str, text: &str, more: &[(&'static str, &'static str)]) {
    let mut filters = filters();
    filters.extend_from_slice(more);
    insta::with_settings!({ filters => filters, prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn a_run_its_status_and_its_failures_read_the_same_every_time() {
    let dir = scratch("operator-output-run");
    write(&dir, "snap.runbook", STEPS);
    pinned("run_plain", &shown(&rb(&dir, &["run", "snap.runbook"])));
    pinned("status", &shown(&rb(&dir, &["status", "1"])));
    pinned_with(
        "status_list",
        &shown(&rb(&dir, &["status"])),
        // When the run started (the schedule's dates, elsewhere, are
        // fixed), how long it took, and who started it (whoever runs the
        // tests).
        &[(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC +\S+  \S+ +",
            "[date]  [took]  [user]    ",
        )],
    );
    pinned("status_json", &shown(&rb(&dir, &["status", "1", "--json"])));
    pinned("logs", &shown(&rb(&dir, &["logs", "1"])));
    // In JSON, each failure's kind and place follow its event.
    let json = rb(&dir, &["run", "--json", "snap.runbook"]);
    let failures: Vec<&str> = std::str::from_utf8(&json.stdout)
        .expect("utf-8")
        .lines()
        .filter(|line| line.starts_with(r#"{"failure""#))
        .collect();
    pinned("run_json_failures", &failures.join("\n"));
}

#[test]
fn plan_and_graph_in_every_format_read_the_same_every_time() {
    let dir = scratch("operator-output-plan");
    write(&dir, "snap.runbook", STEPS);
    pinned(
        "plan",
        &shown(&rb(&dir, &["plan", "snap.runbook", "-p", "release=v2"])),
    );
    for format in ["text", "dot", "mermaid"] {
        pinned(
            &format!("graph_{format}"),
            &shown(&rb(&dir, &["graph", "snap.runbook", "--format", format])),
        );
    }
}

#[test]
fn schedule_reads_the_same_every_time() {
    let dir = scratch("operator-output-schedule");
    std::fs::create_dir_all(dir.join("scheduled")).expect("mkdir");
    write(
        &dir.join("scheduled"),
        "nightly.runbook",
        "runbook nightly {\n  schedule \"0 2 * * *\" timezone \"Europe/Amsterdam\" window 1h\n  run mark {\n    command \"true\"\n  }\n}\n",
    );
    pinned(
        "schedule",
        &shown(&rb(
            &dir,
            &[
                "schedule",
                "scheduled",
                "--count",
                "3",
                "--from",
                "2027-03-27T00:00:00Z",
            ],
        )),
    );
}
