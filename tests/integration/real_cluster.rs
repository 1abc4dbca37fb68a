//! The Kubernetes steps against a real control plane: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler v1.20.2 with a fake kubelet
//! that marks pods Running and Ready (`tests/k8s/`, started by `.ci/run`).
//! Deployments, ReplicaSets, revisions, surge and scale-down, progress
//! deadlines, RBAC and conflicts are the real server's and controllers',
//! not kubesim's.
//!
//! They run when `RUNBOOK_TEST_KUBECONFIG` names the kubeconfig of such a
//! cluster (its admin); otherwise each says loudly that it was skipped,
//! and under CI (`CI=true`) fails instead. Each test makes its own
//! namespaces and deletes them.

use crate::common::{root, scratch, stderr, stdout};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

mod access;
mod conflict;
mod controller;
mod in_cluster;
mod proxy;
mod responses;
mod seeds;
mod steps;

/// The environment variable naming the test cluster's admin kubeconfig.
pub const KUBECONFIG_VAR: &str = "RUNBOOK_TEST_KUBECONFIG";

/// A connection to the test cluster and the namespaces one test made.
pub struct RealCluster {
    rt: tokio::runtime::Runtime,
    client: Client,
    /// The admin kubeconfig, for the runbook binary.
    pub kubeconfig: PathBuf,
    namespaces: Vec<String>,
    test: String,
}

impl RealCluster {
    /// The cluster of `RUNBOOK_TEST_KUBECONFIG`, or `None` (said loudly;
    /// a failure under CI).
    pub fn here(test: &str) -> Option<RealCluster> {
        let Some(path) = std::env::var_os(KUBECONFIG_VAR).filter(|p| !p.is_empty()) else {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI must run the real-cluster tests: set {KUBECONFIG_VAR} (.ci/run starts the control plane of tests/k8s/) ({test})"
            );
            eprintln!("SKIPPED: {test} needs a real Kubernetes API server: set {KUBECONFIG_VAR} (see tests/k8s/README.md)");
            return None;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let kubeconfig = PathBuf::from(path);
        let client = rt.block_on(async {
            let file = Kubeconfig::read_from(&kubeconfig).expect("the test kubeconfig reads");
            let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .expect("the test kubeconfig is usable");
            Client::try_from(config).expect("a client")
        });
        Some(RealCluster {
            rt,
            client,
            kubeconfig,
            namespaces: Vec::new(),
            test: test.to_string(),
        })
    }

    pub fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A new namespace of this test, deleted when the test ends.
    pub fn namespace(&mut self, label: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut name = format!("rb-{}-{}-{n}-{label}", std::process::id(), self.test)
            .replace('_', "-")
            .to_lowercase();
        name.truncate(63);
        let name = name.trim_end_matches('-').to_string();
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("a namespace");
        self.block_on(api.create(&PostParams::default(), &ns))
            .expect("creates the namespace");
        self.namespaces.push(name.clone());
        name
    }

    pub fn deployments(&self, namespace: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Creates deployment `name` (one container named like it) with
    /// `spec` merged over a plain one, and waits until it is rolled out.
    pub fn deployment(
        &self,
        namespace: &str,
        name: &str,
        replicas: i32,
        image: &str,
        spec: Value,
    ) -> Value {
        let mut d = json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": name, "image": image}]},
                },
            },
        });
        merge(&mut d, spec);
        let d: Deployment = serde_json::from_value(d).expect("a deployment");
        self.block_on(
            self.deployments(namespace)
                .create(&PostParams::default(), &d),
        )
        .expect("creates the deployment");
        self.wait_complete(namespace, name);
        self.get(namespace, name)
    }

    /// Deployment `name` (2 replicas) made at `images[0]`, then set to each
    /// next image in turn, each rolled out: one ReplicaSet per image, the
    /// revisions in that order. Returns it as it was first made.
    pub fn deployment_through(&self, namespace: &str, name: &str, images: &[&str]) -> Value {
        let first = self.deployment(namespace, name, 2, images[0], json!({}));
        for image in &images[1..] {
            self.patch(
                namespace,
                name,
                json!({"spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}}}),
            );
            self.wait_complete(namespace, name);
        }
        first
    }

    /// The deployment as the server has it, as JSON.
    pub fn get(&self, namespace: &str, name: &str) -> Value {
        let d = self
            .block_on(self.deployments(namespace).get(name))
            .expect("reads the deployment");
        serde_json::to_value(d).expect("as JSON")
    }

    /// Its ReplicaSets, oldest revision first: (revision, pod-template-hash,
    /// replicas, the template's first image).
    pub fn replica_sets(&self, namespace: &str, name: &str) -> Vec<Owned> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let list = self
            .block_on(api.list(&ListParams::default().labels(&format!("app={name}"))))
            .expect("lists the replica sets");
        let mut sets: Vec<Owned> = list
            .items
            .into_iter()
            .map(|rs| {
                let v = serde_json::to_value(rs).expect("as JSON");
                Owned {
                    revision: v["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                        .as_str()
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0),
                    hash: v["metadata"]["labels"]["pod-template-hash"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    replicas: v["spec"]["replicas"].as_i64().unwrap_or(0),
                    image: v["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                }
            })
            .collect();
        sets.sort_by_key(|s| s.revision);
        sets
    }

    pub fn patch(&self, namespace: &str, name: &str, patch: Value) {
        self.block_on(self.deployments(namespace).patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ))
        .expect("patches the deployment");
    }

    /// Checks that deployment `name`, made by [`RealCluster::deployment`]
    /// and never changed since, was restarted once as `kubectl rollout
    /// restart` does: its template carries the restart annotation, the
    /// controller made a second ReplicaSet (revision 2) that holds every
    /// replica, and the rollout is complete.
    pub fn assert_restarted(&self, namespace: &str, name: &str) {
        self.wait_complete(namespace, name);
        let d = self.get(namespace, name);
        assert!(
            d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
                .is_string(),
            "{d}"
        );
        let sets = self.replica_sets(namespace, name);
        let wanted = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let shape: Vec<(u32, i64)> = sets.iter().map(|s| (s.revision, s.replicas)).collect();
        assert_eq!(shape, [(1, 0), (2, wanted)], "{sets:#?}");
    }

    /// Waits (at most a minute) until kubectl's rule says the rollout of
    /// `name` is complete.
    pub fn wait_complete(&self, namespace: &str, name: &str) {
        self.wait(&format!("{namespace}/{name} rolled out"), || {
            complete(&self.get(namespace, name))
        });
    }

    /// Waits at most a minute for `done`.
    pub fn wait(&self, what: &str, done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "never saw: {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the real binary with this cluster's admin kubeconfig.
    pub fn runbook(&self, state: &Path, args: &[&str]) -> Output {
        self.runbook_with(state, args, &self.kubeconfig)
    }

    pub fn runbook_with(&self, state: &Path, args: &[&str], kubeconfig: &Path) -> Output {
        Command::new(env!("CARGO_BIN_EXE_runbook"))
            .arg("--state")
            .arg(state)
            .args(args)
            .env("RUNBOOK_ALLOW_AS", "1")
            .env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .current_dir(root())
            .output()
            .expect("the runbook binary starts")
    }

    /// The API server's `host:port`.
    pub fn server_address(&self) -> String {
        let admin = Kubeconfig::read_from(&self.kubeconfig).expect("reads");
        let server = admin.clusters[0]
            .cluster
            .clone()
            .and_then(|c| c.server)
            .expect("a server");
        server
            .strip_prefix("https://")
            .expect("the test cluster is served over TLS")
            .trim_end_matches('/')
            .to_string()
    }

    /// The admin's bearer token (tests/k8s/k8s-start.sh writes it on a
    /// line of its own).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(&self.kubeconfig)
            .expect("reads the test kubeconfig")
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
            .expect("the test kubeconfig's user has a token")
    }

    /// A kubeconfig for the same server and CA with another bearer token.
    pub fn kubeconfig_with_token(&self, dir: &Path, token: &str) -> PathBuf {
        self.kubeconfig_for(dir, token, "real-someone")
    }

    /// A kubeconfig for the same server and CA, `token`, and its one
    /// context named `context`.
    pub fn kubeconfig_for(&self, dir: &Path, token: &str, context: &str) -> PathBuf {
        let admin = Kubeconfig::read_from(&self.kubeconfig).expect("reads");
        let cluster = admin.clusters[0].cluster.clone().expect("a cluster");
        let server = cluster.server.expect("a server");
        let ca = cluster
            .certificate_authority
            .expect("the test kubeconfig names its CA file");
        let path = dir.join(format!("kubeconfig-{context}"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: someone\n  user:\n    token: {token}\ncontexts:\n- name: {context}\n  context:\n    cluster: real\n    user: someone\ncurrent-context: {context}\n"
            ),
        )
        .expect("writes the kubeconfig");
        path
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        for ns in std::mem::take(&mut self.namespaces) {
            let _ = self
                .rt
                .block_on(api.delete(&ns, &DeleteParams::background()));
        }
    }
}

/// One ReplicaSet of a deployment, as the tests compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub revision: u32,
    pub hash: String,
    pub replicas: i64,
    pub image: String,
}

/// The `pod-template-hash` of the ReplicaSet of `image` among `sets`.
pub fn hash_of(sets: &[Owned], image: &str) -> Option<String> {
    sets.iter()
        .find(|s| s.image == image)
        .map(|s| s.hash.clone())
}

/// kubectl's `rollout status` rule, written from its documentation
/// (`kubectl rollout status --help` and `rollout_status.go`'s messages),
/// not from runbook's code: the status has caught up with the spec, no
/// progress deadline passed, and every wanted replica is updated and
/// available with no old one left.
pub fn complete(d: &Value) -> bool {
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let meta = &d["metadata"];
    let (spec, status) = (&d["spec"], &d["status"]);
    int(&status["observedGeneration"]) >= int(&meta["generation"])
        && int(&status["updatedReplicas"]) == int(&spec["replicas"])
        && int(&status["replicas"]) == int(&status["updatedReplicas"])
        && int(&status["availableReplicas"]) == int(&status["updatedReplicas"])
}

pub fn image_of(d: &Value) -> String {
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// JSON merge (RFC 7386) of `patch` into `into`.
fn merge(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(into), Value::Object(patch)) => {
            for (k, v) in patch {
                if v.is_null() {
                    into.remove(&k);
                } else {
                    merge(into.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (into, patch) => *into = patch,
    }
}

/// Writes `text` as a runbook in a scratch directory for `test`: the
/// directory and the file.
pub fn runbook_file(test: &str, text: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(&format!("real-cluster-{test}"));
    let file = dir.join("ops.runbook");
    std::fs::write(&file, text).expect("writes the runbook");
    (dir, file)
}

pub fn report(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}
