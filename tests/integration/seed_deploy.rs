//! The seed's rolling deployment, from `workflows/rolling_deploy.runbook`,
//! run end to end by the real binary against kubesim (a simulated
//! Kubernetes API server: deployments, replica sets, a rollout that moves
//! over simulated time) and stand-ins for the health endpoints, Prometheus
//! and the webhook.

use crate::common;
use crate::standin;

use crate::common::{root, scratch, stderr, stdout};
use kubesim::{Sim, SimConfig};
use standin::{prometheus_value, Standin};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const PRODUCTION: &str = "neo-production";
const STAGING: &str = "neo-staging";

fn cluster() -> kubesim::SimHandle {
    let sim = Sim::start(SimConfig {
        tick: Duration::from_millis(40),
        seconds_per_tick: 5,
        token: Some("kubesim-t0ken".into()),
    });
    for ns in [STAGING, PRODUCTION] {
        sim.add_deployment(ns, "api", 3, &[("api", "neo-service-layer/api:v1")]);
    }
    sim
}

/// Health answers 200; Prometheus answers the ratios of `ratios` in turn
/// (the last one from then on); the webhook takes anything.
fn services(ratios: &'static [f64]) -> Standin {
    Standin::start(move |seen, before| {
        if seen.target.starts_with("/api/v1/query") {
            let value = ratios[before.min(ratios.len() - 1)];
            (200, prometheus_value(value))
        } else {
            (200, r#"{"status":"Healthy"}"#.into())
        }
    })
}

fn deploy(state: &Path, kubeconfig: &Path, services: &Standin) -> Output {
    let url = &services.url;
    Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(state)
        .arg("run")
        .arg(root().join("workflows/rolling_deploy.runbook"))
        .args(["-p", "service=api", "-p", "tag=v2"])
        .args(["-p", &format!("staging_url={url}/staging")])
        .args(["-p", &format!("production_url={url}/production")])
        .args(["-p", &format!("prometheus_url={url}")])
        .args(["-p", "watch=2s", "-p", "watch_every=500ms"])
        .env("KUBECONFIG", kubeconfig)
        .env("ALERT_WEBHOOK_URL", format!("{url}/hook"))
        .env("NO_COLOR", "1")
        .current_dir(root())
        .output()
        .expect("the runbook binary starts")
}

fn image(sim: &kubesim::SimHandle, ns: &str) -> String {
    let template = sim.pod_template(ns, "api").expect("the deployment");
    template["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_healthy_rollout_reaches_production_and_says_so() {
    let sim = cluster();
    let dir = scratch("seed-deploy-healthy");
    let kubeconfig = dir.join("kubeconfig");
    sim.kubeconfig(&kubeconfig, "default")
        .expect("writes the kubeconfig");
    let services = services(&[0.002]);
    let out = deploy(&dir.join("state"), &kubeconfig, &services);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    for ns in [STAGING, PRODUCTION] {
        assert_eq!(image(&sim, ns), "neo-service-layer/api:v2", "{ns}");
        assert_eq!(sim.rollout(ns, "api"), kubesim::Rollout::Complete, "{ns}");
    }
    let text = stdout(&out);
    assert!(text.contains("undo_production skipped"), "{text}");
    assert_eq!(services.count("/hook"), 1, "one notice: deployed");
    let hook = services
        .seen()
        .into_iter()
        .find(|s| s.target == "/hook")
        .expect("a notice");
    assert!(
        hook.body
            .contains("is at neo-service-layer/api:v2 in neo-production (revision 2)"),
        "{}",
        hook.body
    );
    assert!(
        services.count("/api/v1/query") >= 3,
        "the error rate was watched"
    );
}

#[test]
fn a_rising_error_rate_undoes_production_to_exactly_the_template_it_had() {
    let sim = cluster();
    let original = sim.pod_template(PRODUCTION, "api").expect("the deployment");
    let dir = scratch("seed-deploy-rollback");
    let kubeconfig = dir.join("kubeconfig");
    sim.kubeconfig(&kubeconfig, "default")
        .expect("writes the kubeconfig");
    // Healthy at first, then 8% of requests fail.
    let services = services(&[0.002, 0.08]);
    let out = deploy(&dir.join("state"), &kubeconfig, &services);
    assert_eq!(
        out.status.code(),
        Some(3),
        "rolled back: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("error_rate failed"), "{text}");
    assert!(text.contains("undo_production succeeded"), "{text}");
    assert_eq!(
        sim.pod_template(PRODUCTION, "api"),
        Some(original),
        "production is back on exactly the pod template it had before the run"
    );
    assert_eq!(sim.rollout(PRODUCTION, "api"), kubesim::Rollout::Complete);
    assert_eq!(
        image(&sim, STAGING),
        "neo-service-layer/api:v2",
        "staging keeps the new image"
    );
    let notices: Vec<String> = services
        .seen()
        .into_iter()
        .filter(|s| s.target == "/hook")
        .map(|s| s.body)
        .collect();
    assert!(
        notices.iter().any(|n| n.contains("was UNDONE")),
        "{notices:?}"
    );
    assert!(
        !notices
            .iter()
            .any(|n| n.contains("is at neo-service-layer")),
        "{notices:?}"
    );
}

fn wait_until(state: &Path, what: &str, done: impl Fn(&[(String, String)]) -> bool) {
    let started = std::time::Instant::now();
    while !done(&common::step_states(state)) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never saw: {what}"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn is(steps: &[(String, String)], name: &str, state: &str) -> bool {
    steps.iter().any(|(n, s)| n == name && s == state)
}

#[test]
fn killed_mid_rollout_resume_asks_then_the_undo_still_puts_back_the_original() {
    let sim = cluster();
    let original = sim.pod_template(PRODUCTION, "api").expect("the deployment");
    let dir = scratch("seed-deploy-killed");
    let kubeconfig = dir.join("kubeconfig");
    sim.kubeconfig(&kubeconfig, "default")
        .expect("writes the kubeconfig");
    let services = services(&[0.08]);
    let state = dir.join("state");
    let url = services.url.clone();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(&state)
        .arg("run")
        .arg(root().join("workflows/rolling_deploy.runbook"))
        .args(["-p", "service=api", "-p", "tag=v2"])
        .args(["-p", &format!("staging_url={url}/staging")])
        .args(["-p", &format!("production_url={url}/production")])
        .args(["-p", &format!("prometheus_url={url}")])
        .args(["-p", "watch=1s", "-p", "watch_every=500ms"])
        .env("KUBECONFIG", &kubeconfig)
        .env("ALERT_WEBHOOK_URL", format!("{url}/hook"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .current_dir(root())
        .spawn()
        .expect("the runbook binary starts");
    // Staging is rolled out; from now on new pods of v2 never become
    // ready, so production's rollout hangs until the process is killed.
    wait_until(&state, "staging succeeded", |s| {
        is(s, "staging", "succeeded")
    });
    sim.set_never_ready("neo-service-layer/api:v2", true);
    wait_until(&state, "production running", |s| {
        is(s, "production", "running")
    });
    let patched = || image(&sim, PRODUCTION) == "neo-service-layer/api:v2";
    let started = std::time::Instant::now();
    while !patched() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "production was never patched"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    sim.set_never_ready("neo-service-layer/api:v2", false);

    let resume = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_runbook"))
            .arg("--state")
            .arg(&state)
            .args(["resume", "1"])
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            .env("ALERT_WEBHOOK_URL", format!("{url}/hook"))
            .env("NO_COLOR", "1")
            .current_dir(root())
            .output()
            .expect("the runbook binary starts")
    };
    // A deploy changes the cluster: resume does not guess.
    let asked = resume(&[]);
    assert_ne!(asked.status.code(), Some(0));
    assert!(stderr(&asked).contains("production"), "{}", stderr(&asked));
    // Run again, it finishes the rollout; the error rate fails; the undo
    // puts back what was there before the first attempt, not the v2 the
    // killed attempt had already set.
    let out = resume(&["--rerun", "production"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(sim.pod_template(PRODUCTION, "api"), Some(original));
}
