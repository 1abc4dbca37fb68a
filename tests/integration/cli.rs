//! The commands, driven through the real binary.

mod operator_output;

use crate::common::{runbook, scratch, stderr, stdout, write};

const DEPLOY: &str = "workflows/rolling_deploy.runbook";

#[test]
fn check_is_clean_on_the_workflows() {
    let out = runbook(&["check", DEPLOY, "workflows/disaster_recovery.runbook"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2 files checked, no problems\n");
}

#[test]
fn check_exits_2_with_every_diagnostic() {
    let dir = scratch("check-diagnostics");
    let file = write(
        &dir,
        "bad.runbook",
        "runbook bad {\n  deplyo a {}\n  wait b after nope { duration 1s }\n}\n",
    );
    let out = runbook(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("RB002") && err.contains("RB004"), "{err}");
    assert!(err.contains("bad.runbook: 2 errors"), "{err}");
}

#[test]
fn check_json_lists_diagnostics_with_positions() {
    let dir = scratch("check-json");
    let file = write(
        &dir,
        "bad.runbook",
        "runbook bad {\n  wait w { duraton 1s }\n}\n",
    );
    let out = runbook(&["check", "--format", "json", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let first = &json[0];
    assert_eq!(first["code"], "RB006");
    assert_eq!(first["line"], 2);
    assert_eq!(first["column"], 12);
    assert_eq!(first["help"], "did you mean `duration`?");
}

#[test]
fn unreadable_inputs_get_one_plain_sentence_and_exit_1() {
    let dir = scratch("bad-inputs");
    let non_utf8 = write(&dir, "latin1.runbook", b"runbook r { about \"caf\xe9\" }\n");
    let huge = dir.join("huge.runbook");
    let mut big = String::from("runbook huge {\n");
    while big.len() < 50 * 1024 * 1024 {
        big.push_str("  # padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&huge, big).unwrap();
    let cases = [
        (dir.join("missing.runbook"), "no such file"),
        (dir.clone(), "it is a directory"),
        (non_utf8, "it is not UTF-8 text (invalid byte at offset 22)"),
        (huge, "a runbook is limited to 2 MB"),
    ];
    for (path, expected) in cases {
        let out = runbook(&["check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "one sentence: {err}");
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn empty_and_garbage_files_get_diagnostics() {
    let dir = scratch("garbage");
    for (name, text) in [
        ("empty", ""),
        ("comment", "# nothing\n"),
        ("junk", "{{{ ]]] \""),
    ] {
        let file = dir.join(format!("{name}.runbook"));
        std::fs::write(&file, text).unwrap();
        let out = runbook(&["check", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains("RB001"), "{name}");
    }
}

#[test]
fn fmt_rewrites_and_check_reports() {
    let dir = scratch("fmt");
    let file = write(
        &dir,
        "messy.runbook",
        "runbook messy {   # keep me\nwait w {duration 1s; timeout 5s}\n}",
    );
    let path = file.to_str().unwrap();
    let out = runbook(&["fmt", "--check", path]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), format!("{path} is not formatted\n"));
    let out = runbook(&["fmt", path]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "runbook messy {  # keep me\n  wait w {\n    duration 1s\n    timeout 5s\n  }\n}\n"
    );
    let out = runbook(&["fmt", "--check", path]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn graph_text_shows_stages_of_parallel_steps() {
    let dir = scratch("graph");
    let file = write(&dir, "fan.runbook", "runbook fan {\n  wait a { duration 1s }\n  wait b after a { duration 1s }\n  wait c after a { duration 1s }\n  wait d after b, c { duration 1s }\n}\n");
    let path = file.to_str().unwrap();
    let out = runbook(&["graph", path, "--format", "text"]);
    assert_eq!(
        stdout(&out),
        "fan: 4 steps in 3 stages\nstage 1:\n  wait a\nstage 2:\n  wait b  (after a)\n  wait c  (after a)\nstage 3:\n  wait d  (after b, c)\n"
    );
    let dot = stdout(&runbook(&["graph", path, "--format", "dot"]));
    assert!(
        dot.starts_with("digraph \"fan\" {") && dot.contains("\"a\" -> \"b\";"),
        "{dot}"
    );
    let mermaid = stdout(&runbook(&["graph", path, "--format", "mermaid"]));
    assert!(
        mermaid.starts_with("flowchart TD\n") && mermaid.contains("s_b --> s_d"),
        "{mermaid}"
    );
}

#[test]
fn plan_resolves_parameters_and_masks_secrets() {
    let dir = scratch("plan");
    let file = write(&dir, "p.runbook", "runbook p {\n  param service: string\n  param db: secret = env(\"RB_TEST_PLAN_DB\")\n  deploy d {\n    deployment service\n    image \"reg/${service}:1\"\n  }\n  sql q after d {\n    database db\n    query \"SELECT 1\"\n  }\n  rollback-if back when q.failed {\n    undo d\n  }\n}\n");
    let path = file.to_str().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["plan", path, "-p", "service=api"])
        .env("RB_TEST_PLAN_DB", "postgres://neo:hunter2@db/neo")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(text.contains("image \"reg/api:1\""), "{text}");
    assert!(
        text.contains("db      = ***  (secret, from $RB_TEST_PLAN_DB)"),
        "{text}"
    );
    assert!(text.contains("database ***"), "{text}");
    assert!(!text.contains("hunter2"), "a secret leaked: {text}");
    assert!(text.contains("back undoes d when q.failed"), "{text}");

    let out = runbook(&["plan", path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out)
        .contains("the parameter `service` has no default; pass it with -p service=VALUE"));
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in ["check", "fmt", "graph", "plan"] {
        let out = runbook(&[cmd, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        assert!(
            stdout(&out).contains("Example:"),
            "{cmd} --help has no example"
        );
    }
}

#[test]
fn a_file_with_a_flood_of_mistakes_shows_the_first_hundred() {
    let dir = scratch("flood");
    let file = write(
        &dir,
        "flood.runbook",
        format!("runbook flood {{\n{}}}\n", "  about a\n".repeat(20_000)),
    );
    let out = runbook(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.matches(" × ").count(), 100, "rendered");
    assert!(
        err.contains("59899 more diagnostics not shown"),
        "{}",
        &err[err.len() - 300..]
    );
    let json = runbook(&["check", "--format", "json", file.to_str().unwrap()]);
    let all: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    assert_eq!(all.as_array().map(Vec::len), Some(59_999));
}

/// Brackets nested `levels` deep, each level joining `ops` operators.
fn nested_expression(levels: usize, ops: usize, left: bool) -> String {
    let mut inner = "true".to_string();
    for _ in 0..levels {
        let mut parts = vec!["true".to_string(); ops];
        if left {
            parts.insert(0, inner);
        } else {
            parts.push(inner);
        }
        inner = format!("({})", parts.join(" and "));
    }
    inner
}

#[test]
fn the_deepest_expressions_allowed_do_not_overflow_the_stack() {
    let dir = scratch("deep");
    let at_limit = write(&dir, "at_limit.runbook", format!(
            "runbook r {{\n  let x = {}\n  let y = {}true\n  wait w when {} {{ duration 1s }}\n}}\n",
            nested_expression(30, 32, true),
            "not ".repeat(32),
            nested_expression(29, 32, false)
        ));
    let path = at_limit.to_str().unwrap();
    for args in [
        vec!["check", path],
        vec!["fmt", "--check", path],
        vec!["plan", path],
        vec!["graph", path],
    ] {
        let out = runbook(&args);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let over = [
        (
            "nesting",
            format!(
                "runbook r {{\n  let x = {}\n}}\n",
                nested_expression(40, 1, true)
            ),
            "nested more than 32",
        ),
        (
            "chain",
            format!(
                "runbook r {{\n  let x = {}\n}}\n",
                vec!["true"; 10_000].join(" and ")
            ),
            "more than 32 operators",
        ),
        (
            "nots",
            format!(
                "runbook r {{\n  let x = {}true\n}}\n",
                "not ".repeat(10_000)
            ),
            "more than 32 operators",
        ),
    ];
    for (name, text, expected) in over {
        let file = dir.join(format!("{name}.runbook"));
        std::fs::write(&file, text).unwrap();
        let out = runbook(&["check", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(stderr(&out).contains(expected), "{name}: {}", stderr(&out));
    }
}

#[test]
fn usage_mistakes_exit_1_not_2() {
    for args in [
        vec!["check"],
        vec!["check", "--bogus", "x.runbook"],
        vec!["frobnicate"],
        // Unbounded work is refused before any is done.
        vec!["schedule", "workflows", "--count", "100000000"],
        vec!["schedule", "workflows", "--count", "0"],
    ] {
        let out = runbook(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
    assert_eq!(runbook(&["--help"]).status.code(), Some(0));
}

#[test]
fn fmt_exit_status_does_not_depend_on_file_order() {
    let dir = scratch("fmt-order");
    let broken = write(&dir, "broken.runbook", "runbook b {\n  wait w {\n");
    let missing = dir.join("missing.runbook");
    let (b, m) = (broken.to_str().unwrap(), missing.to_str().unwrap());
    assert_eq!(runbook(&["fmt", "--check", b, m]).status.code(), Some(1));
    assert_eq!(runbook(&["fmt", "--check", m, b]).status.code(), Some(1));
    assert_eq!(runbook(&["fmt", "--check", b]).status.code(), Some(2));
}

#[test]
fn plan_warns_about_unset_environment_variables() {
    let dir = scratch("plan-env");
    let file = write(&dir, "e.runbook", "runbook e {\n  param ns: string = env(\"RB_TEST_UNSET_NS\")\n  restart r {\n    deployment \"api\"\n    namespace ns\n  }\n}\n");
    let out = runbook(&["plan", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("warning: the environment variable RB_TEST_UNSET_NS is not set"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plan_never_shows_what_the_environment_holds() {
    let dir = scratch("plan-env-values");
    let file = write(&dir, "e.runbook", "runbook e {\n  param token: string = env(\"RB_TEST_TOKEN\")\n  verify v {\n    http get \"https://x\"\n    header \"Authorization\" \"Bearer ${env(\"RB_TEST_TOKEN\")}\"\n    expect status == 200\n  }\n}\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["plan", file.to_str().unwrap()])
        .env("RB_TEST_TOKEN", "s3cr3t-token")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!text.contains("s3cr3t"), "the environment leaked: {text}");
    assert!(text.contains("header \"Authorization\" ***"), "{text}");
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let dir = scratch("bom");
    let file = write(
        &dir,
        "bom.runbook",
        b"\xef\xbb\xbfrunbook r {\n  wait w { duration 1s }\n}\n",
    );
    let out = runbook(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn strings_that_hide_code_from_a_naive_scan_do_not_overflow_the_stack() {
    let dir = scratch("scan-bypass");
    let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    let cases = [
        format!("runbook r {{\n  about \"\"\"1\"\n  let x = {deep}\n}}\n"),
        format!("runbook r {{\n  let s = \"\\\n  let x = {deep}\n}}\n"),
        format!("runbook r {{\n  let s = 1 + \"\"\"\n  let x = {deep}\n\"\"\"\n}}\n"),
    ];
    for (i, text) in cases.iter().enumerate() {
        let file = dir.join(format!("case{i}.runbook"));
        std::fs::write(&file, text).unwrap();
        let out = runbook(&["check", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "case {i}: {}", stderr(&out));
    }
}

#[test]
fn fmt_keeps_a_symbolic_link_a_link() {
    let dir = scratch("fmt-symlink");
    let real = write(
        &dir,
        "real.runbook",
        "runbook r {\nwait w {duration 1s}\n}\n",
    );
    let link = dir.join("link.runbook");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = runbook(&["fmt", link.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&real)
        .unwrap()
        .contains("  wait w {\n    duration 1s\n  }"));
}

#[test]
fn plan_prints_keywords_as_written_even_when_a_parameter_has_their_name() {
    let dir = scratch("plan-keywords");
    let file = write(&dir, "k.runbook", "runbook k {\n  param get: string = \"oops\"\n  param to: int = 7\n  verify v {\n    http get \"https://x\"\n  }\n  deploy d {\n    deployment \"web\"\n    image \"x\"\n  }\n  rollback-if back when d.failed {\n    scale \"web\" to 3\n  }\n}\n");
    let text = stdout(&runbook(&["plan", file.to_str().unwrap()]));
    assert!(text.contains("http get \"https://x\""), "{text}");
    assert!(text.contains("scale \"web\" to 3"), "{text}");
}
