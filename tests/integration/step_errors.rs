//! Steps that meet a broken world (a refused database, a dump that is not
//! one, a Prometheus answer that is not a number, wrong credentials): each
//! fails with one sentence, no secret in sight, and the run stays intact and
//! resumable.

use crate::standin;

use crate::common::{free_port, postgres_here, root, scratch, stderr, stdout, write};
use standin::Standin;
use std::path::Path;
use std::process::{Command, Output};

fn rb(state: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(state)
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("the runbook binary starts")
}

/// Everything the state directory holds, as text, to look for secrets in.
fn state_text(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                text.push_str(&String::from_utf8_lossy(
                    &std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    text
}

#[test]
fn a_refused_database_fails_the_step_in_one_sentence_and_the_run_can_be_retried() {
    let dir = scratch("errors-db-refused");
    let port = free_port();
    let file = write(
        &dir,
        "refused.runbook",
        "runbook refused {\n  param db: secret = env(\"DB_URL\")\n\n  verify up {\n    sql db \"SELECT 1\"\n    expect value == 1\n  }\n}\n",
    );
    let url = format!("postgres://app:Hunter2pw@127.0.0.1:{port}/app");
    let state = dir.join("state");
    let out = rb(
        &state,
        &["run", file.to_str().expect("utf-8")],
        &[("DB_URL", &url)],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("up failed in")
            && text.contains(&format!(
                "cannot connect to PostgreSQL at 127.0.0.1:{port}/app"
            )),
        "{text}"
    );
    assert!(!text.contains("Hunter2pw"), "{text}");
    assert!(
        !state_text(&state).contains("Hunter2pw"),
        "the password is in the state directory"
    );
    // The run is intact: status reads it, and it can be run again from the step.
    let status = rb(&state, &["status", "1"], &[]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    assert!(stdout(&status).contains("failed"), "{}", stdout(&status));
    let again = rb(&state, &["retry", "1", "--from", "up"], &[("DB_URL", &url)]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("up started (attempt 2)"),
        "{}",
        stdout(&again)
    );
}

#[test]
fn a_file_that_is_not_a_dump_is_refused_before_anything_is_restored() {
    if !postgres_here("a_file_that_is_not_a_dump") {
        return;
    }
    let dir = scratch("errors-not-a-dump");
    let junk = write(&dir, "backup.dump", [0u8, 159, 146, 150, 1, 2, 3]);
    let file = write(
        &dir,
        "restore.runbook",
        "runbook restore_it {\n  param backup: path\n\n  restore database {\n    postgres \"postgres://postgres@127.0.0.1:5432/postgres\"\n    from backup\n  }\n}\n",
    );
    let state = dir.join("state");
    let shown = junk.display().to_string();
    let out = rb(
        &state,
        &[
            "run",
            file.to_str().expect("utf-8"),
            "-p",
            &format!("backup={shown}"),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(&format!("{shown} is not a PostgreSQL dump")),
        "{}",
        stdout(&out)
    );
    let missing = rb(
        &state,
        &[
            "run",
            file.to_str().expect("utf-8"),
            "-p",
            "backup=/no/such/backup.dump",
        ],
        &[],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stdout(&missing).contains("/no/such/backup.dump does not exist"),
        "{}",
        stdout(&missing)
    );
}

#[test]
fn a_prometheus_answer_that_is_not_a_number_fails_the_check() {
    let prometheus = Standin::start(|_, _| (200, standin::prometheus_value(f64::NAN)));
    let dir = scratch("errors-prom-nan");
    let file = write(
        &dir,
        "nan.runbook",
        "runbook nan {\n  param prometheus: string\n\n  verify errors {\n    prometheus \"sum(rate(x[5m]))\"\n    server prometheus\n    expect value < 1%\n  }\n}\n",
    );
    let out = rb(
        &dir.join("state"),
        &[
            "run",
            file.to_str().expect("utf-8"),
            "-p",
            &format!("prometheus={}", prometheus.url),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("the query's value `NaN` is not a number"),
        "{}",
        stdout(&out)
    );
    assert_eq!(prometheus.count("/api/v1/query"), 1);
}

/// One step of each way the world can be broken without a server of its
/// own: what `run` says of each, the sentence and the line it points at,
/// pinned whole. Ports and times are placeholders.
#[test]
fn a_broken_world_reads_the_same_every_time() {
    let site = Standin::start(|seen, _| match seen.target.as_str() {
        "/health" => (503, "{}".into()),
        "/status" => (200, r#"{"status":"degraded"}"#.into()),
        "/hook" => (500, String::new()),
        _ => (200, standin::prometheus_value(f64::NAN)),
    });
    let dir = scratch("errors-broken-world");
    write(&dir, "not-a-cert.pem", "not a certificate\n");
    write(
        &dir,
        "broken.runbook",
        format!(
            r#"runbook broken {{
  param site: string = "{site}"
  param db: secret = env("DB_URL")
  concurrency 1

  verify health {{
    http get "${{site}}/health"
  }}

  verify status {{
    http get "${{site}}/status"
    expect json.status == "ok"
  }}

  verify errors {{
    prometheus "sum(rate(x[5m]))"
    server site
    expect value < 1%
  }}

  verify database {{
    sql db "SELECT 1"
    expect value == 1
  }}

  verify certificate {{
    certificate "not-a-cert.pem"
  }}

  deploy web {{
    deployment "web"
    image "web:2"
  }}

  notify tell {{
    webhook "${{site}}/hook"
    message "done"
  }}
}}
"#,
            site = site.url
        ),
    );
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["--state", "st", "run", "broken.runbook"])
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .env(
            "DB_URL",
            format!("postgres://app:Hunter2pw@127.0.0.1:{port}/app"),
        )
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("RUNBOOK_STATE")
        .output()
        .expect("the runbook binary starts");
    let mut text = stdout(&out);
    text.push_str(&format!("--- exit {:?}\n", out.status.code()));
    assert!(!text.contains("Hunter2pw"), "{text}");
    let filters = vec![
        (r"(?m)^\d\d:\d\d:\d\d ", "[time] "),
        (r"\bin (\d+(ms|h|m|s))+\b", "in [duration]"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
    ];
    insta::with_settings!({ filters => filters }, {
        insta::assert_snapshot!(text);
    });
}
