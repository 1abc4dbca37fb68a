//! The Kubernetes actions against kubesim, the simulated API server: each
//! test starts its own, writes a kubeconfig and connects through `connect`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kubesim::{Failure, Sim, SimConfig, SimHandle};
use serde_json::{json, Value};

use super::*;

const POLL: Duration = Duration::from_millis(10);

/// A directory of its own, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("runbook-kube-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fast() -> SimConfig {
    SimConfig {
        tick: Duration::from_millis(5),
        seconds_per_tick: 1,
        token: None,
    }
}

/// An environment holding only `KUBECONFIG`.
fn env_of(kubeconfig: &str) -> impl Fn(&str) -> Option<String> + '_ {
    move |name: &str| (name == "KUBECONFIG").then(|| kubeconfig.to_string())
}

/// A kubeconfig of contexts `(name, server, namespace, token)`.
fn write_kubeconfig(path: &Path, contexts: &[(&str, &str, &str, Option<&str>)], current: &str) {
    let clusters: Vec<Value> = contexts
        .iter()
        .map(|(n, server, _, _)| json!({"name": n, "cluster": {"server": server}}))
        .collect();
    let users: Vec<Value> = contexts
        .iter()
        .map(|(n, _, _, token)| match token {
            Some(t) => json!({"name": n, "user": {"token": t}}),
            None => json!({"name": n, "user": {}}),
        })
        .collect();
    let named: Vec<Value> = contexts
        .iter()
        .map(|(n, _, ns, _)| json!({"name": n, "context": {"cluster": n, "user": n, "namespace": ns}}))
        .collect();
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": clusters, "users": users, "contexts": named,
        "current-context": current,
    });
    std::fs::write(path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

/// A fresh simulator with `web` (3 replicas of `web:1`) in `shop`, and a cluster on it.
async fn start(config: SimConfig, dir: &Dir) -> (Arc<SimHandle>, Cluster) {
    let sim = Sim::start(config);
    sim.add_deployment("shop", "web", 3, &[("web", "web:1")]);
    let path = dir.0.join("kubeconfig");
    sim.kubeconfig(&path, "shop").unwrap();
    let path = path.to_string_lossy().into_owned();
    let cluster = connect(&Target::default(), &env_of(&path)).await.unwrap();
    (Arc::new(sim), cluster)
}

/// Ticks a manual simulator every few ms once `start` is set.
fn ticking(sim: &Arc<SimHandle>, start: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let sim = sim.clone();
    tokio::spawn(async move {
        loop {
            if start.load(Ordering::SeqCst) {
                sim.tick();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

async fn wait(cluster: &Cluster, name: &str) -> (Result<(), KubeError>, Vec<String>) {
    let mut seen = Vec::new();
    let result = wait_rollout(cluster, name, POLL, |m| seen.push(m.to_string())).await;
    (result, seen)
}

/// A deployment rolled out from a full spec, with `app: NAME` labels.
fn add(sim: &SimHandle, name: &str, spec: Value) {
    let mut spec = spec;
    spec["selector"] = json!({"matchLabels": {"app": name}});
    spec["template"]["metadata"] = json!({"labels": {"app": name}});
    if spec["template"]["spec"].is_null() {
        spec["template"]["spec"] =
            json!({"containers": [{"name": name, "image": format!("{name}:1")}]});
    }
    sim.add_deployment_object(
        "shop",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap();
}

#[tokio::test]
async fn connect_takes_the_context_and_namespace_asked_for() {
    let dir = Dir::new("context");
    let sim = Sim::start(fast());
    let url = sim.url();
    let first = dir.0.join("first");
    let second = dir.0.join("second");
    write_kubeconfig(&first, &[("a", &url, "shop", None)], "a");
    // The second file's `a` loses to the first's; its `b` and current-context add nothing
    // the first did not set.
    write_kubeconfig(
        &second,
        &[("a", &url, "ignored", None), ("b", &url, "other", None)],
        "b",
    );
    let list = format!(
        "{}:{}:{}",
        dir.0.join("missing").display(),
        first.display(),
        second.display()
    );
    let env = env_of(&list);

    let cluster = connect(&Target::default(), &env).await.unwrap();
    assert_eq!(
        (cluster.context.as_str(), cluster.namespace.as_str()),
        ("a", "shop")
    );
    assert_eq!(cluster.server, url);
    let b = Target {
        context: Some("b".into()),
        namespace: None,
    };
    assert_eq!(connect(&b, &env).await.unwrap().namespace, "other");
    let explicit = Target {
        context: Some("b".into()),
        namespace: Some("payments".into()),
    };
    assert_eq!(
        connect(&explicit, &env).await.unwrap().namespace,
        "payments"
    );

    let unknown = Target {
        context: Some("prod".into()),
        namespace: None,
    };
    let e = connect(&unknown, &env).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the kubeconfig has no context named `prod` (it has: a, b)"
    );
}

#[tokio::test]
async fn connect_falls_back_to_home_and_says_when_there_is_nothing() {
    let dir = Dir::new("home");
    let sim = Sim::start(fast());
    std::fs::create_dir_all(dir.0.join(".kube")).unwrap();
    sim.kubeconfig(dir.0.join(".kube/config"), "shop").unwrap();
    let home = dir.0.to_string_lossy().into_owned();
    let env = |name: &str| (name == "HOME").then(|| home.clone());
    assert_eq!(
        connect(&Target::default(), &env).await.unwrap().namespace,
        "shop"
    );

    let missing = dir.0.join("nothing").to_string_lossy().into_owned();
    let e = connect(&Target::default(), &env_of(&missing))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("no kubeconfig found (KUBECONFIG={missing} names no file that exists) and runbook is not running in a Kubernetes pod")
    );
}

#[tokio::test]
async fn an_unreachable_server_is_one_sentence() {
    let dir = Dir::new("unreachable");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = format!("http://127.0.0.1:{port}");
    let path = dir.0.join("kubeconfig");
    write_kubeconfig(&path, &[("dev", &server, "shop", None)], "dev");
    let path = path.to_string_lossy().into_owned();
    let e = connect(&Target::default(), &env_of(&path))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot reach the Kubernetes API server at {server}: connection refused; is the cluster up and is this the right context?")
    );
}

#[tokio::test]
async fn refused_credentials_are_named_without_the_token() {
    let dir = Dir::new("unauthorised");
    let sim = Sim::start(SimConfig {
        token: Some("the-right-token".into()),
        ..fast()
    });
    let path = dir.0.join("kubeconfig");
    write_kubeconfig(
        &path,
        &[("dev", &sim.url(), "shop", Some("a-wrong-token"))],
        "dev",
    );
    let path = path.to_string_lossy().into_owned();
    let e = connect(&Target::default(), &env_of(&path))
        .await
        .unwrap_err();
    let message = e.to_string();
    assert!(
        message.starts_with(&format!(
            "the Kubernetes API server at {} refused the credentials of context dev: Unauthorized: ",
            sim.url()
        )),
        "{message}"
    );
    assert!(!message.contains("token"), "{message}");
}

#[tokio::test]
async fn a_missing_deployment_is_named_with_its_namespace() {
    let dir = Dir::new("missing");
    let (_sim, cluster) = start(fast(), &dir).await;
    let e = before_deploy(&cluster, "api", None).await.unwrap_err();
    assert_eq!(e.to_string(), "deployment api not found in namespace shop");
    assert_eq!(
        scale(&cluster, "api", 2, |_| {})
            .await
            .unwrap_err()
            .to_string(),
        "deployment api not found in namespace shop"
    );
}

#[tokio::test]
async fn several_containers_need_a_name() {
    let dir = Dir::new("containers");
    let (sim, cluster) = start(fast(), &dir).await;
    sim.add_deployment("shop", "api", 1, &[("api", "api:1"), ("proxy", "envoy:1")]);
    let e = before_deploy(&cluster, "api", None).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "deployment api has several containers (api, proxy), so the step must name one"
    );
    let e = before_deploy(&cluster, "api", Some("app"))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "deployment api has no container `app` (it has: api, proxy)"
    );
    let before = before_deploy(&cluster, "api", Some("proxy")).await.unwrap();
    assert_eq!(
        (before.container.as_str(), before.image.as_str()),
        ("proxy", "envoy:1")
    );
}

#[tokio::test]
async fn a_healthy_deploy_waits_for_the_new_generation_and_reads_revision_2() {
    let dir = Dir::new("deploy");
    let (sim, cluster) = start(SimConfig::manual(), &dir).await;
    let before = before_deploy(&cluster, "web", None).await.unwrap();
    assert_eq!(before.image, "web:1");
    assert_eq!(before.container, "web");
    assert_eq!(before.revision.as_deref(), Some("1"));
    assert_eq!(before.generation, 1);
    assert_eq!(
        Some(before.template.clone()),
        sim.pod_template("shop", "web")
    );

    let generation = set_image(&cluster, "web", &before.container, "web:2")
        .await
        .unwrap();
    assert_eq!(generation, 2);
    // No tick passes before the first poll: the status still describes
    // generation 1, complete, and must not be taken for the new rollout's.
    let started = Arc::new(AtomicBool::new(false));
    let ticker = ticking(&sim, started.clone());
    let mut seen = Vec::new();
    let result = wait_rollout(&cluster, "web", POLL, |m| {
        seen.push(m.to_string());
        started.store(true, Ordering::SeqCst);
    })
    .await;
    ticker.abort();
    result.unwrap();
    assert_eq!(
        seen.first().map(String::as_str),
        Some("Waiting for deployment spec update to be observed...")
    );
    assert!(seen
        .iter()
        .any(|m| m.contains("new replicas have been updated")));
    // kubesim serves no watches (405): the wait says so once and polls.
    let fallbacks: Vec<&String> = seen
        .iter()
        .filter(|m| m.starts_with("watching deployment web is not possible"))
        .collect();
    assert_eq!(fallbacks.len(), 1, "{seen:?}");
    assert!(
        fallbacks[0].contains("(the server answered 405 "),
        "{}",
        fallbacks[0]
    );
    let d = sim.deployment("shop", "web").unwrap();
    assert_eq!(d["status"]["observedGeneration"], 2);
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(d["status"]["replicas"], 3);
    assert_eq!(
        revision(&cluster, "web").await.unwrap().as_deref(),
        Some("2")
    );

    // The same image again changes nothing.
    assert_eq!(set_image(&cluster, "web", "web", "web:2").await.unwrap(), 2);
}

#[tokio::test]
async fn pods_that_never_become_ready_exceed_the_progress_deadline() {
    let dir = Dir::new("deadline");
    let (sim, cluster) = start(fast(), &dir).await;
    add(
        &sim,
        "api",
        json!({"replicas": 2, "progressDeadlineSeconds": 5}),
    );
    sim.set_never_ready("api:broken", true);
    set_image(&cluster, "api", "api", "api:broken")
        .await
        .unwrap();
    let (result, _) = wait(&cluster, "api").await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "deployment \"api\" exceeded its progress deadline"
    );
}

#[tokio::test]
async fn a_paused_deployment_is_refused() {
    let dir = Dir::new("paused");
    let (sim, cluster) = start(fast(), &dir).await;
    let before = before_deploy(&cluster, "web", None).await.unwrap();
    sim.set_paused("shop", "web", true);
    set_image(&cluster, "web", "web", "web:2").await.unwrap();
    let (result, _) = wait(&cluster, "web").await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "deployment web is paused; resume it (kubectl rollout resume) or undo"
    );
    let e = put_back(&cluster, "web", &before.template, |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "deployment web is paused, so runbook will not put its template back; resume it first (kubectl rollout resume)"
    );
    let e = restart(&cluster, "web", "2025-01-01T00:00:00Z")
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::PausedRefused { .. }), "{e}");
}

#[tokio::test]
async fn put_back_rides_out_a_few_conflicts_and_names_too_many() {
    let dir = Dir::new("conflict");
    let (sim, cluster) = start(fast(), &dir).await;
    let before = before_deploy(&cluster, "web", None).await.unwrap();
    set_image(&cluster, "web", "web", "web:2").await.unwrap();
    wait(&cluster, "web").await.0.unwrap();

    sim.clear_requests();
    sim.conflict_next_writes(2);
    let mut said = Vec::new();
    put_back(&cluster, "web", &before.template, |m| {
        said.push(m.to_string())
    })
    .await
    .unwrap();
    assert_eq!(
        said,
        [
            "deployment web changed between runbook's read and its write (409 Conflict): reading it again (2 of 5)",
            "deployment web changed between runbook's read and its write (409 Conflict): reading it again (3 of 5)",
        ]
    );
    let puts: Vec<u16> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.status)
        .collect();
    assert_eq!(puts, [409, 409, 200]);
    wait(&cluster, "web").await.0.unwrap();
    assert_eq!(sim.pod_template("shop", "web"), Some(before.template));

    sim.conflict_next_writes(50);
    let e = put_back(&cluster, "web", &json!({}), |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "deployment web kept changing while runbook wrote it: 5 attempts met a conflict (409)"
    );
    sim.conflict_next_writes(0);
}

#[tokio::test]
async fn put_back_restores_the_recorded_template_after_someone_else_deployed() {
    let dir = Dir::new("between");
    let (sim, cluster) = start(fast(), &dir).await;
    let a = before_deploy(&cluster, "web", None).await.unwrap();
    set_image(&cluster, "web", "web", "web:B").await.unwrap();
    wait(&cluster, "web").await.0.unwrap();
    // Someone else: a new image, an env var and an annotation.
    let other = json!({"spec": {"template": {
        "metadata": {"annotations": {"team": "payments"}},
        "spec": {"containers": [{"name": "web", "image": "web:C", "env": [{"name": "MODE", "value": "fast"}]}]},
    }}});
    cluster
        .deployments()
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&other),
        )
        .await
        .unwrap();
    wait(&cluster, "web").await.0.unwrap();
    assert_ne!(sim.pod_template("shop", "web"), Some(a.template.clone()));

    let generation = put_back(&cluster, "web", &a.template, |_| {})
        .await
        .unwrap();
    assert_eq!(generation, 4);
    wait(&cluster, "web").await.0.unwrap();
    assert_eq!(sim.pod_template("shop", "web"), Some(a.template));
}

#[tokio::test]
async fn put_back_needs_no_replica_set_history() {
    let dir = Dir::new("pruned");
    let (sim, cluster) = start(fast(), &dir).await;
    add(
        &sim,
        "api",
        json!({"replicas": 2, "revisionHistoryLimit": 1}),
    );
    let a = before_deploy(&cluster, "api", None).await.unwrap();
    for image in ["api:2", "api:3", "api:4"] {
        set_image(&cluster, "api", "api", image).await.unwrap();
        wait(&cluster, "api").await.0.unwrap();
    }
    let images: Vec<Value> = sim
        .replica_sets("shop", "api")
        .iter()
        .map(|rs| rs["spec"]["template"]["spec"]["containers"][0]["image"].clone())
        .collect();
    assert!(!images.contains(&json!("api:1")), "{images:?}");

    put_back(&cluster, "api", &a.template, |_| {})
        .await
        .unwrap();
    wait(&cluster, "api").await.0.unwrap();
    assert_eq!(sim.pod_template("shop", "api"), Some(a.template));
    assert_eq!(
        revision(&cluster, "api").await.unwrap().as_deref(),
        Some("5")
    );
}

#[tokio::test]
async fn restart_with_the_same_instant_twice_changes_nothing_the_second_time() {
    let dir = Dir::new("restart");
    let (sim, cluster) = start(fast(), &dir).await;
    let at = "2025-03-01T10:00:00Z";
    let first = restart(&cluster, "web", at).await.unwrap();
    assert_eq!(first, 2);
    let second = restart(&cluster, "web", at).await.unwrap();
    assert_eq!(second, first);
    let template = sim.pod_template("shop", "web").unwrap();
    assert_eq!(
        template["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        at
    );
    wait(&cluster, "web").await.0.unwrap();
    assert_eq!(
        restart(&cluster, "web", "2025-03-01T11:00:00Z")
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn scale_returns_the_previous_count() {
    let dir = Dir::new("scale");
    let (sim, cluster) = start(fast(), &dir).await;
    assert_eq!(scale(&cluster, "web", 5, |_| {}).await.unwrap(), 3);
    assert_eq!(scale(&cluster, "web", 2, |_| {}).await.unwrap(), 5);
    assert_eq!(
        sim.deployment("shop", "web").unwrap()["spec"]["replicas"],
        2
    );
    sim.conflict_next_writes(1);
    assert_eq!(scale(&cluster, "web", 4, |_| {}).await.unwrap(), 2);
    wait(&cluster, "web").await.0.unwrap();
}

#[tokio::test]
async fn a_wait_rides_out_429_and_500() {
    let dir = Dir::new("transient");
    let (sim, cluster) = start(fast(), &dir).await;
    set_image(&cluster, "web", "web", "web:2").await.unwrap();
    sim.fail_next_requests(3, Failure::ServerError);
    let (result, seen) = wait(&cluster, "web").await;
    result.unwrap();
    assert!(
        seen.iter()
            .any(|m| m.contains("answered 500") && m.contains("trying again")),
        "{seen:?}"
    );

    set_image(&cluster, "web", "web", "web:3").await.unwrap();
    sim.fail_next_requests(
        4,
        Failure::TooManyRequests {
            retry_after_secs: 0,
        },
    );
    wait(&cluster, "web").await.0.unwrap();
    assert_eq!(
        revision(&cluster, "web").await.unwrap().as_deref(),
        Some("3")
    );

    sim.fail_next_requests(20, Failure::ServerError);
    let (result, _) = wait(&cluster, "web").await;
    assert!(
        matches!(result, Err(KubeError::Api { code: 500, .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_deployment_deleted_mid_wait_ends_the_wait() {
    let dir = Dir::new("deleted");
    let (sim, cluster) = start(fast(), &dir).await;
    sim.set_never_ready("web:2", true);
    set_image(&cluster, "web", "web", "web:2").await.unwrap();
    let deleter = {
        let sim = sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sim.delete_deployment("shop", "web")
        })
    };
    let (result, seen) = wait(&cluster, "web").await;
    assert!(deleter.await.unwrap());
    assert!(!seen.is_empty());
    assert_eq!(
        result.unwrap_err().to_string(),
        "deployment web was deleted while its rollout was watched"
    );
}

#[test]
fn a_403_from_rbac_says_who_may_not_do_what_and_that_the_credentials_were_taken() {
    // The API server's own wording (kube-apiserver 1.20, the RBAC authorizer).
    let namespaced = Denied::from_message(
        r#"deployments.apps "api" is forbidden: User "system:serviceaccount:ops:nobody" cannot patch resource "deployments" in API group "apps" in the namespace "ops""#,
    )
    .expect("an RBAC refusal");
    assert_eq!(
        namespaced,
        Denied {
            user: "system:serviceaccount:ops:nobody".into(),
            verb: "patch".into(),
            resource: "deployments.apps".into(),
            namespace: Some("ops".into()),
        }
    );
    let e = KubeError::Forbidden {
        server: "https://127.0.0.1:6443".into(),
        context: "ci".into(),
        denied: Box::new(namespaced),
    };
    assert_eq!(
        e.to_string(),
        "the Kubernetes API server at https://127.0.0.1:6443 accepted the credentials of context ci, but user \"system:serviceaccount:ops:nobody\" may not patch deployments.apps in namespace ops: a permission (RBAC) is missing; grant it or use another context"
    );
    let cluster_wide = Denied::from_message(
        r#"nodes is forbidden: User "jane" cannot list resource "nodes" in API group "" at the cluster scope"#,
    )
    .expect("an RBAC refusal");
    assert_eq!(cluster_wide.resource, "nodes");
    assert_eq!(cluster_wide.namespace, None);
    // Not every 403 is a missing permission.
    assert_eq!(
        Denied::from_message(
            "unable to create new content in namespace ops because it is being terminated"
        ),
        None
    );
}
