//! Where a rollout stands, by kubectl's rule, and waiting for it: watched,
//! read again when a watch ends, polled where watching is refused.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;

use super::{backoff, transient, Cluster, KubeError};

/// Consecutive transient failures [`wait_rollout`] rides out before giving up.
const TRANSIENT_TRIES: u32 = 5;

/// Where a rollout stands by kubectl's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Complete,
    /// Still going, with kubectl's message.
    Waiting(String),
    /// The progress deadline passed, with kubectl's message.
    Failed(String),
}

/// kubectl's `DeploymentStatusViewer.Status`, message for message.
pub fn rollout_state(d: &Deployment) -> Rollout {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    // Until the controller has seen the latest spec, the counts describe the
    // previous one: right after a patch they would say complete.
    if d.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return Rollout::Waiting("Waiting for deployment spec update to be observed...".into());
    }
    let deadline_passed = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if deadline_passed {
        return Rollout::Failed(format!(
            "deployment {name:?} exceeded its progress deadline"
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if let Some(wanted) = d.spec.replicas {
        if updated < wanted {
            return Rollout::Waiting(format!(
                "Waiting for deployment {name:?} rollout to finish: {updated} out of {wanted} new replicas have been updated..."
            ));
        }
    }
    if replicas > updated {
        return Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    Rollout::Complete
}

/// Waits until the rollout of deployment `name` is complete: reads it, then
/// watches it (a watch on its name from the resourceVersion read), judging
/// every change as it arrives by the same rule; a broken or expired watch
/// is followed by a fresh read and a new watch, as kube-runtime's watcher
/// does. Where the server will not serve a watch (an RBAC role without
/// `watch`, a proxy that cuts streams, a simulator), it reads every `poll`
/// instead, and says so once. Each new waiting message, and each transient
/// failure ridden out, goes to `on_progress`. There is no timeout here:
/// the caller drops the future.
pub async fn wait_rollout(
    cluster: &Cluster,
    name: &str,
    poll: Duration,
    mut on_progress: impl FnMut(&str),
) -> Result<(), KubeError> {
    let api = cluster.deployments();
    let mut last = String::new();
    let mut failures = 0;
    let mut watch = Watching::Yes { broken: 0 };
    loop {
        let d = match api.get(name).await {
            Ok(d) => d,
            Err(e) if super::is_status(&e, 404) => {
                return Err(KubeError::Deleted { name: name.into() })
            }
            Err(e) if transient(&e) && failures < TRANSIENT_TRIES => {
                failures += 1;
                let pause = backoff(failures);
                on_progress(&format!(
                    "{}; trying again in {pause:?} ({failures} of {TRANSIENT_TRIES})",
                    cluster.error(e)
                ));
                tokio::time::sleep(pause).await;
                continue;
            }
            Err(e) => return Err(cluster.error(e)),
        };
        failures = 0;
        if let Some(done) = judge(name, &d, &mut last, &mut on_progress) {
            return done;
        }
        let Watching::Yes { broken } = watch else {
            tokio::time::sleep(poll).await;
            continue;
        };
        let from = d.metadata.resource_version.clone().unwrap_or_default();
        match watch_changes(&api, name, &from, &mut last, &mut on_progress).await {
            WatchEnd::Done(done) => return done,
            // Ended by the server's timeout, or expired (410 Gone): read again.
            WatchEnd::Again => watch = Watching::Yes { broken: 0 },
            WatchEnd::Broken(_) if broken + 1 < WATCH_TRIES => {
                watch = Watching::Yes { broken: broken + 1 };
                tokio::time::sleep(backoff(broken + 1)).await;
            }
            WatchEnd::Broken(why) | WatchEnd::Refused(why) => {
                on_progress(&format!(
                    "watching deployment {name} is not possible ({why}); reading it every {poll:?} instead"
                ));
                watch = Watching::No;
            }
        }
    }
}

/// Watches in a row that may break before the wait falls back to polling.
const WATCH_TRIES: u32 = 3;

#[derive(Clone, Copy)]
enum Watching {
    Yes { broken: u32 },
    No,
}

enum WatchEnd {
    Done(Result<(), KubeError>),
    Again,
    Broken(String),
    Refused(String),
}

/// What one read of the deployment decides: `Some` ends the wait.
fn judge(
    name: &str,
    d: &Deployment,
    last: &mut String,
    on_progress: &mut impl FnMut(&str),
) -> Option<Result<(), KubeError>> {
    if d.spec.paused == Some(true) {
        return Some(Err(KubeError::Paused { name: name.into() }));
    }
    match rollout_state(d) {
        Rollout::Complete => Some(Ok(())),
        Rollout::Failed(why) => Some(Err(KubeError::RolloutFailed(why))),
        Rollout::Waiting(message) => {
            if message != *last {
                on_progress(&message);
                *last = message;
            }
            None
        }
    }
}

/// One watch of deployment `name` from resourceVersion `from`, until the
/// rollout ends or the watch does.
async fn watch_changes(
    api: &kube::Api<Deployment>,
    name: &str,
    from: &str,
    last: &mut String,
    on_progress: &mut impl FnMut(&str),
) -> WatchEnd {
    use futures_util::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    // The server ends a watch after `timeout` seconds; a new one follows.
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(240);
    let stream = match api.watch(&params, from).await {
        Ok(stream) => stream,
        // 403: a role without `watch`; 405: a server that does not watch.
        Err(kube::Error::Api(status)) if matches!(status.code, 403 | 405) => {
            return WatchEnd::Refused(format!(
                "the server answered {} {}",
                status.code, status.reason
            ))
        }
        Err(e) => return WatchEnd::Broken(e.to_string()),
    };
    let began = std::time::Instant::now();
    let mut events = 0u32;
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        events += 1;
        match event {
            Ok(WatchEvent::Added(d) | WatchEvent::Modified(d)) => {
                if let Some(done) = judge(name, &d, last, on_progress) {
                    return WatchEnd::Done(done);
                }
            }
            Ok(WatchEvent::Deleted(_)) => {
                return WatchEnd::Done(Err(KubeError::Deleted { name: name.into() }))
            }
            Ok(WatchEvent::Bookmark(_)) => {}
            Ok(WatchEvent::Error(status)) if status.code == 410 => return WatchEnd::Again,
            Ok(WatchEvent::Error(status)) => return WatchEnd::Broken(status.message.clone()),
            Err(e) => return WatchEnd::Broken(e.to_string()),
        }
    }
    // A watch that ends at once with nothing in it is no watch (a proxy
    // that cuts streams): not a reason to read and watch again at once.
    if events == 0 && began.elapsed() < Duration::from_secs(1) {
        return WatchEnd::Broken("the watch ended as soon as it began".into());
    }
    WatchEnd::Again
}

/// The rollout of deployment `name` as it is now: for `verify` with
/// `rollout`, which checks once and leaves waiting to its `retry`.
pub async fn rollout_now(cluster: &Cluster, name: &str) -> Result<Rollout, KubeError> {
    let d = match cluster.deployments().get(name).await {
        Ok(d) => d,
        Err(e) if super::is_status(&e, 404) => {
            return Err(KubeError::NotFound {
                name: name.into(),
                namespace: cluster.namespace.clone(),
            })
        }
        Err(e) => return Err(cluster.error(e)),
    };
    if d.spec.paused == Some(true) {
        return Ok(Rollout::Waiting(format!("deployment {name:?} is paused")));
    }
    Ok(rollout_state(&d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(generation: i64, spec_replicas: i32, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {
                "replicas": spec_replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}},
            },
            "status": status,
        }))
        .unwrap()
    }

    fn waiting(s: &str) -> Rollout {
        Rollout::Waiting(s.to_string())
    }

    #[test]
    fn counts_mean_nothing_until_the_generation_is_observed() {
        // Right after a patch: generation 2, status still that of a complete generation 1.
        let d = deployment(
            2,
            3,
            json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            rollout_state(&d),
            waiting("Waiting for deployment spec update to be observed...")
        );
        let d = deployment(2, 3, json!({"replicas": 3}));
        assert_eq!(
            rollout_state(&d),
            waiting("Waiting for deployment spec update to be observed...")
        );
    }

    #[test]
    fn complete_when_all_updated_available_and_no_old_replicas() {
        let d = deployment(
            2,
            3,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(rollout_state(&d), Rollout::Complete);
        let d = deployment(4, 0, json!({"observedGeneration": 5}));
        assert_eq!(rollout_state(&d), Rollout::Complete);
    }

    #[test]
    fn waits_with_kubectls_messages_in_kubectls_order() {
        let d = deployment(
            2,
            3,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3}),
        );
        assert_eq!(
            rollout_state(&d),
            waiting("Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated...")
        );
        let d = deployment(
            2,
            3,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            rollout_state(&d),
            waiting("Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...")
        );
        let d = deployment(
            2,
            3,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
        );
        assert_eq!(
            rollout_state(&d),
            waiting("Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available...")
        );
    }

    #[test]
    fn a_passed_progress_deadline_fails_once_observed() {
        let condition = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
        let d = deployment(
            2,
            3,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "conditions": condition}),
        );
        assert_eq!(
            rollout_state(&d),
            Rollout::Failed("deployment \"web\" exceeded its progress deadline".into())
        );
        // A new spec not yet observed is not judged by the old deadline.
        let d = deployment(
            3,
            3,
            json!({"observedGeneration": 2, "conditions": condition}),
        );
        assert!(matches!(rollout_state(&d), Rollout::Waiting(_)));
        let progressing =
            json!([{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]);
        let d = deployment(
            2,
            3,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3, "conditions": progressing}),
        );
        assert_eq!(rollout_state(&d), Rollout::Complete);
    }
}
