//! The seed's check workflows, from `workflows/`, run end to end by the
//! real binary against stand-ins on loopback.

use crate::standin;

use crate::common::{root, scratch, stderr, stdout};
use standin::Standin;
use std::path::Path;
use std::process::{Command, Output};

fn run(state: &Path, file: &str, params: &[String], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
    c.arg("--state")
        .arg(state)
        .arg("run")
        .arg(root().join(file));
    for p in params {
        c.arg("-p").arg(p);
    }
    c.current_dir(root())
        .env("NO_COLOR", "1")
        .envs(env.iter().copied());
    c.output().expect("the runbook binary starts")
}

fn logs(state: &Path, step: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(state)
        .args(["logs", "1", step])
        .output()
        .expect("the runbook binary starts");
    stdout(&out)
}

const ENDPOINTS: [&str; 9] = [
    "/health",
    "/health/db",
    "/health/cache",
    "/api/v1/keymanagement/health",
    "/api/v1/storage/health",
    "/api/v1/configuration/health",
    "/api/v1/notification/health",
    "/api/v1/crosschain/health",
    "/api/v1/oracle/health",
];

#[test]
fn health_checks_pass_when_every_endpoint_answers_200() {
    let services = Standin::start(|_, _| (200, r#"{"status":"Healthy"}"#.into()));
    let state = scratch("seed-health-ok");
    let out = run(
        &state,
        "workflows/health_checks.runbook",
        &[format!("base_url={}", services.url)],
        &[("ALERT_WEBHOOK_URL", &format!("{}/hook", services.url))],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    for path in ENDPOINTS {
        assert_eq!(services.count(path), 1, "{path} asked once");
    }
    assert_eq!(services.count("/hook"), 0, "no alert when all is well");
    assert!(logs(&state, "cache").contains("answered 200"));
}

#[test]
fn a_failing_endpoint_is_retried_and_recovers() {
    // The cache answers 503 once, then 200: the step's `retry 3 every 10s`
    // takes it through, and the run succeeds without an alert.
    let services = Standin::start(|seen, before| {
        if seen.target == "/health/cache" && before == 0 {
            (503, r#"{"status":"Unhealthy"}"#.into())
        } else {
            (200, r#"{"status":"Healthy"}"#.into())
        }
    });
    let state = scratch("seed-health-retry");
    let out = run(
        &state,
        "workflows/health_checks.runbook",
        &[format!("base_url={}", services.url)],
        &[("ALERT_WEBHOOK_URL", &format!("{}/hook", services.url))],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(services.count("/health/cache"), 2);
    assert_eq!(services.count("/hook"), 0);
    let text = stdout(&out);
    assert!(
        text.contains("expected status == 200, but status was 503"),
        "{text}"
    );
}
