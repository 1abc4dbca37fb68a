//! Where a rollout stands, by kubectl's rule, and waiting for it by polling.

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

/// Polls deployment `name` every `poll` until its rollout is complete.
/// Each new waiting message, and each transient failure ridden out, goes to
/// `on_progress`. There is no timeout here: the caller drops the future.
pub async fn wait_rollout(
    cluster: &Cluster,
    name: &str,
    poll: Duration,
    mut on_progress: impl FnMut(&str),
) -> Result<(), KubeError> {
    let api = cluster.deployments();
    let mut last = String::new();
    let mut failures = 0;
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
        if d.spec.paused == Some(true) {
            return Err(KubeError::Paused { name: name.into() });
        }
        match rollout_state(&d) {
            Rollout::Complete => return Ok(()),
            Rollout::Failed(why) => return Err(KubeError::RolloutFailed(why)),
            Rollout::Waiting(message) => {
                if message != last {
                    on_progress(&message);
                    last = message;
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
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
