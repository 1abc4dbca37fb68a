//! Rollouts over real HTTP: set image, status lag, revisions, undo, restart, scale, pruning.

mod common;

use common::*;
use kubesim::{Rollout, Sim, SimConfig};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn set_image_rolls_out_and_undo_reuses_the_old_replica_set() {
    let sim = Sim::start(SimConfig::manual());
    let c = Client::new(sim.url());
    let d = sim.add_deployment(
        "default",
        "web",
        3,
        &[("web", "web:1"), ("proxy", "proxy:1")],
    );
    assert_eq!(revision(&d), "1");
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["status"]["observedGeneration"], 1);
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(
        condition(&d, "Progressing")["reason"],
        "NewReplicaSetAvailable"
    );
    let first = sim.replica_sets("default", "web");
    assert_eq!(first.len(), 1);
    let first_name = first[0]["metadata"]["name"].as_str().unwrap().to_string();
    assert!(first_name.starts_with("web-"));
    assert_eq!(
        first[0]["metadata"]["labels"]["pod-template-hash"],
        first_name.trim_start_matches("web-")
    );
    assert_eq!(
        first[0]["metadata"]["ownerReferences"][0]["uid"],
        d["metadata"]["uid"]
    );

    // kubectl set image: a strategic merge patch, containers merged by name.
    let (status, patched) = c
        .patch(
            &format!("{DEPLOY}/web"),
            STRATEGIC,
            &set_image("web", "web:2"),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["metadata"]["generation"], 2);
    let containers = &patched["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["image"], "web:2");
    assert_eq!(
        containers[1]["image"], "proxy:1",
        "the other container is kept"
    );
    assert_ne!(
        patched["metadata"]["resourceVersion"],
        d["metadata"]["resourceVersion"]
    );
    // Read right after the write: the old status, complete by its own numbers, but
    // observedGeneration lags, which only kubectl's rule notices.
    let (_, read) = c.get(&format!("{DEPLOY}/web")).await;
    assert_eq!(read["status"]["observedGeneration"], 1);
    assert_eq!(read["status"]["updatedReplicas"], 3);
    assert_eq!(read["status"]["availableReplicas"], 3);
    assert_eq!(
        condition(&read, "Progressing")["reason"],
        "NewReplicaSetAvailable",
        "a check of conditions alone would call this rollout done"
    );
    let (status, same) = c.get(&format!("{DEPLOY}/web/status")).await;
    assert_eq!((status, &same["status"]), (200, &read["status"]));
    assert_eq!(
        sim.rollout("default", "web"),
        Rollout::Waiting("no ReplicaSet has the deployment's pod template yet".into()),
        "the simulation's own ReplicaSets say it is not done"
    );

    sim.tick();
    let (_, read) = c.get(&format!("{DEPLOY}/web")).await;
    assert_eq!(read["status"]["observedGeneration"], 2);
    assert_eq!(revision(&read), "2");
    let sets = sim.replica_sets("default", "web");
    assert_eq!(sets.len(), 2);
    assert_eq!(revision(&sets[1]), "2");
    assert_eq!(
        sets[1]["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );
    assert_eq!(
        condition(&read, "Progressing")["reason"],
        "NewReplicaSetCreated"
    );
    assert!(matches!(sim.rollout("default", "web"), Rollout::Waiting(_)));

    sim.wait_rollout_complete("default", "web", WAIT).unwrap();
    let sets = sim.replica_sets("default", "web");
    assert_eq!(sets[0]["metadata"]["name"], first_name.as_str());
    assert_eq!(
        sets[0]["spec"]["replicas"], 0,
        "the old replica set is scaled to zero"
    );
    assert_eq!(sets[1]["spec"]["replicas"], 3);
    assert_eq!(sets[1]["status"]["readyReplicas"], 3);
    let d = sim.deployment("default", "web").unwrap();
    assert_eq!(d["status"]["replicas"], 3);
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert!(d["status"].get("unavailableReplicas").is_none());
    assert_eq!(
        condition(&d, "Progressing")["reason"],
        "NewReplicaSetAvailable"
    );
    assert_eq!(condition(&d, "Available")["status"], "True");

    // kubectl rollout undo: a JSON patch that puts back revision 1's template.
    let (_, listed) = c.get(&format!("{RS}?labelSelector=app%3Dweb")).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let old = items.iter().find(|rs| revision(rs) == "1").unwrap();
    let mut template = old["spec"]["template"].clone();
    template["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("pod-template-hash");
    let undo = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
    let (status, body) = c.patch(&format!("{DEPLOY}/web"), JSON_PATCH, &undo).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["generation"], 3);
    sim.wait_rollout_complete("default", "web", WAIT).unwrap();
    let sets = sim.replica_sets("default", "web");
    assert_eq!(sets.len(), 2, "no new replica set: the old one is reused");
    let reused = sets
        .iter()
        .find(|rs| rs["metadata"]["name"] == first_name.as_str())
        .unwrap();
    assert_eq!(revision(reused), "3");
    assert_eq!(
        reused["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(reused["spec"]["replicas"], 3);
    assert_eq!(revision(&sim.deployment("default", "web").unwrap()), "3");
    assert_eq!(
        sim.pod_template("default", "web").unwrap()["spec"]["containers"][0]["image"],
        "web:1"
    );
}

#[tokio::test]
async fn the_background_ticker_moves_rollouts_on_its_own() {
    let sim = Sim::start(SimConfig {
        tick: Duration::from_millis(5),
        seconds_per_tick: 1,
        token: None,
    });
    let c = Client::new(sim.url());
    sim.add_deployment("default", "api", 2, &[("api", "api:1")]);
    let (status, _) = c.patch(&format!("{DEPLOY}/api"), MERGE, &json!({"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "api:2"}]}}}})).await;
    assert_eq!(status, 200);
    tokio::task::spawn_blocking(move || {
        sim.wait_rollout_complete("default", "api", WAIT).unwrap();
        assert!(sim.now() > 0);
        assert_eq!(sim.replica_sets("default", "api").len(), 2);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn generation_moves_on_spec_changes_only() {
    let sim = Sim::start(SimConfig::manual());
    let c = Client::new(sim.url());
    let d = sim.add_deployment("default", "web", 2, &[("web", "web:1")]);
    let rv0: u64 = d["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_, d1) = c
        .patch(
            &format!("{DEPLOY}/web"),
            MERGE,
            &json!({"metadata": {"labels": {"team": "a"}}}),
        )
        .await;
    assert_eq!(d1["metadata"]["generation"], 1, "metadata only");
    let rv1: u64 = d1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv1 > rv0);
    // The same patch again changes nothing and writes nothing.
    let (_, again) = c
        .patch(
            &format!("{DEPLOY}/web"),
            MERGE,
            &json!({"metadata": {"labels": {"team": "a"}}}),
        )
        .await;
    assert_eq!(
        again["metadata"]["resourceVersion"],
        d1["metadata"]["resourceVersion"]
    );
    // Status sent to the main resource is ignored.
    let (_, d2) = c
        .patch(
            &format!("{DEPLOY}/web"),
            MERGE,
            &json!({"status": {"replicas": 9}}),
        )
        .await;
    assert_eq!(d2["status"]["replicas"], 2);
    assert_eq!(d2["metadata"]["generation"], 1);
    // Scale through spec.replicas: a spec change, no new replica set.
    let (_, d3) = c
        .patch(
            &format!("{DEPLOY}/web"),
            MERGE,
            &json!({"spec": {"replicas": 4}}),
        )
        .await;
    assert_eq!(d3["metadata"]["generation"], 2);
    sim.wait_rollout_complete("default", "web", WAIT).unwrap();
    let sets = sim.replica_sets("default", "web");
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0]["spec"]["replicas"], 4);
    assert_eq!(revision(&sim.deployment("default", "web").unwrap()), "1");
    // And through the scale subresource.
    let (status, scale) = c
        .patch(
            &format!("{DEPLOY}/web/scale"),
            MERGE,
            &json!({"spec": {"replicas": 1}}),
        )
        .await;
    assert_eq!(status, 200, "{scale}");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 1);
    assert_eq!(scale["status"]["selector"], "app=web");
    sim.wait_rollout_complete("default", "web", WAIT).unwrap();
    assert_eq!(sim.replica_sets("default", "web")[0]["spec"]["replicas"], 1);
    // kubectl rollout restart: a template annotation, so a new replica set.
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}}}});
    let (_, d4) = c.patch(&format!("{DEPLOY}/web"), STRATEGIC, &restart).await;
    assert_eq!(d4["metadata"]["generation"], 4);
    sim.wait_rollout_complete("default", "web", WAIT).unwrap();
    let sets = sim.replica_sets("default", "web");
    assert_eq!(sets.len(), 2);
    assert_eq!(revision(&sets[1]), "2");
    assert_eq!(
        sets[1]["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        "2025-01-01T00:00:00Z"
    );
}

#[tokio::test]
async fn old_replica_sets_beyond_the_history_limit_are_pruned() {
    let sim = Sim::start(SimConfig::manual());
    let c = Client::new(sim.url());
    sim.add_deployment("default", "web", 1, &[("web", "web:1")]);
    c.patch(
        &format!("{DEPLOY}/web"),
        MERGE,
        &json!({"spec": {"revisionHistoryLimit": 1}}),
    )
    .await;
    for image in ["web:2", "web:3", "web:4"] {
        let (status, _) = c
            .patch(
                &format!("{DEPLOY}/web"),
                STRATEGIC,
                &set_image("web", image),
            )
            .await;
        assert_eq!(status, 200);
        sim.wait_rollout_complete("default", "web", WAIT).unwrap();
    }
    sim.tick();
    let sets = sim.replica_sets("default", "web");
    let revisions: Vec<&str> = sets.iter().map(revision).collect();
    assert_eq!(revisions, ["3", "4"]);
}

#[tokio::test]
async fn never_ready_pods_stall_until_the_progress_deadline() {
    let sim = Sim::start(SimConfig {
        tick: Duration::from_millis(5),
        seconds_per_tick: 60,
        token: None,
    });
    let c = Client::new(sim.url());
    sim.add_deployment("default", "web", 3, &[("web", "web:1")]);
    sim.set_never_ready("web:broken", true);
    let (status, _) = c
        .patch(
            &format!("{DEPLOY}/web"),
            STRATEGIC,
            &set_image("web", "web:broken"),
        )
        .await;
    assert_eq!(status, 200);
    let sim = tokio::task::spawn_blocking(move || {
        let err = sim
            .wait_rollout_complete("default", "web", WAIT)
            .unwrap_err();
        assert_eq!(err, "deployment \"web\" exceeded its progress deadline");
        sim
    })
    .await
    .unwrap();
    let d = sim.deployment("default", "web").unwrap();
    let progressing = condition(&d, "Progressing");
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    assert!(progressing["message"]
        .as_str()
        .unwrap()
        .contains("has timed out progressing"));
    assert_eq!(
        condition(&d, "Available")["status"],
        "True",
        "the old pods still serve"
    );
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(
        d["status"]["updatedReplicas"], 1,
        "one surge pod, never ready"
    );
    assert_eq!(d["status"]["unavailableReplicas"], 1);

    // Undo: back to web:1, the old replica set reused, the broken pod removed.
    let (status, _) = c
        .patch(
            &format!("{DEPLOY}/web"),
            STRATEGIC,
            &set_image("web", "web:1"),
        )
        .await;
    assert_eq!(status, 200);
    tokio::task::spawn_blocking(move || {
        sim.wait_rollout_complete("default", "web", WAIT).unwrap();
        let sets = sim.replica_sets("default", "web");
        assert_eq!(sets.iter().map(revision).collect::<Vec<_>>(), ["2", "3"]);
        assert_eq!(sets[0]["spec"]["replicas"], 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_paused_deployment_does_not_move() {
    let sim = Sim::start(SimConfig::manual());
    let c = Client::new(sim.url());
    sim.add_deployment("default", "web", 2, &[("web", "web:1")]);
    let (_, d) = c
        .patch(
            &format!("{DEPLOY}/web"),
            MERGE,
            &json!({"spec": {"paused": true}}),
        )
        .await;
    assert_eq!(d["metadata"]["generation"], 2, "pausing is a spec change");
    c.patch(
        &format!("{DEPLOY}/web"),
        STRATEGIC,
        &set_image("web", "web:2"),
    )
    .await;
    for _ in 0..20 {
        sim.tick();
    }
    let d = sim.deployment("default", "web").unwrap();
    assert_eq!(
        d["status"]["observedGeneration"], 3,
        "the controller still observes"
    );
    assert_eq!(condition(&d, "Progressing")["reason"], "DeploymentPaused");
    assert_eq!(condition(&d, "Progressing")["status"], "Unknown");
    assert_eq!(sim.replica_sets("default", "web").len(), 1);
    assert_eq!(revision(&d), "1");
    assert_eq!(
        sim.rollout("default", "web"),
        Rollout::Waiting("no ReplicaSet has the deployment's pod template yet".into())
    );

    assert!(sim.set_paused("default", "web", false));
    sim.wait_rollout_complete("default", "web", WAIT).unwrap();
    assert_eq!(sim.replica_sets("default", "web").len(), 2);
    assert!(sim.deployment("default", "web").unwrap()["spec"]
        .get("paused")
        .is_none());
}

#[tokio::test]
async fn a_created_deployment_rolls_out_from_nothing_and_pods_are_listed() {
    let sim = Sim::start(SimConfig::manual());
    let c = Client::new(sim.url());
    let body = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "db"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "pg:16"}]}}},
    });
    let (status, made, _) = c
        .send(
            reqwest::Method::POST,
            DEPLOY,
            Some("application/json"),
            Some(&body),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(made["spec"]["strategy"]["type"], "RollingUpdate");
    let (status, _, _) = c
        .send(
            reqwest::Method::POST,
            DEPLOY,
            Some("application/json"),
            Some(&body),
        )
        .await;
    assert_eq!(status, 409);
    sim.wait_rollout_complete("default", "db", WAIT).unwrap();
    assert_eq!(revision(&sim.deployment("default", "db").unwrap()), "1");
    let (status, pods) = c
        .get("/api/v1/namespaces/default/pods?labelSelector=app%3Ddb")
        .await;
    assert_eq!(status, 200);
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 2);
    assert_eq!(pods[0]["status"]["phase"], "Running");
    let (status, bad, _) = c
        .send(
            reqwest::Method::POST,
            DEPLOY,
            Some("application/json"),
            Some(&json!({"metadata": {"name": "x"}, "spec": {}})),
        )
        .await;
    assert_eq!((status, bad["reason"].as_str()), (422, Some("Invalid")));
}

#[tokio::test]
async fn recreate_empties_the_old_replica_set_before_the_new_one_grows() {
    let sim = Sim::start(SimConfig::manual());
    let c = Client::new(sim.url());
    sim.add_deployment("default", "web", 3, &[("web", "web:1")]);
    let recreate = json!({"spec": {"strategy": {"type": "Recreate", "rollingUpdate": null}}});
    assert_eq!(
        c.patch(&format!("{DEPLOY}/web"), MERGE, &recreate).await.0,
        200
    );
    c.patch(
        &format!("{DEPLOY}/web"),
        STRATEGIC,
        &set_image("web", "web:2"),
    )
    .await;
    let mut saw_down = false;
    for _ in 0..30 {
        sim.tick();
        let sets = sim.replica_sets("default", "web");
        let counts: Vec<i64> = sets
            .iter()
            .map(|rs| rs["spec"]["replicas"].as_i64().unwrap())
            .collect();
        assert!(counts.iter().filter(|&&n| n > 0).count() <= 1, "{counts:?}");
        let d = sim.deployment("default", "web").unwrap();
        saw_down |= condition(&d, "Available")["status"] == "False";
        if sim.rollout("default", "web") == Rollout::Complete {
            break;
        }
    }
    assert_eq!(sim.rollout("default", "web"), Rollout::Complete);
    assert!(saw_down, "Recreate has a moment with nothing available");
}
