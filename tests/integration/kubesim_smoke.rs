//! The real `kube` client against the simulated API server: it connects from a kubeconfig,
//! patches an image, reads the deployment and its replica sets back, and meets the
//! simulator's errors as `kube::Error::Api`.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kubesim::{Sim, SimConfig};
use serde_json::json;
use std::time::Duration;

async fn client(sim: &kubesim::SimHandle, dir: &std::path::Path) -> Client {
    let path = dir.join("kubeconfig");
    sim.kubeconfig(&path, "shop").unwrap();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "shop");
    Client::try_from(config).unwrap()
}

fn image(d: &Deployment) -> String {
    let spec = d.spec.template.spec.as_ref().unwrap();
    spec.containers[0].image.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_kube_client_talks_to_kubesim_unchanged() {
    let sim = Sim::start(SimConfig {
        tick: Duration::from_millis(5),
        seconds_per_tick: 1,
        token: Some("tok".into()),
    });
    sim.add_deployment("shop", "web", 3, &[("web", "web:1")]);
    let dir = std::env::temp_dir().join(format!("kubesim-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let client = client(&sim, &dir).await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());

    let d = deployments.get("web").await.unwrap();
    assert_eq!(image(&d), "web:1");
    assert_eq!(d.metadata.generation, Some(1));

    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}});
    let patched = deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    assert_eq!(image(&patched), "web:2");
    assert_eq!(patched.metadata.generation, Some(2));
    let sent = sim
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(
        sent.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );

    let sim = tokio::task::spawn_blocking(move || {
        sim.wait_rollout_complete("shop", "web", Duration::from_secs(10))
            .unwrap();
        sim
    })
    .await
    .unwrap();
    let d = deployments.get("web").await.unwrap();
    let status = d.status.unwrap();
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.updated_replicas, Some(3));
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let list = sets
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 2);

    // A stale replace is a 409 the client reports as an API error.
    let mut stale = patched.clone();
    stale.spec.replicas = Some(5);
    match deployments
        .replace("web", &PostParams::default(), &stale)
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 409);
            assert_eq!(status.reason, "Conflict");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    match deployments.get("gone").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"))
        }
        other => panic!("expected not found, got {other:?}"),
    }
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    drop(sim);
    std::fs::remove_dir_all(&dir).unwrap();
}
