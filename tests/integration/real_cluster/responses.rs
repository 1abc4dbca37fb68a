//! The seed's incident responses that act on Kubernetes, run end to end by
//! the real binary against the real control plane, with the real `kubectl`
//! for their `run` steps: `emergency_rollback` (to the previous revision,
//! and to a chosen one among several old ReplicaSets), `service_wont_start`
//! (evidence, an approval, a restart) and `high_memory` (evidence, an
//! approval, `kubectl set resources`, a watch).
//!
//! The services' health endpoints are cluster DNS names
//! (`http://SERVICE.NAMESPACE.svc.cluster.local/...`), which this machine
//! cannot resolve: runbook reaches them through an HTTP proxy
//! (`http_proxy`, honoured as by curl), the stand-in; the webhook and
//! Prometheus are the stand-in on loopback directly (`NO_PROXY`).

use super::{complete, hash_of, image_of, report, RealCluster};
use crate::common::{approve_when_asked, root, scratch, stdout};
use crate::standin::{prometheus_value, Standin};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Health answers 200 (through the proxy), Prometheus `ratio`, the webhook
/// anything.
fn services(ratio: f64) -> Standin {
    Standin::start(move |seen, _| {
        if seen.target.starts_with("/api/v1/query") {
            (200, prometheus_value(ratio))
        } else {
            (200, r#"{"status":"Healthy"}"#.into())
        }
    })
}

fn runbook(k8s: &RealCluster, state: &Path, services: &Standin) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
    c.arg("--state")
        .arg(state)
        .env("RUNBOOK_ALLOW_AS", "1")
        .env("KUBECONFIG", &k8s.kubeconfig)
        .env("http_proxy", &services.url)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("ALERT_WEBHOOK_URL", format!("{}/hook", services.url))
        .env("NO_COLOR", "1")
        .current_dir(root());
    c
}

fn workflow(name: &str) -> String {
    root()
        .join(format!("workflows/{name}.runbook"))
        .display()
        .to_string()
}

fn said(services: &Standin, target: &str) -> Vec<String> {
    services
        .seen()
        .into_iter()
        .filter(|s| s.target == target)
        .map(|s| s.body)
        .collect()
}

fn logs(k8s: &RealCluster, state: &Path, step: &str) -> String {
    stdout(&k8s.runbook(state, &["logs", "1", step]))
}

/// Runs the seed's emergency_rollback on deployment `api` of `ns`: what
/// it printed, the stand-in, and the run's state directory.
fn emergency_rollback(k8s: &RealCluster, ns: &str, extra: &[&str]) -> (Output, Standin, PathBuf) {
    let services = services(0.001);
    let state = scratch(&format!("real-emergency-{ns}")).join("state");
    let out = runbook(k8s, &state, &services)
        .args(["run", &workflow("emergency_rollback")])
        .args(["-p", "service=api", "-p", &format!("namespace={ns}")])
        .args(extra)
        .output()
        .expect("the runbook binary starts");
    (out, services, state)
}

#[test]
fn emergency_rollback_goes_back_one_revision_with_kubectl_and_checks_health() {
    let Some(mut k8s) = RealCluster::here("real_emergency") else {
        return;
    };
    let ns = k8s.namespace("emergency");
    let first = k8s.deployment_through(
        &ns,
        "api",
        &["registry.invalid/api:v1", "registry.invalid/api:v2"],
    );
    let (out, services, _) = emergency_rollback(&k8s, &ns, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    let after = k8s.get(&ns, "api");
    assert_eq!(after["spec"]["template"], first["spec"]["template"]);
    assert!(complete(&after), "{after}");
    let sets = k8s.replica_sets(&ns, "api");
    let newest = sets.last().expect("replica sets");
    assert_eq!(
        (newest.revision, newest.image.as_str(), newest.replicas),
        (3, "registry.invalid/api:v1", 2),
        "kubectl's undo made v1's ReplicaSet revision 3: {sets:#?}"
    );
    let health = format!("http://api.{ns}.svc.cluster.local/api/v1/api/health");
    assert_eq!(services.count(&health), 1, "{:?}", services.seen());
    let hooks = said(&services, "/hook");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert!(
        hooks[0].contains(&format!("api in {ns} rolled back (to_revision=0")),
        "{hooks:?}"
    );
}

#[test]
fn emergency_rollback_to_a_chosen_revision_among_several_old_replica_sets() {
    let Some(mut k8s) = RealCluster::here("real_emergency_to") else {
        return;
    };
    let ns = k8s.namespace("emergency-to");
    k8s.deployment_through(
        &ns,
        "api",
        &[
            "registry.invalid/api:v1",
            "registry.invalid/api:v2",
            "registry.invalid/api:v3",
        ],
    );
    let before = k8s.replica_sets(&ns, "api");
    assert_eq!(before.len(), 3, "{before:#?}");
    let (out, _, state) = emergency_rollback(&k8s, &ns, &["-p", "to_revision=1"]);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    let history = logs(&k8s, &state, "history");
    assert!(
        history.contains('1') && history.contains('2') && history.contains('3'),
        "the revisions before: {history}"
    );
    assert_eq!(image_of(&k8s.get(&ns, "api")), "registry.invalid/api:v1");
    let after: Vec<(u32, String, i64)> = k8s
        .replica_sets(&ns, "api")
        .into_iter()
        .map(|s| (s.revision, s.image, s.replicas))
        .collect();
    assert_eq!(
        after,
        [
            (2, "registry.invalid/api:v2".to_string(), 0),
            (3, "registry.invalid/api:v3".to_string(), 0),
            (4, "registry.invalid/api:v1".to_string(), 2),
        ],
        "v1's ReplicaSet is the newest revision; the others are kept, scaled to 0"
    );
    assert_eq!(
        hash_of(&before, "registry.invalid/api:v1"),
        hash_of(&k8s.replica_sets(&ns, "api"), "registry.invalid/api:v1"),
        "the same ReplicaSet, not a new one"
    );
}

#[test]
fn service_wont_start_gathers_evidence_then_restarts_after_approval() {
    let Some(mut k8s) = RealCluster::here("real_wont_start") else {
        return;
    };
    let ns = k8s.namespace("wont-start");
    k8s.deployment(&ns, "api", 2, "registry.invalid/api:v1", json!({}));
    let configs: Api<ConfigMap> = Api::namespaced(k8s.client(), &ns);
    let config: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "api-config"}, "data": {"POOL_SIZE": "20"}}),
    )
    .expect("a configmap");
    k8s.block_on(configs.create(&PostParams::default(), &config))
        .expect("creates the configmap");
    let services = services(0.001);
    let dir = scratch("real-wont-start");
    let state = dir.join("state");
    let mut child = runbook(&k8s, &state, &services)
        .args(["run", &workflow("service_wont_start")])
        .args(["-p", "service=api", "-p", &format!("namespace={ns}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the runbook binary starts");
    approve_when_asked(&state, &mut child, "fixed", "alice");
    let out = child.wait_with_output().expect("the run ends");
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));

    // The evidence is kubectl's, from the real server.
    let pods = logs(&k8s, &state, "describe_pods");
    assert!(pods.contains(&ns), "{pods}");
    assert!(pods.contains("fake-node-1"), "{pods}");
    assert!(logs(&k8s, &state, "config").contains("POOL_SIZE"));
    k8s.assert_restarted(&ns, "api");
    let health = format!("http://api.{ns}.svc.cluster.local/api/v1/api/health");
    assert_eq!(services.count(&health), 1, "{:?}", services.seen());
}

#[test]
fn high_memory_raises_the_limit_with_kubectl_and_watches_the_rollout() {
    let Some(mut k8s) = RealCluster::here("real_high_memory") else {
        return;
    };
    let ns = k8s.namespace("high-memory");
    k8s.deployment(
        &ns,
        "api",
        2,
        "registry.invalid/api:v1",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "registry.invalid/api:v1", "resources": {"limits": {"memory": "1Gi"}, "requests": {"memory": "512Mi"}}}]}}}}),
    );
    let services = services(0.42);
    let dir = scratch("real-high-memory");
    let state = dir.join("state");
    let mut child = runbook(&k8s, &state, &services)
        .args(["run", &workflow("high_memory")])
        .args(["-p", "service=api", "-p", &format!("namespace={ns}")])
        .args(["-p", &format!("prometheus_url={}", services.url)])
        .args(["-p", "watch=1s", "-p", "watch_every=300ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the runbook binary starts");
    approve_when_asked(&state, &mut child, "resize", "alice");
    let out = child.wait_with_output().expect("the run ends");
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));

    // This cluster has no metrics-server: `top` says so and the run went on.
    assert!(
        logs(&k8s, &state, "top").contains("Metrics API not available"),
        "{}",
        logs(&k8s, &state, "top")
    );
    let after = k8s.get(&ns, "api");
    let resources = &after["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"]["memory"], "2Gi", "{after}");
    assert_eq!(resources["requests"]["memory"], "1Gi", "{after}");
    assert!(complete(&after), "{after}");
    let sets = k8s.replica_sets(&ns, "api");
    assert_eq!(
        sets.last().map(|s| (s.revision, s.replicas)),
        Some((2, 2)),
        "{sets:#?}"
    );
    let hooks = said(&services, "/hook");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert!(
        hooks[0].contains("now has memory request 1Gi, limit 2Gi"),
        "{hooks:?}"
    );
}
