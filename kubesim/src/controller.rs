//! The deployment controller (and, folded in, the replica set controller and the kubelet's
//! readiness), one step per tick.
//!
//! On each tick, for every deployment:
//! 1. it observes the spec: `status.observedGeneration` becomes `metadata.generation` (so a
//!    client that reads right after a write sees the previous status);
//! 2. it finds the replica set whose template equals the deployment's (ignoring the
//!    `pod-template-hash` label) or creates one named `DEPLOYMENT-HASH`, and gives it revision
//!    max(revisions of the others)+1 when it is not already the newest (a reused replica set
//!    gets a new number, and its old one goes to `deployment.kubernetes.io/revision-history`);
//!    the deployment's `deployment.kubernetes.io/revision` follows;
//! 3. in every replica set one more pod becomes ready (unless its image is scripted never to);
//! 4. one pod moves: an old replica set's unready pod goes, or the new replica set gets a pod
//!    (at most one above `spec.replicas`), or an old replica set loses a pod while enough stay
//!    available (`maxUnavailable`, rounded down), or the new one shrinks to `spec.replicas`.
//!    The `Recreate` strategy empties the old replica sets first;
//! 5. once complete, old replica sets at zero beyond `revisionHistoryLimit` are deleted;
//! 6. status and the `Available` and `Progressing` conditions are computed as the real
//!    controller's `calculateStatus` and `syncRolloutStatus` do, `ProgressDeadlineExceeded`
//!    when no progress was made for `progressDeadlineSeconds` of simulated time.
//!
//! A paused deployment only has its status observed (`DeploymentPaused`): no replica set is
//! created, no pod moves, not even for a change of `spec.replicas`, and no deadline runs.

use serde_json::{json, Value};

use crate::faults::Faults;
use crate::store::{
    revision, template_hash, template_without_hash, Key, Kind, Store, HASH_LABEL, REVISION,
    REVISION_HISTORY,
};

/// Advances the simulated clock and syncs every deployment once.
pub fn tick(store: &mut Store, faults: &Faults, seconds: u64) {
    store.now += seconds;
    let keys: Vec<Key> = store.deployments.keys().cloned().collect();
    for key in keys {
        sync(store, faults, &key);
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// `maxSurge`/`maxUnavailable`: an int, or a percentage of `replicas` rounded down.
fn int_or_percent(v: &Value, replicas: i64, default_percent: i64) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map_or(0, |p| replicas * p / 100),
        _ => replicas * default_percent / 100,
    }
}

/// One controller pass over one deployment.
pub fn sync(store: &mut Store, faults: &Faults, key: &Key) {
    let Some(old) = store.deployments.get(key).cloned() else {
        return;
    };
    let (ns, name) = (key.0.as_str(), key.1.as_str());
    let mut d = old.clone();
    let now = store.timestamp();
    let desired = int(&d["spec"]["replicas"]);
    let paused = d["spec"]["paused"] == json!(true);
    let template = template_without_hash(&d["spec"]["template"]);
    let recreate = d["spec"]["strategy"]["type"] == "Recreate";
    // As the real `MaxUnavailable`: 0 unless the strategy is RollingUpdate.
    let max_unavailable = if recreate {
        0
    } else {
        int_or_percent(
            &d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            desired,
            25,
        )
    };
    let mut sets = store.replica_sets_of(ns, name);
    let before = sets.clone();
    let mut new_idx = sets
        .iter()
        .position(|rs| template_without_hash(&rs["spec"]["template"]) == template);
    // The condition a new or newly reused replica set sets, and whether anything moved.
    let mut event: Option<(&str, String)> = None;
    let mut progressed = false;

    if !paused {
        let max_old = sets
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_idx)
            .map(|(_, rs)| revision(rs))
            .max()
            .unwrap_or(0);
        match new_idx {
            None => {
                let rs = new_replica_set(store, &d, &template, max_old + 1);
                event = Some((
                    "NewReplicaSetCreated",
                    format!(
                        "Created new replica set {:?}",
                        rs["metadata"]["name"].as_str().unwrap_or("")
                    ),
                ));
                sets.push(rs);
                new_idx = Some(sets.len() - 1);
            }
            Some(i) if revision(&sets[i]) <= max_old => {
                let rs = &mut sets[i];
                let previous = revision(rs).to_string();
                let annotations = &mut rs["metadata"]["annotations"];
                let history = match annotations[REVISION_HISTORY].as_str() {
                    Some(h) if !h.is_empty() => format!("{h},{previous}"),
                    _ => previous,
                };
                annotations[REVISION_HISTORY] = json!(history);
                annotations[REVISION] = json!((max_old + 1).to_string());
                event = Some((
                    "FoundNewReplicaSet",
                    format!(
                        "Found new replica set {:?}",
                        rs["metadata"]["name"].as_str().unwrap_or("")
                    ),
                ));
            }
            Some(_) => {}
        }
        let new_i = new_idx.expect("a new replica set");
        let rev = revision(&sets[new_i]).to_string();
        d["metadata"]["annotations"][REVISION] = json!(rev);

        // Pods created on an earlier tick become ready, one per replica set per tick.
        for rs in sets.iter_mut() {
            let replicas = int(&rs["spec"]["replicas"]);
            let mut ready = int(&rs["status"]["readyReplicas"]).min(replicas);
            let stuck = containers(rs)
                .iter()
                .any(|image| faults.never_ready_images.contains(image));
            if ready < replicas && !stuck {
                ready += 1;
                progressed = true;
            }
            set_rs_counts(rs, replicas, ready);
        }
        progressed |= step(&mut sets, new_i, desired, max_unavailable, recreate);
        if complete_counts(&sets, new_i, desired) {
            let limit = int(&d["spec"]["revisionHistoryLimit"]);
            new_idx = Some(prune(store, ns, &mut sets, new_i, limit));
        } else {
            new_idx = Some(new_i);
        }
    }

    for rs in &sets {
        let rs_key = (
            ns.to_string(),
            rs["metadata"]["name"].as_str().unwrap_or("").to_string(),
        );
        let unchanged = before.iter().any(|b| b == rs);
        if !unchanged && store.replicasets.contains_key(&rs_key) {
            let mut rs = rs.clone();
            let old_spec = before
                .iter()
                .find(|b| b["metadata"]["name"] == rs["metadata"]["name"])
                .map(|b| b["spec"].clone());
            if old_spec.is_some_and(|s| s != rs["spec"]) {
                let generation = int(&rs["metadata"]["generation"]) + 1;
                rs["metadata"]["generation"] = json!(generation);
                rs["status"]["observedGeneration"] = json!(generation);
            }
            store.write(Kind::ReplicaSet, rs_key, rs);
        }
    }

    let new_rs = new_idx.map(|i| &sets[i]);
    let status = compute_status(
        store,
        key,
        &d,
        &sets,
        new_rs,
        event,
        progressed,
        max_unavailable,
        &now,
    );
    d["status"] = status;
    if d != old {
        store.write(Kind::Deployment, key.clone(), d);
    }
}

fn containers(rs: &Value) -> Vec<String> {
    rs["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["image"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn set_rs_counts(rs: &mut Value, replicas: i64, ready: i64) {
    rs["spec"]["replicas"] = json!(replicas);
    let status = &mut rs["status"];
    status["replicas"] = json!(replicas);
    status["fullyLabeledReplicas"] = json!(replicas);
    status["readyReplicas"] = json!(ready);
    status["availableReplicas"] = json!(ready);
}

fn counts(rs: &Value) -> (i64, i64) {
    (
        int(&rs["spec"]["replicas"]),
        int(&rs["status"]["readyReplicas"]),
    )
}

/// Moves one pod; true when one moved.
fn step(
    sets: &mut [Value],
    new_i: usize,
    desired: i64,
    max_unavailable: i64,
    recreate: bool,
) -> bool {
    let total: i64 = sets.iter().map(|rs| counts(rs).0).sum();
    let total_ready: i64 = sets.iter().map(|rs| counts(rs).1).sum();
    let (new_replicas, _) = counts(&sets[new_i]);
    let olds: Vec<usize> = (0..sets.len())
        .filter(|&i| i != new_i && counts(&sets[i]).0 > 0)
        .collect();
    let unready_old = olds
        .iter()
        .copied()
        .find(|&i| counts(&sets[i]).0 > counts(&sets[i]).1);
    // Oldest revision first, as the real controller scales old replica sets down.
    let oldest = olds.first().copied();
    let target = if let Some(i) = unready_old {
        Some((i, -1))
    } else if recreate {
        if let Some(i) = oldest {
            Some((i, -1))
        } else if new_replicas != desired {
            Some((new_i, (desired - new_replicas).signum()))
        } else {
            None
        }
    } else if new_replicas < desired && total < desired + 1 {
        Some((new_i, 1))
    } else if let Some(i) = oldest.filter(|_| total_ready > desired - max_unavailable) {
        Some((i, -1))
    } else if new_replicas > desired {
        // Scaling down is at once: the real controller sets the replica set's count.
        Some((new_i, desired - new_replicas))
    } else {
        None
    };
    let Some((i, delta)) = target else {
        return false;
    };
    let (replicas, ready) = counts(&sets[i]);
    let replicas = replicas + delta;
    set_rs_counts(&mut sets[i], replicas, ready.min(replicas));
    true
}

fn complete_counts(sets: &[Value], new_i: usize, desired: i64) -> bool {
    let (new_replicas, new_ready) = counts(&sets[new_i]);
    let total: i64 = sets.iter().map(|rs| counts(rs).0).sum();
    new_replicas == desired && new_ready == desired && total == desired
}

/// Deletes old replica sets at zero beyond the history limit, oldest revision first; returns
/// the new replica set's index afterwards.
fn prune(store: &mut Store, ns: &str, sets: &mut Vec<Value>, new_i: usize, limit: i64) -> usize {
    let new_name = sets[new_i]["metadata"]["name"].clone();
    let cleanable: Vec<String> = sets
        .iter()
        .enumerate()
        .filter(|(i, rs)| *i != new_i && counts(rs).0 == 0)
        .map(|(_, rs)| rs["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    let excess = (cleanable.len() as i64 - limit.max(0)).max(0) as usize;
    for name in cleanable.into_iter().take(excess) {
        sets.retain(|rs| rs["metadata"]["name"] != name.as_str());
        store.replicasets.remove(&(ns.to_string(), name));
    }
    sets.iter()
        .position(|rs| rs["metadata"]["name"] == new_name)
        .expect("the new replica set is never pruned")
}

fn new_replica_set(store: &mut Store, d: &Value, template: &Value, revision: u64) -> Value {
    let hash = template_hash(template);
    let ns = d["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = format!("{}-{hash}", d["metadata"]["name"].as_str().unwrap_or(""));
    let mut template = template.clone();
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = d["spec"]["selector"].clone();
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let desired = int(&d["spec"]["replicas"]);
    let surge = int_or_percent(
        &d["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        desired,
        25,
    );
    let rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": store.new_uid(),
            "creationTimestamp": store.timestamp(),
            "generation": 1,
            "labels": template["metadata"]["labels"].clone(),
            "annotations": {
                "deployment.kubernetes.io/desired-replicas": desired.to_string(),
                "deployment.kubernetes.io/max-replicas": (desired + surge.max(1)).to_string(),
                REVISION: revision.to_string(),
            },
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": d["metadata"]["name"].clone(),
                "uid": d["metadata"]["uid"].clone(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {"replicas": 0, "selector": selector, "template": template},
        "status": {"replicas": 0, "observedGeneration": 1},
    });
    store.write(Kind::ReplicaSet, (ns, name), rs)
}

#[allow(clippy::too_many_arguments)]
fn compute_status(
    store: &mut Store,
    key: &Key,
    d: &Value,
    sets: &[Value],
    new_rs: Option<&Value>,
    event: Option<(&str, String)>,
    progressed: bool,
    max_unavailable: i64,
    now: &str,
) -> Value {
    let desired = int(&d["spec"]["replicas"]);
    let sum = |field: &str| -> i64 { sets.iter().map(|rs| int(&rs["status"][field])).sum() };
    let replicas = sum("replicas");
    let available = sum("availableReplicas");
    let spec_total: i64 = sets.iter().map(|rs| int(&rs["spec"]["replicas"])).sum();
    let updated = new_rs.map_or(0, |rs| int(&rs["status"]["replicas"]));
    let mut status = json!({"observedGeneration": d["metadata"]["generation"].clone()});
    for (field, value) in [
        ("replicas", replicas),
        ("updatedReplicas", updated),
        ("readyReplicas", sum("readyReplicas")),
        ("availableReplicas", available),
        ("unavailableReplicas", (spec_total - available).max(0)),
    ] {
        if value != 0 {
            status[field] = json!(value);
        }
    }
    let mut conditions: Vec<Value> = d["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if available >= desired - max_unavailable {
        set_condition(
            &mut conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
            false,
        );
    } else {
        set_condition(
            &mut conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
            false,
        );
    }
    let rs_name = new_rs
        .and_then(|rs| rs["metadata"]["name"].as_str())
        .unwrap_or("");
    let current = conditions
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned();
    let current_reason = current
        .as_ref()
        .and_then(|c| c["reason"].as_str())
        .unwrap_or("");
    let deadline = d["spec"]["progressDeadlineSeconds"].as_u64().unwrap_or(600);
    let mut touched = false;
    if d["spec"]["paused"] == json!(true) {
        set_condition(
            &mut conditions,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            now,
            false,
        );
    } else {
        if current_reason == "DeploymentPaused" {
            set_condition(
                &mut conditions,
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed",
                now,
                false,
            );
            touched = true;
        }
        let complete = updated == desired && replicas == desired && available == desired;
        if complete {
            let msg = format!("ReplicaSet {rs_name:?} has successfully progressed.");
            set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &msg,
                now,
                false,
            );
        } else if let Some((reason, msg)) = event {
            set_condition(
                &mut conditions,
                "Progressing",
                "True",
                reason,
                &msg,
                now,
                true,
            );
            touched = true;
        } else if progressed {
            let msg = format!("ReplicaSet {rs_name:?} is progressing.");
            set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &msg,
                now,
                true,
            );
            touched = true;
        } else if current.is_some()
            && !matches!(
                current_reason,
                "NewReplicaSetAvailable" | "ProgressDeadlineExceeded"
            )
            && store.now > store.last_progress.get(key).copied().unwrap_or(store.now) + deadline
        {
            let msg = format!("ReplicaSet {rs_name:?} has timed out progressing.");
            set_condition(
                &mut conditions,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &msg,
                now,
                false,
            );
        }
    }
    if touched {
        store.last_progress.insert(key.clone(), store.now);
    }
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    status
}

/// As `SetDeploymentCondition`: a condition with the same status and reason is left as it is
/// (unless `refresh`, which the Progressing condition uses to move `lastUpdateTime` on
/// progress); `lastTransitionTime` moves only when the status changes.
fn set_condition(
    conditions: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    refresh: bool,
) {
    let existing = conditions.iter().position(|c| c["type"] == kind);
    if let Some(i) = existing {
        let c = &conditions[i];
        if c["status"] == status && c["reason"] == reason && !refresh {
            return;
        }
    }
    let transition = match existing {
        Some(i) if conditions[i]["status"] == status => conditions[i]["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let condition = json!({
        "type": kind,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    });
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}
