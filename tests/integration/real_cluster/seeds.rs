//! The seed's rolling deployment (`workflows/rolling_deploy.runbook`)
//! against the real control plane: healthy; an error rate that rises, so
//! production goes back to exactly the template it had; an image that never
//! becomes Ready, failing at the real progress deadline; and the process
//! killed mid-rollout, resumed with `--rerun production`.

use super::{complete, image_of, report, RealCluster};
use crate::common::{root, scratch, step_states};
use crate::standin::{prometheus_value, Standin};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Health answers 200; Prometheus answers the ratios of `ratios` in turn
/// (the last one from then on); the webhook takes anything.
fn services(ratios: &'static [f64]) -> Standin {
    Standin::start(move |seen, before| {
        if seen.target.starts_with("/api/v1/query") {
            (200, prometheus_value(ratios[before.min(ratios.len() - 1)]))
        } else {
            (200, r#"{"status":"Healthy"}"#.into())
        }
    })
}

struct Seed {
    k8s: RealCluster,
    staging: String,
    production: String,
}

/// Staging and production namespaces, each with deployment `api` of
/// `neo-service-layer/api:v1`, with `spec` merged over the plain one.
fn seed(test: &str, spec: Value) -> Option<Seed> {
    let mut k8s = RealCluster::here(test)?;
    let staging = k8s.namespace("staging");
    let production = k8s.namespace("production");
    for ns in [&staging, &production] {
        k8s.deployment(ns, "api", 3, "neo-service-layer/api:v1", spec.clone());
    }
    Some(Seed {
        k8s,
        staging,
        production,
    })
}

impl Seed {
    fn command(&self, state: &Path, tag: &str, services: &Standin) -> Command {
        let url = &services.url;
        let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
        c.env("RUNBOOK_ALLOW_AS", "1")
            .arg("--state")
            .arg(state)
            .arg("run")
            .arg(root().join("workflows/rolling_deploy.runbook"))
            .args(["-p", "service=api", "-p", &format!("tag={tag}")])
            .args(["-p", &format!("namespace={}", self.production)])
            .args(["-p", &format!("staging_namespace={}", self.staging)])
            .args(["-p", &format!("staging_url={url}/staging")])
            .args(["-p", &format!("production_url={url}/production")])
            .args(["-p", &format!("prometheus_url={url}")])
            .args(["-p", "watch=2s", "-p", "watch_every=500ms"])
            .env("KUBECONFIG", &self.k8s.kubeconfig)
            .env("ALERT_WEBHOOK_URL", format!("{url}/hook"))
            .env("NO_COLOR", "1")
            .current_dir(root());
        c
    }

    fn deploy(&self, state: &Path, tag: &str, services: &Standin) -> Output {
        self.command(state, tag, services)
            .output()
            .expect("the runbook binary starts")
    }
}

fn hooks(services: &Standin) -> Vec<String> {
    services
        .seen()
        .into_iter()
        .filter(|s| s.target == "/hook")
        .map(|s| s.body)
        .collect()
}

#[test]
fn a_healthy_rollout_reaches_production() {
    let Some(seed) = seed("real_seed_healthy", json!({})) else {
        return;
    };
    let services = services(&[0.002]);
    let dir = scratch("real-seed-healthy");
    let out = seed.deploy(&dir.join("state"), "v2", &services);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    for ns in [&seed.staging, &seed.production] {
        let d = seed.k8s.get(ns, "api");
        assert_eq!(image_of(&d), "neo-service-layer/api:v2", "{ns}");
        assert!(complete(&d), "{d}");
        let sets = seed.k8s.replica_sets(ns, "api");
        assert_eq!(sets.last().map(|s| s.revision), Some(2), "{sets:#?}");
    }
    let hooks = hooks(&services);
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert!(
        hooks[0].contains(&format!(
            "is at neo-service-layer/api:v2 in {} (revision 2)",
            seed.production
        )),
        "{hooks:?}"
    );
}

#[test]
fn a_rising_error_rate_puts_production_back_on_exactly_its_template() {
    let Some(seed) = seed("real_seed_rollback", json!({})) else {
        return;
    };
    let original = seed.k8s.get(&seed.production, "api");
    let services = services(&[0.002, 0.08]);
    let dir = scratch("real-seed-rollback");
    let out = seed.deploy(&dir.join("state"), "v2", &services);
    assert_eq!(out.status.code(), Some(3), "rolled back: {}", report(&out));
    let after = seed.k8s.get(&seed.production, "api");
    assert_eq!(after["spec"]["template"], original["spec"]["template"]);
    assert!(complete(&after), "{after}");
    let sets = seed.k8s.replica_sets(&seed.production, "api");
    let newest = sets.last().unwrap();
    assert_eq!(
        (newest.revision, newest.image.as_str()),
        (3, "neo-service-layer/api:v1"),
        "the undo made v1's ReplicaSet the newest revision: {sets:#?}"
    );
    assert_eq!(
        image_of(&seed.k8s.get(&seed.staging, "api")),
        "neo-service-layer/api:v2",
        "staging keeps the new image"
    );
    let hooks = hooks(&services);
    assert!(hooks.iter().any(|h| h.contains("was UNDONE")), "{hooks:?}");
}

#[test]
fn an_image_that_never_becomes_ready_stops_at_stagings_progress_deadline() {
    let Some(seed) = seed(
        "real_seed_broken",
        json!({"spec": {"progressDeadlineSeconds": 3}}),
    ) else {
        return;
    };
    let services = services(&[0.002]);
    let dir = scratch("real-seed-broken");
    let out = seed.deploy(&dir.join("state"), "broken", &services);
    assert_eq!(out.status.code(), Some(1), "{}", report(&out));
    assert!(
        report(&out).contains("deployment \"api\" exceeded its progress deadline"),
        "{}",
        report(&out)
    );
    assert_eq!(
        image_of(&seed.k8s.get(&seed.production, "api")),
        "neo-service-layer/api:v1",
        "production was never touched"
    );
}

#[test]
fn killed_mid_rollout_then_rerun_the_undo_still_puts_back_the_original() {
    // Each new pod is Ready only 4 s after it was made: a rollout of three
    // replicas takes long enough to be killed in the middle.
    let Some(seed) = seed(
        "real_seed_killed",
        json!({"spec": {"template": {"metadata": {"annotations": {"fake-kubelet/ready-delay": "4"}}}}}),
    ) else {
        return;
    };
    let original = seed.k8s.get(&seed.production, "api");
    let services = services(&[0.08]);
    let dir = scratch("real-seed-killed");
    let state = dir.join("state");
    let mut child = seed
        .command(&state, "v2", &services)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let began = Instant::now();
    while image_of(&seed.k8s.get(&seed.production, "api")) != "neo-service-layer/api:v2" {
        assert!(
            began.elapsed() < Duration::from_secs(90),
            "production was never patched: {:?}",
            step_states(&state)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(
        !complete(&seed.k8s.get(&seed.production, "api")),
        "killed in the middle of the rollout"
    );

    let resume = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_runbook"))
            .env("RUNBOOK_ALLOW_AS", "1")
            .arg("--state")
            .arg(&state)
            .args(["resume", "1"])
            .args(extra)
            .env("KUBECONFIG", &seed.k8s.kubeconfig)
            .env("ALERT_WEBHOOK_URL", format!("{}/hook", services.url))
            .env("NO_COLOR", "1")
            .current_dir(root())
            .output()
            .expect("the runbook binary starts")
    };
    let asked = resume(&[]);
    assert_ne!(asked.status.code(), Some(0), "{}", report(&asked));
    assert!(report(&asked).contains("production"), "{}", report(&asked));
    let out = resume(&["--rerun", "production"]);
    assert_eq!(out.status.code(), Some(3), "{}", report(&out));
    let after = seed.k8s.get(&seed.production, "api");
    assert_eq!(after["spec"]["template"], original["spec"]["template"]);
    seed.k8s.wait_complete(&seed.production, "api");
}
