//! The Kubernetes actions: plain async functions over the `kube` client, for
//! the step runner to call and journal between.
//!
//! - [`connect`] finds the cluster as kubectl does: the files in `KUBECONFIG`
//!   (merged, the first file to set a key wins), else `$HOME/.kube/config`,
//!   else the service account of the pod runbook runs in. The step's context
//!   overrides `current-context`; the namespace is the step's, else the
//!   context's, else `default`. It asks the server its version, so an
//!   unreachable server or refused credentials fail here, in one sentence.
//! - [`rollout_state`] reads a Deployment by kubectl's rule
//!   (`k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go`): nothing
//!   counts until `status.observedGeneration` has reached
//!   `metadata.generation`; then a `Progressing` condition with reason
//!   `ProgressDeadlineExceeded` is a failure; then the rollout waits while
//!   fewer replicas are updated than wanted, while old replicas remain, and
//!   while fewer updated replicas are available than updated. kube's own
//!   `is_deployment_completed` is not used: it says complete right after a
//!   patch, before the controller has seen it.
//! - [`wait_rollout`] polls (no watch) until that rule says complete, fails
//!   on a failure, a pause or a delete, and rides out a few transient errors.
//! - A deploy is [`before_deploy`] (what to put back later), [`set_image`]
//!   (the strategic merge patch `kubectl set image` sends), [`wait_rollout`],
//!   then [`revision`].
//! - [`put_back`] (undo) replaces `spec.template` with the one recorded
//!   before the deploy, exactly, under a resourceVersion precondition; it
//!   needs no ReplicaSet history.
//! - [`restart`] sets the `kubectl.kubernetes.io/restartedAt` annotation to
//!   the instant the caller chose, so running it again changes nothing.
//! - [`scale`] sets `spec.replicas` and says what it was.
//!
//! No message names a token, a client key or more of the server than
//! `scheme://host:port`.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

mod deploy;
mod rollout;
#[cfg(test)]
mod tests;

pub use deploy::{before_deploy, put_back, replicas, restart, revision, scale, set_image, Before};
pub use rollout::{rollout_now, rollout_state, wait_rollout, Rollout};

/// Which cluster and namespace a step addresses; `None` takes kubectl's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub context: Option<String>,
    pub namespace: Option<String>,
}

/// A connected client and where it points.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    /// `scheme://host:port`, for messages.
    pub server: String,
    /// The kubeconfig context used (`in-cluster` for a service account), for messages.
    pub context: String,
}

impl std::fmt::Debug for Cluster {
    // The client holds credentials; only where it points is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("context", &self.context)
            .field("namespace", &self.namespace)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KubeError {
    #[error("no kubeconfig found ({looked}) and runbook is not running in a Kubernetes pod")]
    NoKubeconfig { looked: String },
    #[error("the kubeconfig {path} cannot be used: {why}")]
    Kubeconfig { path: String, why: String },
    #[error("the kubeconfig sets no current-context, so the step must name a context")]
    NoCurrentContext,
    #[error("the kubeconfig has no context named `{context}` (it has: {})", list(.known))]
    UnknownContext { context: String, known: Vec<String> },
    #[error("the in-cluster service account cannot be used: {why}")]
    InCluster { why: String },
    #[error("cannot reach the Kubernetes API server at {server}: {why}; is the cluster up and is this the right context?")]
    Unreachable { server: String, why: String },
    #[error("the Kubernetes API server at {server} refused the credentials of context {context}: {reason}: {message}")]
    Refused {
        server: String,
        context: String,
        reason: String,
        message: String,
    },
    #[error("the Kubernetes API server at {server} accepted the credentials of context {context}, but user \"{}\" may not {} {}{}: a permission (RBAC) is missing; grant it or use another context", .denied.user, .denied.verb, .denied.resource, .denied.place())]
    Forbidden {
        server: String,
        context: String,
        denied: Box<Denied>,
    },
    #[error("the Kubernetes API server at {server} answered {code} {reason}: {message}")]
    Api {
        server: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("the Kubernetes API server at {server} sent an answer runbook cannot read: {why}")]
    BadAnswer { server: String, why: String },
    #[error("deployment {name} not found in namespace {namespace}")]
    NotFound { name: String, namespace: String },
    #[error("deployment {name} has no containers in spec.template.spec")]
    NoContainers { name: String },
    #[error("deployment {name} has several containers ({}), so the step must name one", list(.containers))]
    WhichContainer {
        name: String,
        containers: Vec<String>,
    },
    #[error("deployment {name} has no container `{container}` (it has: {})", list(.containers))]
    NoSuchContainer {
        name: String,
        container: String,
        containers: Vec<String>,
    },
    #[error("deployment {name} is paused; resume it (kubectl rollout resume) or undo")]
    Paused { name: String },
    #[error("deployment {name} is paused, so runbook will not {what}; resume it first (kubectl rollout resume)")]
    PausedRefused { name: String, what: String },
    #[error("deployment {name} was deleted while its rollout was watched")]
    Deleted { name: String },
    #[error("{0}")]
    RolloutFailed(String),
    #[error("deployment {name} kept changing while runbook wrote it: {attempts} attempts met a conflict (409)")]
    Conflict { name: String, attempts: u32 },
}

/// What RBAC refused, read from the API server's 403 message (`User "U"
/// cannot VERB resource "R" in API group "G" in the namespace "N"`, the
/// authorizer's fixed wording since Kubernetes 1.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub user: String,
    pub verb: String,
    /// `deployments.apps`, kubectl's way of naming a resource of a group.
    pub resource: String,
    pub namespace: Option<String>,
}

impl Denied {
    pub fn from_message(message: &str) -> Option<Denied> {
        let quoted = |after: &str| -> Option<String> {
            let at = message.find(after)? + after.len();
            let rest = &message[at..];
            Some(rest[..rest.find('"')?].to_string())
        };
        let user = quoted("User \"")?;
        let after_user = &message[message.find(" cannot ")? + " cannot ".len()..];
        let verb = after_user.split_whitespace().next()?.to_string();
        let resource = quoted(" resource \"")?;
        let group = quoted(" in API group \"").unwrap_or_default();
        Some(Denied {
            user,
            verb,
            resource: if group.is_empty() {
                resource
            } else {
                format!("{resource}.{group}")
            },
            namespace: quoted(" in the namespace \""),
        })
    }

    fn place(&self) -> String {
        match &self.namespace {
            Some(ns) => format!(" in namespace {ns}"),
            None => " at the cluster scope".into(),
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Finds the kubeconfig or the service account, picks the context and
/// namespace, and checks that the server answers and takes the credentials.
/// `env` stands for the process environment.
pub async fn connect(
    target: &Target,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Cluster, KubeError> {
    let (config, context) = match kubeconfig(env)? {
        Some((path, kubeconfig)) => {
            let context = context_name(&kubeconfig, target.context.as_deref())?;
            let options = KubeConfigOptions {
                context: Some(context.clone()),
                ..KubeConfigOptions::default()
            };
            let config = Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| KubeError::Kubeconfig {
                    path,
                    why: kubeconfig_why(&e),
                })?;
            (config, context)
        }
        None => {
            if let Some(context) = &target.context {
                return Err(KubeError::UnknownContext {
                    context: context.clone(),
                    known: Vec::new(),
                });
            }
            let config =
                Config::incluster().map_err(|e| KubeError::InCluster { why: e.to_string() })?;
            (config, "in-cluster".to_string())
        }
    };
    let server = server_of(&config.cluster_url.to_string());
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| KubeError::Unreachable {
        server: server.clone(),
        why: transport_why(&e),
    })?;
    let cluster = Cluster {
        client,
        namespace,
        server,
        context,
    };
    cluster
        .client
        .apiserver_version()
        .await
        .map_err(|e| cluster.error(e))?;
    Ok(cluster)
}

/// kubectl's order: `KUBECONFIG`'s files that exist, else `~/.kube/config`,
/// else the pod's service account (`None`). Some: the files read (for
/// messages) and their merge.
fn kubeconfig(
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Option<(String, Kubeconfig)>, KubeError> {
    let listed = env("KUBECONFIG").filter(|v| !v.is_empty());
    let (paths, looked) = match (&listed, env("HOME")) {
        (Some(list), _) => (
            list.split(':')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>(),
            format!("KUBECONFIG={list} names no file that exists"),
        ),
        (None, Some(home)) => {
            let path = format!("{home}/.kube/config");
            (vec![path.clone()], format!("{path} does not exist"))
        }
        (None, None) => (Vec::new(), "neither KUBECONFIG nor HOME is set".into()),
    };
    // As client-go: a listed file that does not exist is skipped.
    let existing: Vec<String> = paths
        .into_iter()
        .filter(|p| std::path::Path::new(p).exists())
        .collect();
    if existing.is_empty() {
        return if env("KUBERNETES_SERVICE_HOST").is_some() {
            Ok(None)
        } else {
            Err(KubeError::NoKubeconfig { looked })
        };
    }
    let mut merged: Option<Kubeconfig> = None;
    for path in &existing {
        let bad = |e: KubeconfigError| KubeError::Kubeconfig {
            path: path.clone(),
            why: kubeconfig_why(&e),
        };
        let next = Kubeconfig::read_from(path).map_err(bad)?;
        merged = Some(match merged {
            Some(first) => first.merge(next).map_err(bad)?,
            None => next,
        });
    }
    Ok(Some((existing.join(":"), merged.unwrap_or_default())))
}

fn context_name(kubeconfig: &Kubeconfig, wanted: Option<&str>) -> Result<String, KubeError> {
    let name = match wanted {
        Some(name) => name.to_string(),
        None => kubeconfig
            .current_context
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or(KubeError::NoCurrentContext)?,
    };
    if kubeconfig.contexts.iter().any(|c| c.name == name) {
        Ok(name)
    } else {
        Err(KubeError::UnknownContext {
            context: name,
            known: kubeconfig.contexts.iter().map(|c| c.name.clone()).collect(),
        })
    }
}

/// Why a kubeconfig is unusable. A YAML error may quote the line it stopped
/// at, which may hold a token, so only its kind is said.
fn kubeconfig_why(e: &KubeconfigError) -> String {
    match e {
        KubeconfigError::Parse(_) => "it is not valid kubeconfig YAML".into(),
        KubeconfigError::ReadConfig(io, _) => io.to_string(),
        other => other.to_string(),
    }
}

/// `scheme://host:port` of the server URL: no path, no user info.
fn server_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port_or_known_default().unwrap_or(443)
        ),
        Err(_) => "(an unreadable server URL)".into(),
    }
}

/// One sentence for a failure below HTTP (connecting, TLS).
fn transport_why(e: &(dyn std::error::Error + 'static)) -> String {
    let mut texts = Vec::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::TimedOut => return "the connection timed out".into(),
                _ => {}
            }
        }
        texts.push(c.to_string());
        cause = c.source();
    }
    let all = texts.join(" ").to_lowercase();
    // kube's message for a failed credential plugin carries the plugin's
    // whole output, which may hold a token: only its first words are kept.
    if all.contains("auth exec") || all.contains("exec auth") {
        return "the kubeconfig's credential plugin (`exec`) failed; run it by hand to see why"
            .into();
    }
    if all.contains("connection refused") {
        "connection refused".into()
    } else if all.contains("dns error") || all.contains("failed to lookup address") {
        "its host name does not resolve".into()
    } else if all.contains("certificate") {
        format!(
            "the TLS handshake failed: {}",
            texts.last().map_or("", String::as_str)
        )
    } else {
        texts.last().cloned().unwrap_or_default()
    }
}

/// Whether trying the same request again later may succeed.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::SerdeError(_) => false,
        _ => true,
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == code)
}

impl Cluster {
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The same deployments as JSON, so templates keep every field the
    /// server sent, including ones k8s-openapi does not know.
    fn raw_deployments(&self) -> Api<DynamicObject> {
        let resource = ApiResource::erase::<Deployment>(&());
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
    }

    fn not_found(&self, name: &str) -> KubeError {
        KubeError::NotFound {
            name: name.to_string(),
            namespace: self.namespace.clone(),
        }
    }

    /// The error for a request about deployment `name`: 404 is its absence.
    fn about(&self, name: &str, e: kube::Error) -> KubeError {
        if is_status(&e, 404) {
            self.not_found(name)
        } else {
            self.error(e)
        }
    }

    fn error(&self, e: kube::Error) -> KubeError {
        let server = self.server.clone();
        match e {
            kube::Error::Api(status) => match status.code {
                401 => KubeError::Refused {
                    server,
                    context: self.context.clone(),
                    reason: "Unauthorized".into(),
                    message: status.message,
                },
                // The credentials were taken; a permission is missing
                // (RBAC), or the request is refused for what it asks (a
                // namespace being deleted takes nothing new).
                403 => match Denied::from_message(&status.message) {
                    Some(denied) => KubeError::Forbidden {
                        server,
                        context: self.context.clone(),
                        denied: Box::new(denied),
                    },
                    None => KubeError::Api {
                        server,
                        code: 403,
                        reason: status.reason,
                        message: status.message,
                    },
                },
                code => KubeError::Api {
                    server,
                    code,
                    reason: status.reason,
                    message: status.message,
                },
            },
            kube::Error::SerdeError(e) => KubeError::BadAnswer {
                server,
                why: e.to_string(),
            },
            other => KubeError::Unreachable {
                server,
                why: transport_why(&other),
            },
        }
    }
}

/// How long to wait before the `n`th retry (from 1): doubling from 200 ms, at most 5 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << n.saturating_sub(1).min(5)))
        .min(Duration::from_secs(5))
}
