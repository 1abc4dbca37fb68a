//! The writes: a new image, putting a recorded template back, a restart and
//! a scale, each one request (or a few, on conflicts) the caller journals
//! around.

use std::time::Duration;

use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use super::{is_status, Cluster, KubeError};

const REVISION: &str = "deployment.kubernetes.io/revision";
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Writes under a resourceVersion precondition tried before giving up on 409s.
const CONFLICT_TRIES: u32 = 5;

/// What a deploy changes, as it was before: enough to put it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Before {
    /// `spec.template` exactly as read.
    pub template: Value,
    /// The `deployment.kubernetes.io/revision` annotation.
    pub revision: Option<String>,
    /// The container's image before.
    pub image: String,
    pub container: String,
    pub resource_version: String,
    pub generation: i64,
}

/// Reads deployment `name` and picks the container to change: `container`,
/// or the only one.
pub async fn before_deploy(
    cluster: &Cluster,
    name: &str,
    container: Option<&str>,
) -> Result<Before, KubeError> {
    let d = read_raw(cluster, name).await?;
    let template = d.data["spec"]["template"].clone();
    let (container, image) = pick_container(name, &template, container)?;
    Ok(Before {
        template,
        revision: d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION).cloned()),
        image,
        container,
        resource_version: d.metadata.resource_version.clone().unwrap_or_default(),
        generation: d.metadata.generation.unwrap_or(0),
    })
}

/// The container's name and image: the named one, or the only one.
fn pick_container(
    name: &str,
    template: &Value,
    wanted: Option<&str>,
) -> Result<(String, String), KubeError> {
    let containers: Vec<(String, String)> = template["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (text(&c["name"]), text(&c["image"]))
        })
        .collect();
    let names = || containers.iter().map(|(n, _)| n.clone()).collect();
    match (wanted, containers.as_slice()) {
        (_, []) => Err(KubeError::NoContainers { name: name.into() }),
        (None, [only]) => Ok(only.clone()),
        (None, _) => Err(KubeError::WhichContainer {
            name: name.into(),
            containers: names(),
        }),
        (Some(wanted), _) => containers
            .iter()
            .find(|(n, _)| n == wanted)
            .cloned()
            .ok_or_else(|| KubeError::NoSuchContainer {
                name: name.into(),
                container: wanted.into(),
                containers: names(),
            }),
    }
}

/// Sets the container's image with the strategic merge patch `kubectl set
/// image` sends. Returns the patched object's generation (unchanged when the
/// image already was that).
pub async fn set_image(
    cluster: &Cluster,
    name: &str,
    container: &str,
    image: &str,
) -> Result<i64, KubeError> {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}});
    let d = cluster
        .deployments()
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map_err(|e| cluster.about(name, e))?;
    Ok(d.metadata.generation.unwrap_or(0))
}

/// The `deployment.kubernetes.io/revision` annotation as it is now.
pub async fn revision(cluster: &Cluster, name: &str) -> Result<Option<String>, KubeError> {
    let d = cluster
        .deployments()
        .get(name)
        .await
        .map_err(|e| cluster.about(name, e))?;
    Ok(d.metadata.annotations.and_then(|mut a| a.remove(REVISION)))
}

/// Replaces `spec.template` with `template`, exactly, whatever happened in
/// between: a PUT of the object as read, so a write by someone else between
/// the read and the PUT is a 409 and the read is done again. Returns the new
/// generation.
/// Each conflict met is said to `on_conflict`.
pub async fn put_back(
    cluster: &Cluster,
    name: &str,
    template: &Value,
    mut on_conflict: impl FnMut(&str),
) -> Result<i64, KubeError> {
    let api = cluster.raw_deployments();
    for attempt in 1..=CONFLICT_TRIES {
        let mut d = read_raw(cluster, name).await?;
        refuse_paused(name, &d, "put its template back")?;
        d.data["spec"]["template"] = template.clone();
        match api.replace(name, &PostParams::default(), &d).await {
            Ok(d) => return Ok(d.metadata.generation.unwrap_or(0)),
            Err(e) if is_status(&e, 409) => conflicted(name, attempt, &mut on_conflict).await,
            Err(e) => return Err(cluster.about(name, e)),
        }
    }
    Err(KubeError::Conflict {
        name: name.into(),
        attempts: CONFLICT_TRIES,
    })
}

/// Sets the restart annotation of the pod template to `at`, as `kubectl
/// rollout restart` does; with the same `at` a second time nothing changes.
/// Returns the generation after.
pub async fn restart(cluster: &Cluster, name: &str, at: &str) -> Result<i64, KubeError> {
    let d = read_raw(cluster, name).await?;
    refuse_paused(name, &d, "restart it")?;
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}});
    let d = cluster
        .deployments()
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map_err(|e| cluster.about(name, e))?;
    Ok(d.metadata.generation.unwrap_or(0))
}

/// Sets `spec.replicas`; returns what it was. The patch carries the read
/// resourceVersion, so the number returned is the one replaced. Each
/// conflict met is said to `on_conflict`.
pub async fn scale(
    cluster: &Cluster,
    name: &str,
    replicas: i32,
    mut on_conflict: impl FnMut(&str),
) -> Result<i32, KubeError> {
    let api = cluster.deployments();
    for attempt in 1..=CONFLICT_TRIES {
        let d = api.get(name).await.map_err(|e| cluster.about(name, e))?;
        // The API server's default when a manifest leaves replicas out.
        let previous = d.spec.replicas.unwrap_or(1);
        let patch = json!({
            "metadata": {"resourceVersion": d.metadata.resource_version},
            "spec": {"replicas": replicas},
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(previous),
            Err(e) if is_status(&e, 409) => conflicted(name, attempt, &mut on_conflict).await,
            Err(e) => return Err(cluster.about(name, e)),
        }
    }
    Err(KubeError::Conflict {
        name: name.into(),
        attempts: CONFLICT_TRIES,
    })
}

/// How many replicas the deployment asks for now.
pub async fn replicas(cluster: &Cluster, name: &str) -> Result<i32, KubeError> {
    let d = cluster
        .deployments()
        .get(name)
        .await
        .map_err(|e| cluster.about(name, e))?;
    Ok(d.spec.replicas.unwrap_or(1))
}

async fn read_raw(cluster: &Cluster, name: &str) -> Result<DynamicObject, KubeError> {
    cluster
        .raw_deployments()
        .get(name)
        .await
        .map_err(|e| cluster.about(name, e))
}

fn refuse_paused(name: &str, d: &DynamicObject, what: &str) -> Result<(), KubeError> {
    if d.data["spec"]["paused"] == json!(true) {
        return Err(KubeError::PausedRefused {
            name: name.into(),
            what: what.into(),
        });
    }
    Ok(())
}

/// Says the conflict, then pauses a short, growing while, so two writers
/// do not keep colliding.
async fn conflicted(name: &str, attempt: u32, on_conflict: &mut impl FnMut(&str)) {
    if attempt < CONFLICT_TRIES {
        on_conflict(&format!(
            "deployment {name} changed between runbook's read and its write (409 Conflict): reading it again ({} of {CONFLICT_TRIES})",
            attempt + 1
        ));
    }
    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(containers: &[(&str, &str)]) -> Value {
        let cs: Vec<Value> = containers
            .iter()
            .map(|(n, i)| json!({"name": n, "image": i}))
            .collect();
        json!({"spec": {"containers": cs}})
    }

    #[test]
    fn the_only_container_needs_no_name() {
        let t = template(&[("web", "web:1")]);
        assert_eq!(
            pick_container("web", &t, None),
            Ok(("web".into(), "web:1".into()))
        );
    }

    #[test]
    fn several_containers_need_a_name_that_exists() {
        let t = template(&[("web", "web:1"), ("sidecar", "envoy:1")]);
        let which = pick_container("web", &t, None).unwrap_err();
        assert_eq!(
            which.to_string(),
            "deployment web has several containers (web, sidecar), so the step must name one"
        );
        assert_eq!(
            pick_container("web", &t, Some("sidecar")),
            Ok(("sidecar".into(), "envoy:1".into()))
        );
        let missing = pick_container("web", &t, Some("app")).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "deployment web has no container `app` (it has: web, sidecar)"
        );
        assert_eq!(
            pick_container("web", &json!({}), None),
            Err(KubeError::NoContainers { name: "web".into() })
        );
    }
}
