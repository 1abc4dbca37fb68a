//! What only the real deployment controller does: `minReadySeconds`, a
//! paused deployment, history pruned before an undo, an undo among several
//! old ReplicaSets, a deployment deleted
//! in the middle of its rollout, and its namespace deleted.

use super::{complete, hash_of, image_of, report, runbook_file, RealCluster};
use crate::common::step_states;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deploy_file(
    test: &str,
    ns: &str,
    name: &str,
    image: &str,
    more: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    runbook_file(
        test,
        &format!(
            "runbook controller {{\n  namespace \"{ns}\"\n\n  deploy ship {{\n    deployment \"{name}\"\n    image \"{image}\"\n    timeout 2m\n  }}\n{more}}}\n"
        ),
    )
}

#[test]
fn a_rollout_is_complete_only_once_new_pods_were_ready_for_min_ready_seconds() {
    let Some(mut k8s) = RealCluster::here("real_min_ready") else {
        return;
    };
    let ns = k8s.namespace("min-ready");
    k8s.deployment(
        &ns,
        "api",
        2,
        "registry.invalid/api:v1",
        json!({"spec": {"minReadySeconds": 3}}),
    );
    let (dir, file) = deploy_file("min-ready", &ns, "api", "registry.invalid/api:v2", "");
    let out = k8s.runbook(&dir.join("state"), &["run", file.to_str().unwrap()]);
    // Read at once: had the step ended before the controller counted the
    // new pods available (3 s after they were Ready), this would show it.
    let d = k8s.get(&ns, "api");
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    assert_eq!(d["status"]["availableReplicas"], 2, "{d}");
    assert_eq!(d["status"]["updatedReplicas"], 2, "{d}");
    assert!(complete(&d), "{d}");
}

#[test]
fn a_paused_deployment_fails_the_deploy_and_is_not_rolled() {
    let Some(mut k8s) = RealCluster::here("real_paused") else {
        return;
    };
    let ns = k8s.namespace("paused");
    k8s.deployment(&ns, "api", 1, "registry.invalid/api:v1", json!({}));
    k8s.patch(&ns, "api", json!({"spec": {"paused": true}}));
    let (dir, file) = deploy_file(
        "paused",
        &ns,
        "api",
        "registry.invalid/api:v2",
        "\n  rollback-if revert when ship.failed {\n    undo ship\n  }\n",
    );
    let out = k8s.runbook(&dir.join("state"), &["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", report(&out));
    let text = report(&out);
    assert!(
        text.contains("deployment api is paused; resume it (kubectl rollout resume) or undo"),
        "{text}"
    );
    assert!(
        text.contains("deployment api is paused, so runbook will not put its template back"),
        "{text}"
    );
    // The controller makes no new ReplicaSet for a paused deployment.
    assert_eq!(k8s.replica_sets(&ns, "api").len(), 1);
}

#[test]
fn undo_puts_the_template_back_after_the_controller_pruned_its_replica_set() {
    let Some(mut k8s) = RealCluster::here("real_pruned") else {
        return;
    };
    let ns = k8s.namespace("pruned");
    let before = k8s.deployment(
        &ns,
        "api",
        2,
        "registry.invalid/api:v1",
        json!({"spec": {"revisionHistoryLimit": 0}}),
    );
    let first = k8s.replica_sets(&ns, "api");
    let (dir, file) = deploy_file(
        "pruned",
        &ns,
        "api",
        "registry.invalid/api:v2",
        "\n  deploy again after ship {\n    deployment \"api\"\n    image \"registry.invalid/api:v3\"\n    timeout 2m\n  }\n\n  wait pruned after again {\n    duration 2s\n  }\n\n  undo back after pruned {\n    deploy ship\n  }\n",
    );
    // The controller prunes old ReplicaSets in the sync that sees a
    // rollout complete; two seconds later, before the undo, only v3's is
    // left, and v1's template has no ReplicaSet to go back to.
    let out = k8s.runbook(&dir.join("state"), &["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    let after = k8s.get(&ns, "api");
    assert!(complete(&after), "{after}");
    assert_eq!(after["spec"]["template"], before["spec"]["template"]);
    assert_eq!(image_of(&after), "registry.invalid/api:v1");
    let sets = k8s.replica_sets(&ns, "api");
    assert_eq!(
        sets.len(),
        1,
        "history 0 keeps only the current one: {sets:#?}"
    );
    assert_eq!(
        sets[0].hash, first[0].hash,
        "the same template, the same hash"
    );
    assert_eq!(sets[0].revision, 4);
}

#[test]
fn undo_among_several_old_replica_sets_brings_back_the_one_it_replaced() {
    let Some(mut k8s) = RealCluster::here("real_several") else {
        return;
    };
    let ns = k8s.namespace("several");
    k8s.deployment_through(
        &ns,
        "api",
        &[
            "registry.invalid/api:v1",
            "registry.invalid/api:v2",
            "registry.invalid/api:v3",
        ],
    );
    let before = k8s.get(&ns, "api");
    let old = k8s.replica_sets(&ns, "api");
    assert_eq!(old.len(), 3, "{old:#?}");
    let (dir, file) = deploy_file(
        "several",
        &ns,
        "api",
        "registry.invalid/api:v4",
        "\n  undo back after ship {\n    deploy ship\n  }\n",
    );
    let out = k8s.runbook(&dir.join("state"), &["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    let after = k8s.get(&ns, "api");
    assert!(complete(&after), "{after}");
    assert_eq!(after["spec"]["template"], before["spec"]["template"]);
    // Not "the previous revision" picked from the history, but the
    // template the deploy replaced: v3's ReplicaSet, the same one
    // (same hash), now revision 5; v1's and v2's are left as they were.
    let sets: Vec<(u32, String, i64)> = k8s
        .replica_sets(&ns, "api")
        .into_iter()
        .map(|s| (s.revision, s.image, s.replicas))
        .collect();
    assert_eq!(
        sets,
        [
            (1, "registry.invalid/api:v1".to_string(), 0),
            (2, "registry.invalid/api:v2".to_string(), 0),
            (4, "registry.invalid/api:v4".to_string(), 0),
            (5, "registry.invalid/api:v3".to_string(), 2),
        ]
    );
    assert_eq!(
        hash_of(&old, "registry.invalid/api:v3"),
        hash_of(&k8s.replica_sets(&ns, "api"), "registry.invalid/api:v3")
    );
}

/// Starts a deploy of an image that never becomes Ready and returns once
/// the deployment holds it, with the process still waiting for it.
fn hanging_deploy(
    k8s: &RealCluster,
    test: &str,
    ns: &str,
) -> (std::path::PathBuf, std::process::Child) {
    k8s.deployment(ns, "web", 1, "registry.invalid/web:v1", json!({}));
    let (dir, file) = deploy_file(test, ns, "web", "registry.invalid/web:never-ready", "");
    let state = dir.join("state");
    let child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .env("RUNBOOK_ALLOW_AS", "1")
        .arg("--state")
        .arg(&state)
        .arg("run")
        .arg(&file)
        .env("KUBECONFIG", &k8s.kubeconfig)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    k8s.wait("the deploy patched the image", || {
        image_of(&k8s.get(ns, "web")) == "registry.invalid/web:never-ready"
    });
    // What `status` shows of a live run may lag a moment behind.
    k8s.wait("the deploy shown running", || {
        step_states(&state).contains(&("ship".to_string(), "running".to_string()))
    });
    (state, child)
}

fn ended(child: std::process::Child) -> std::process::Output {
    let began = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().expect("waits").is_some() {
            return child.wait_with_output().expect("output");
        }
        assert!(began.elapsed() < Duration::from_secs(60), "it never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_deployment_deleted_mid_rollout_ends_the_wait_in_one_sentence() {
    let Some(mut k8s) = RealCluster::here("real_deleted") else {
        return;
    };
    let ns = k8s.namespace("deleted");
    let (_state, child) = hanging_deploy(&k8s, "deleted", &ns);
    k8s.block_on(
        k8s.deployments(&ns)
            .delete("web", &DeleteParams::foreground()),
    )
    .expect("deletes");
    let out = ended(child);
    assert_eq!(out.status.code(), Some(1), "{}", report(&out));
    assert!(
        report(&out).contains("deployment web was deleted while its rollout was watched"),
        "{}",
        report(&out)
    );
}

#[test]
fn a_namespace_deleted_mid_rollout_ends_the_wait_in_one_sentence() {
    let Some(mut k8s) = RealCluster::here("real_ns_deleted") else {
        return;
    };
    let ns = k8s.namespace("ns-deleted");
    let (_state, child) = hanging_deploy(&k8s, "ns-deleted", &ns);
    let namespaces: Api<Namespace> = Api::all(k8s.client());
    k8s.block_on(namespaces.delete(&ns, &DeleteParams::background()))
        .expect("deletes the namespace");
    let out = ended(child);
    assert_eq!(out.status.code(), Some(1), "{}", report(&out));
    assert!(
        report(&out).contains("deployment web was deleted while its rollout was watched"),
        "{}",
        report(&out)
    );
}
