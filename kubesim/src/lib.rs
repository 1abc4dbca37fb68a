//! kubesim: a simulated Kubernetes API server for runbook's tests.
//!
//! It speaks real HTTP on `127.0.0.1` (a port of its own) so that the unchanged `kube`
//! client, or a `runbook` child process given a kubeconfig, talks to it as to a cluster. It
//! serves its own thread and tokio runtime, so it works from `#[test]` and `#[tokio::test]`
//! alike, and stops when its [`SimHandle`] is dropped.
//!
//! # What is simulated
//!
//! - `apps/v1` Deployments: get, list (all namespaces or one), create, replace (PUT), patch
//!   (strategic merge, JSON merge, and RFC 6902 JSON patch), delete; the `scale` subresource
//!   (`autoscaling/v1` Scale: get, replace, patch) and `status` (get). ReplicaSets: get and list. Lists take
//!   `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, exists, `!`exists) and a
//!   `fieldSelector` on `metadata.name`/`metadata.namespace`. `dryRun=All` writes nothing.
//! - `metadata.resourceVersion` from one global counter, new on every write (a write that
//!   changes nothing is not a write); `metadata.generation` up by one on every change of
//!   `spec`, not of status or metadata. A PUT, or a patch that sets
//!   `metadata.resourceVersion`, with a stale resourceVersion is answered 409 `Conflict`; a
//!   JSON patch whose operation fails (a `test` of `/metadata/resourceVersion`, say) 422
//!   `Invalid`, as `k8s.io/apiserver`'s patch handler answers. Errors are `Status` objects.
//! - Defaults the real server fills: `replicas` 1, `RollingUpdate` 25%/25%,
//!   `revisionHistoryLimit` 10, `progressDeadlineSeconds` 600. Validation: a `matchLabels`
//!   selector that the template's labels match, at least one container, `replicas >= 0`.
//! - The deployment controller, one step per tick of simulated time (see [`controller`]):
//!   replica sets named `DEPLOYMENT-HASH` with the `pod-template-hash` label and an owner
//!   reference, revisions as the real controller numbers them (a reused replica set gets
//!   max+1, its old number in `revision-history`), pods moving one per tick,
//!   `observedGeneration` catching up on the tick after a change, the status counts, the
//!   `Available` and `Progressing` conditions with the real reasons, `ProgressDeadlineExceeded`,
//!   `DeploymentPaused`/`DeploymentResumed`, pruning beyond `revisionHistoryLimit`.
//! - Pods listed from `/api/v1/namespaces/NS/pods` are made up from the replica sets' counts.
//! - Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/apps/v1`.
//! - Scripted faults ([`SimHandle`]): images whose pods never become ready, the next N writes
//!   to a deployment answered 409, the next N requests answered 429 (with `Retry-After`) or
//!   500, deleting or pausing a deployment from the side, a bearer token requirement (401
//!   `Unauthorized` without it); every request is recorded.
//! - [`SimHandle::rollout`], what the tests check a rollout's end against, judges from the
//!   simulated ReplicaSets (the current template's holds every replica, ready; no other holds
//!   any), not from the deployment's status by kubectl's rule as runbook does: the oracle
//!   shares no rule with what it checks. Where both are judged against a real control plane,
//!   `tests/integration/real_cluster/` is the oracle.
//!
//! # What is not
//!
//! No pods as objects (no scheduler, no kubelet, no readiness probes, no `minReadySeconds`:
//! a pod is ready one tick after it is created unless its image is scripted never to be), no
//! watches (a `watch=true` list is answered 405: clients must poll), no server-side apply, no
//! other resources or API groups, no admission, no RBAC, no TLS, no field managers, no
//! finalizers (a delete removes the deployment and its replica sets at once), no hash
//! collisions (`collisionCount`), no proportional scaling of several old replica sets, and a
//! paused deployment does not even scale. Hashes are FNV-1a of the JSON template, so replica
//! set names differ from a real cluster's. Strategic merge patch knows the merge keys of the
//! pod template's lists only, and `$setElementOrder` is ignored.

mod api;
pub mod controller;
mod faults;
pub mod patch;
pub mod store;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use faults::{lock, Faults};
pub use faults::{Failure, RecordedRequest};
use store::{ApiError, Key, Store};

/// How fast simulated time runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Real time between two controller ticks. `Duration::ZERO`: no background ticks, the test
    /// calls [`SimHandle::tick`].
    pub tick: Duration,
    /// Simulated seconds that pass at each tick (for `progressDeadlineSeconds` and timestamps).
    pub seconds_per_tick: u64,
    /// When set, every request needs `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
}

impl Default for SimConfig {
    /// A tick every 50 ms, 10 simulated seconds each (a 600 s deadline passes in 3 s).
    fn default() -> Self {
        SimConfig {
            tick: Duration::from_millis(50),
            seconds_per_tick: 10,
            token: None,
        }
    }
}

impl SimConfig {
    /// No background ticks: time moves only when the test calls [`SimHandle::tick`].
    pub fn manual() -> Self {
        SimConfig {
            tick: Duration::ZERO,
            ..SimConfig::default()
        }
    }
}

pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) faults: Faults,
    pub(crate) requests: Vec<RecordedRequest>,
}

pub(crate) type SharedRef = Arc<Mutex<Shared>>;

pub struct Sim;

impl Sim {
    /// Starts a simulator on `127.0.0.1` on a free port, in a thread with its own runtime.
    pub fn start(config: SimConfig) -> SimHandle {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("kubesim: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("kubesim: nonblocking listener");
        let addr = listener.local_addr().expect("kubesim: local address");
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let shared: SharedRef = Arc::new(Mutex::new(Shared {
            store: Store::new(epoch),
            faults: Faults {
                token: config.token.clone(),
                ..Faults::default()
            },
            requests: Vec::new(),
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let cfg = config.clone();
        let thread = std::thread::Builder::new()
            .name("kubesim".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("kubesim: runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("kubesim: listener");
                    if !cfg.tick.is_zero() {
                        let state = state.clone();
                        tokio::spawn(async move {
                            let mut interval = tokio::time::interval(cfg.tick);
                            interval
                                .set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            interval.tick().await;
                            loop {
                                interval.tick().await;
                                let mut shared = lock(&state);
                                let shared = &mut *shared;
                                controller::tick(
                                    &mut shared.store,
                                    &shared.faults,
                                    cfg.seconds_per_tick,
                                );
                            }
                        });
                    }
                    let app = api::router(state);
                    tokio::select! {
                        _ = async { axum::serve(listener, app).await } => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("kubesim: thread");
        SimHandle {
            addr,
            config,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// The running simulator. Dropping it stops the server.
pub struct SimHandle {
    addr: SocketAddr,
    config: SimConfig,
    shared: SharedRef,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where a rollout stands, as kubectl's documentation describes a finished
/// one ("the rollout is complete when all replicas are updated and
/// available and no old ones are left"; `kubectl rollout status --help`),
/// read from the simulation's own ReplicaSets rather than from the status
/// fields runbook reads: the oracle of kubesim's tests shares no rule with
/// the code it checks (the real-cluster tests are the oracle of both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Complete,
    /// Still going: what is not there yet.
    Waiting(String),
    /// The deployment's `Progressing` condition says `ProgressDeadlineExceeded`.
    Failed(String),
    NotFound,
}

/// The rollout of `key` judged from its ReplicaSets: the one whose pod
/// template is the deployment's holds every wanted replica, all of them
/// ready, and every other holds none.
fn settled(store: &store::Store, key: &store::Key) -> Rollout {
    let Some(d) = store.deployments.get(key) else {
        return Rollout::NotFound;
    };
    let deadline = d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
    if deadline && d["status"]["observedGeneration"] == d["metadata"]["generation"] {
        return Rollout::Failed(format!(
            "deployment {:?} exceeded its progress deadline",
            key.1
        ));
    }
    let wanted = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let template = store::template_without_hash(&d["spec"]["template"]);
    let sets = store.replica_sets_of(&key.0, &key.1);
    let count = |rs: &Value, field: &str| rs[field]["replicas"].as_i64().unwrap_or(0);
    let ready = |rs: &Value| rs["status"]["readyReplicas"].as_i64().unwrap_or(0);
    let Some(current) = sets
        .iter()
        .find(|rs| store::template_without_hash(&rs["spec"]["template"]) == template)
    else {
        return Rollout::Waiting("no ReplicaSet has the deployment's pod template yet".into());
    };
    let old: i64 = sets
        .iter()
        .filter(|rs| !std::ptr::eq(*rs, current))
        .map(|rs| count(rs, "spec").max(count(rs, "status")))
        .sum();
    if count(current, "spec") != wanted || ready(current) != wanted {
        Rollout::Waiting(format!(
            "{} of {wanted} replicas of the current template ready",
            ready(current)
        ))
    } else if old > 0 {
        Rollout::Waiting(format!("{old} replicas of older templates left"))
    } else {
        Rollout::Complete
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut lock(&self.shared))
    }

    /// Writes a kubeconfig (JSON, which is YAML) whose current context points at this server,
    /// with the bearer token when one is required, and `namespace` as the context's namespace.
    pub fn kubeconfig(
        &self,
        path: impl AsRef<std::path::Path>,
        namespace: &str,
    ) -> std::io::Result<()> {
        let token = self.with(|s| s.faults.token.clone());
        let user = match token {
            Some(t) => json!({"token": t}),
            None => json!({}),
        };
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubesim", "cluster": {"server": self.url()}}],
            "users": [{"name": "kubesim", "user": user}],
            "contexts": [{"name": "kubesim", "context": {"cluster": "kubesim", "user": "kubesim", "namespace": namespace}}],
            "current-context": "kubesim",
            "preferences": {},
        });
        std::fs::write(path, serde_json::to_string_pretty(&config).expect("json"))
    }

    /// Creates a deployment already rolled out: revision 1, one replica set, every replica
    /// available. Labels and selector are `app: NAME`.
    pub fn add_deployment(
        &self,
        ns: &str,
        name: &str,
        replicas: u32,
        containers: &[(&str, &str)],
    ) -> Value {
        let containers: Vec<Value> = containers
            .iter()
            .map(|(n, i)| json!({"name": n, "image": i}))
            .collect();
        self.add_deployment_object(
            ns,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "labels": {"app": name}},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}},
                },
            }),
        )
        .expect("kubesim: add_deployment")
    }

    /// Creates a deployment from a full object and rolls it out at once (no simulated time
    /// passes). Fails as a POST would.
    pub fn add_deployment_object(&self, ns: &str, obj: Value) -> Result<Value, ApiError> {
        self.with(|s| {
            let d = s.store.create_deployment(ns, obj)?;
            let key: Key = (
                ns.to_string(),
                d["metadata"]["name"].as_str().unwrap_or("").to_string(),
            );
            let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
            for _ in 0..(4 * replicas + 8) {
                controller::sync(&mut s.store, &s.faults, &key);
                if settled(&s.store, &key) == Rollout::Complete {
                    break;
                }
            }
            Ok(s.store.deployments[&key].clone())
        })
    }

    pub fn deployment(&self, ns: &str, name: &str) -> Option<Value> {
        self.with(|s| s.store.deployments.get(&(ns.into(), name.into())).cloned())
    }

    /// The replica sets the deployment owns, oldest revision first.
    pub fn replica_sets(&self, ns: &str, name: &str) -> Vec<Value> {
        self.with(|s| s.store.replica_sets_of(ns, name))
    }

    /// `spec.template` of the deployment.
    pub fn pod_template(&self, ns: &str, name: &str) -> Option<Value> {
        self.deployment(ns, name)
            .map(|d| d["spec"]["template"].clone())
    }

    /// One controller tick now (whatever `config.tick` is).
    pub fn tick(&self) {
        self.with(|s| controller::tick(&mut s.store, &s.faults, self.config.seconds_per_tick));
    }

    /// Simulated seconds since the start.
    pub fn now(&self) -> u64 {
        self.with(|s| s.store.now)
    }

    /// Pods of `image` never become ready (`false` undoes it; pods already ready stay ready).
    pub fn set_never_ready(&self, image: &str, never: bool) {
        self.with(|s| {
            if never {
                s.faults.never_ready_images.insert(image.to_string());
            } else {
                s.faults.never_ready_images.remove(image);
            }
        });
    }

    /// The next `n` writes (PUT, PATCH, DELETE, POST) to a deployment answer 409 Conflict.
    pub fn conflict_next_writes(&self, n: u32) {
        self.with(|s| s.faults.conflict_writes = n);
    }

    /// The next `n` requests, whatever they are, fail as `failure`.
    pub fn fail_next_requests(&self, n: u32, failure: Failure) {
        self.with(|s| s.faults.failures = (n > 0).then_some((n, failure)));
    }

    /// Requires `Authorization: Bearer TOKEN` from now on (`None`: no longer).
    pub fn require_token(&self, token: Option<&str>) {
        self.with(|s| s.faults.token = token.map(str::to_string));
    }

    /// Deletes a deployment (and its replica sets) from the side, as another client would.
    pub fn delete_deployment(&self, ns: &str, name: &str) -> bool {
        self.with(|s| s.store.delete_deployment(ns, name).is_ok())
    }

    /// Sets `spec.paused` as `kubectl rollout pause`/`resume` would (a spec change).
    pub fn set_paused(&self, ns: &str, name: &str, paused: bool) -> bool {
        self.with(|s| {
            let Some(mut d) = s.store.deployments.get(&(ns.into(), name.into())).cloned() else {
                return false;
            };
            d["spec"]["paused"] = json!(paused);
            s.store.update_deployment(ns, name, d).is_ok()
        })
    }

    /// Every request so far, in the order they were answered.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.with(|s| s.requests.clone())
    }

    pub fn clear_requests(&self) {
        self.with(|s| s.requests.clear());
    }

    /// Where the deployment's rollout stands, from its ReplicaSets ([`Rollout`]).
    pub fn rollout(&self, ns: &str, name: &str) -> Rollout {
        self.with(|s| settled(&s.store, &(ns.to_string(), name.to_string())))
    }

    /// Waits (blocking, polling every few ms) until the rollout is complete ([`Rollout`]);
    /// an error when it failed, the deployment is gone, or `timeout` passed. With
    /// [`SimConfig::manual`] it ticks the controller itself between polls. From an async test,
    /// call it in `spawn_blocking` when the background ticker runs.
    pub fn wait_rollout_complete(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            match self.rollout(ns, name) {
                Rollout::Complete => return Ok(()),
                Rollout::Failed(m) => return Err(m),
                Rollout::NotFound => return Err(format!("deployment {name:?} not found")),
                Rollout::Waiting(m) if start.elapsed() >= timeout => {
                    return Err(format!("timed out after {timeout:?}: {m}"))
                }
                Rollout::Waiting(_) => {
                    if self.config.tick.is_zero() {
                        self.tick();
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}
