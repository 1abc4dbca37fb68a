//! The API's answers over real HTTP: conflicts, patches, faults, auth, lists, the record.

mod common;

use common::*;
use kubesim::{Failure, Sim, SimConfig};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_put_with_a_stale_resource_version_is_a_409_status() {
    let sim = Sim::start(SimConfig::manual());
    let c = Client::new(sim.url());
    sim.add_deployment("default", "web", 1, &[("web", "web:1")]);
    let (_, stale) = c.get(&format!("{DEPLOY}/web")).await;
    c.patch(
        &format!("{DEPLOY}/web"),
        MERGE,
        &json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await;
    let mut replaced = stale.clone();
    replaced["spec"]["replicas"] = json!(5);
    let (status, body) = c.put(&format!("{DEPLOY}/web"), &replaced).await;
    assert_eq!(status, 409);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["status"], "Failure");
    assert_eq!(body["reason"], "Conflict");
    assert_eq!(body["code"], 409);
    assert_eq!(
        body["message"],
        "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; \
         please apply your changes to the latest version and try again"
    );
    // The current resourceVersion goes through, and so does none at all (unconditional).
    let (_, fresh) = c.get(&format!("{DEPLOY}/web")).await;
    let mut replaced = fresh.clone();
    replaced["spec"]["replicas"] = json!(5);
    let (status, body) = c.put(&format!("{DEPLOY}/web"), &replaced).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metadata"]["generation"], 2);
    let mut unconditional = body.clone();
    unconditional["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    unconditional["spec"]["replicas"] = json!(6);
    assert_eq!(c.put(&format!("{DEPLOY}/web"), &unconditional).await.0, 200);
    // A merge patch carrying a stale resourceVersion is a precondition too.
    let guarded = json!({"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]}, "spec": {"replicas": 2}});
    assert_eq!(
        c.patch(&format!("{DEPLOY}/web"), MERGE, &guarded).await.0,
        409
    );
    // A name that is not the URL's is refused.
    let mut renamed = unconditional.clone();
    renamed["metadata"]["name"] = json!("other");
    assert_eq!(c.put(&format!("{DEPLOY}/web"), &renamed).await.0, 400);
}

/// As `k8s.io/apiserver`'s patch handler: a JSON patch whose operation fails, a `test`
/// included, is 422 Unprocessable Entity (reason Invalid), not 409.
#[tokio::test]
async fn a_failed_json_patch_test_is_a_422_status() {
    let sim = Sim::start(SimConfig::manual());
    let c = Client::new(sim.url());
    let d = sim.add_deployment("default", "web", 1, &[("web", "web:1")]);
    let rv = d["metadata"]["resourceVersion"].as_str().unwrap();
    let patch = |rv: &str| {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "web:2"},
        ])
    };
    let (status, body) = c
        .patch(&format!("{DEPLOY}/web"), JSON_PATCH, &patch("1"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Invalid");
    assert!(body["message"].as_str().unwrap().contains("test failed"));
    assert_eq!(
        sim.pod_template("default", "web").unwrap()["spec"]["containers"][0]["image"],
        "web:1"
    );
    let (status, body) = c
        .patch(&format!("{DEPLOY}/web"), JSON_PATCH, &patch(rv))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );
    // Not a list of operations: 400. An unknown patch type (server-side apply): 415.
    assert_eq!(
        c.patch(&format!("{DEPLOY}/web"), JSON_PATCH, &json!({"op": "add"}))
            .await
            .0,
        400
    );
    let (status, body) = c
        .patch(
            &format!("{DEPLOY}/web"),
            "application/apply-patch+yaml",
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
}

#[tokio::test]
async fn scripted_conflicts_then_success() {
    let sim = Sim::start(SimConfig::manual());
    let c = Client::new(sim.url());
    sim.add_deployment("default", "web", 1, &[("web", "web:1")]);
    sim.conflict_next_writes(2);
    for _ in 0..2 {
        let (status, body) = c
            .patch(
                &format!("{DEPLOY}/web"),
                STRATEGIC,
                &set_image("web", "web:2"),
            )
            .await;
        assert_eq!((status, body["reason"].as_str()), (409, Some("Conflict")));
    }
    assert_eq!(
        c.get(&format!("{DEPLOY}/web")).await.0,
        200,
        "reads are not writes"
    );
    assert_eq!(
        c.patch(
            &format!("{DEPLOY}/web"),
            STRATEGIC,
            &set_image("web", "web:2")
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn scripted_429_and_500() {
    let sim = Sim::start(SimConfig::manual());
    let c = Client::new(sim.url());
    sim.add_deployment("default", "web", 1, &[("web", "web:1")]);
    sim.fail_next_requests(
        2,
        Failure::TooManyRequests {
            retry_after_secs: 3,
        },
    );
    for _ in 0..2 {
        let (status, body, headers) = c
            .send(reqwest::Method::GET, &format!("{DEPLOY}/web"), None, None)
            .await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "3");
        assert_eq!(body["reason"], "TooManyRequests");
        assert_eq!(body["details"]["retryAfterSeconds"], 3);
    }
    assert_eq!(c.get(&format!("{DEPLOY}/web")).await.0, 200);
    sim.fail_next_requests(1, Failure::ServerError);
    let (status, body) = c
        .patch(
            &format!("{DEPLOY}/web"),
            STRATEGIC,
            &set_image("web", "web:2"),
        )
        .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (500, Some("InternalError"))
    );
    assert_eq!(
        sim.deployment("default", "web").unwrap()["metadata"]["generation"],
        1,
        "nothing written"
    );
    assert_eq!(c.get(&format!("{DEPLOY}/web")).await.0, 200);
}

#[tokio::test]
async fn a_bearer_token_when_required() {
    let sim = Sim::start(SimConfig {
        token: Some("s3cret".into()),
        ..SimConfig::manual()
    });
    let anonymous = Client::new(sim.url());
    let (status, body) = anonymous.get(DEPLOY).await;
    assert_eq!(status, 401);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    let wrong = Client::new(sim.url()).with_token("guess");
    assert_eq!(wrong.get(DEPLOY).await.0, 401);
    let right = Client::new(sim.url()).with_token("s3cret");
    let (status, list) = right.get(DEPLOY).await;
    assert_eq!(status, 200);
    assert_eq!(list["kind"], "DeploymentList");
    // The kubeconfig carries the token, the server and the namespace.
    let dir = std::env::temp_dir().join(format!("kubesim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    sim.kubeconfig(&path, "prod").unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(config["users"][0]["user"]["token"], "s3cret");
    assert_eq!(config["clusters"][0]["cluster"]["server"], sim.url());
    assert_eq!(config["contexts"][0]["context"]["namespace"], "prod");
    assert_eq!(config["current-context"], "kubesim");
    std::fs::remove_dir_all(&dir).unwrap();
    sim.require_token(None);
    assert_eq!(anonymous.get(DEPLOY).await.0, 200);
}

#[tokio::test]
async fn a_deployment_deleted_mid_rollout_is_404_afterwards() {
    let sim = Sim::start(SimConfig::manual());
    let c = Client::new(sim.url());
    sim.add_deployment("default", "web", 3, &[("web", "web:1")]);
    sim.add_deployment("default", "api", 1, &[("api", "api:1")]);
    c.patch(
        &format!("{DEPLOY}/web"),
        STRATEGIC,
        &set_image("web", "web:2"),
    )
    .await;
    sim.tick();
    sim.tick();
    assert!(sim.delete_deployment("default", "web"));
    sim.tick();
    let (status, body) = c.get(&format!("{DEPLOY}/web")).await;
    assert_eq!(status, 404);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["message"], "deployments.apps \"web\" not found");
    let (_, sets) = c.get(&format!("{RS}?labelSelector=app%3Dweb")).await;
    assert_eq!(sets["items"], json!([]), "its replica sets went with it");
    assert_eq!(
        c.patch(
            &format!("{DEPLOY}/web"),
            STRATEGIC,
            &set_image("web", "web:3")
        )
        .await
        .0,
        404
    );
    let err = sim
        .wait_rollout_complete("default", "web", Duration::from_secs(1))
        .unwrap_err();
    assert!(err.contains("not found"));
    // DELETE over HTTP answers a Success Status, then 404.
    let (status, body) = c.delete(&format!("{DEPLOY}/api")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("Success")));
    assert_eq!(c.delete(&format!("{DEPLOY}/api")).await.0, 404);
}

#[tokio::test]
async fn lists_select_by_label_and_every_request_is_recorded() {
    let sim = Sim::start(SimConfig::manual());
    let c = Client::new(sim.url());
    sim.add_deployment("default", "web", 1, &[("web", "web:1")]);
    sim.add_deployment("default", "api", 1, &[("api", "api:1")]);
    sim.add_deployment("other", "web", 1, &[("web", "web:1")]);
    let (_, all) = c.get("/apis/apps/v1/deployments").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let (_, list) = c.get(&format!("{DEPLOY}?labelSelector=app%3Dweb")).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["kind"], "Deployment");
    let (_, none) = c
        .get(&format!("{DEPLOY}?labelSelector=app%3Dweb%2Capp%21%3Dweb"))
        .await;
    assert_eq!(none["items"], json!([]));
    let rs = &sim.replica_sets("default", "web")[0];
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    let (_, by_hash) = c
        .get(&format!("{RS}?labelSelector=pod-template-hash%3D{hash}"))
        .await;
    assert_eq!(by_hash["items"].as_array().unwrap().len(), 1);
    let (status, one) = c
        .get(&format!(
            "{RS}/{}",
            rs["metadata"]["name"].as_str().unwrap()
        ))
        .await;
    assert_eq!((status, one["kind"].as_str()), (200, Some("ReplicaSet")));
    assert_eq!(c.get(&format!("{RS}/nope")).await.0, 404);
    let (status, body) = c.get(&format!("{DEPLOY}?watch=true")).await;
    assert_eq!((status, body["kind"].as_str()), (405, Some("Status")));
    let (status, version) = c.get("/version").await;
    assert_eq!((status, version["major"].as_str()), (200, Some("1")));
    assert_eq!(c.get("/apis/batch/v1/namespaces/default/jobs").await.0, 404);

    sim.clear_requests();
    c.patch(
        &format!("{DEPLOY}/web?fieldManager=runbook"),
        STRATEGIC,
        &set_image("web", "web:2"),
    )
    .await;
    let seen = sim.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "PATCH");
    assert_eq!(seen[0].path, format!("{DEPLOY}/web?fieldManager=runbook"));
    assert_eq!(seen[0].content_type.as_deref(), Some(STRATEGIC));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&seen[0].body).unwrap(),
        set_image("web", "web:2")
    );
    assert_eq!(seen[0].status, 200);
    // A dry run answers as the write would and writes nothing.
    let (status, dry) = c
        .patch(
            &format!("{DEPLOY}/web?dryRun=All"),
            STRATEGIC,
            &set_image("web", "web:3"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        dry["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:3"
    );
    assert_eq!(
        sim.pod_template("default", "web").unwrap()["spec"]["containers"][0]["image"],
        "web:2"
    );
}

/// From a plain `#[test]` (no runtime of the caller's): the server runs on its own thread.
#[test]
fn a_plain_test_needs_no_runtime() {
    use std::io::{Read, Write};
    let sim = Sim::start(SimConfig::default());
    sim.add_deployment("default", "web", 1, &[("web", "web:1")]);
    let addr = sim.url().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET {DEPLOY}/web HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"name\":\"web\""));
    sim.wait_rollout_complete("default", "web", Duration::from_secs(5))
        .unwrap();
}
