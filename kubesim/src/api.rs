//! The HTTP API: the paths kube's `Api<Deployment>` and `Api<ReplicaSet>` use, discovery, and
//! Kubernetes `Status` bodies for every error.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;

use crate::faults::{self, lock};
use crate::patch::{self, PatchType};
use crate::store::{selector_matches, ApiError, Store};
use crate::SharedRef;

type Params = Query<HashMap<String, String>>;

pub fn router(shared: SharedRef) -> Router {
    let ns = "/apis/apps/v1/namespaces/{ns}";
    Router::new()
        .route("/version", get(version))
        .route("/api", get(|| async { ok(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})) }))
        .route("/apis", get(api_groups))
        .route("/apis/apps/v1", get(apps_resources))
        .route("/api/v1", get(core_resources))
        .route("/apis/apps/v1/deployments", get(list_all_deployments))
        .route(&format!("{ns}/deployments"), get(list_deployments).post(create))
        .route(
            &format!("{ns}/deployments/{{name}}"),
            get(get_deployment).put(replace).patch(patch_deployment).delete(delete),
        )
        .route(&format!("{ns}/deployments/{{name}}/scale"), get(get_scale).put(replace_scale).patch(patch_scale))
        .route(
            &format!("{ns}/deployments/{{name}}/status"),
            get(get_deployment),
        )
        .route(&format!("{ns}/replicasets"), get(list_replica_sets))
        .route(&format!("{ns}/replicasets/{{name}}"), get(get_replica_set))
        .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
        .fallback(faults::fallback)
        .layer(middleware::from_fn_with_state(shared.clone(), faults::middleware))
        .with_state(shared)
}

pub fn ok(v: Value) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

pub fn status_response(err: &ApiError) -> Response {
    let code = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(err.status())).into_response()
}

fn answer(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(v) => ok(v),
        Err(e) => status_response(&e),
    }
}

fn parse(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })
}

async fn version() -> Response {
    ok(json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-kubesim", "gitCommit": "kubesim",
        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64",
    }))
}

async fn api_groups() -> Response {
    let v1 = json!({"groupVersion": "apps/v1", "version": "v1"});
    ok(json!({
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": [{"name": "apps", "versions": [v1.clone()], "preferredVersion": v1}],
    }))
}

fn resource(name: &str, singular: &str, kind: &str, verbs: &[&str]) -> Value {
    json!({"name": name, "singularName": singular, "namespaced": true, "kind": kind, "verbs": verbs})
}

async fn apps_resources() -> Response {
    ok(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
        "resources": [
            resource("deployments", "deployment", "Deployment", &["create", "delete", "get", "list", "patch", "update"]),
            resource("deployments/scale", "", "Scale", &["get", "patch", "update"]),
            resource("replicasets", "replicaset", "ReplicaSet", &["get", "list"]),
        ],
    }))
}

async fn core_resources() -> Response {
    ok(json!({
        "kind": "APIResourceList", "groupVersion": "v1",
        "resources": [resource("pods", "pod", "Pod", &["list"])],
    }))
}

/// A list answer filtered by `labelSelector` and `fieldSelector` (`metadata.name=`,
/// `metadata.namespace=`). Watches are not served.
fn list(store: &Store, kind: &str, items: Vec<&Value>, q: &HashMap<String, String>) -> Response {
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return status_response(&ApiError::new(
            405,
            "MethodNotAllowed",
            "kubesim does not serve watches: poll with get or list",
        ));
    }
    let selector = q.get("labelSelector").map(String::as_str).unwrap_or("");
    let mut out = Vec::new();
    for item in items {
        match selector_matches(selector, &item["metadata"]["labels"]) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => return status_response(&e),
        }
        let fields_match = q.get("fieldSelector").is_none_or(|fs| {
            fs.split(',')
                .filter(|t| !t.is_empty())
                .all(|term| match term.split_once('=') {
                    Some((f, v)) => {
                        item["metadata"][f.trim_start_matches("metadata.")].as_str()
                            == Some(v.trim_start_matches('='))
                    }
                    None => false,
                })
        });
        if fields_match {
            out.push(item.clone());
        }
    }
    ok(json!({
        "kind": format!("{kind}List"),
        "apiVersion": "apps/v1",
        "metadata": {"resourceVersion": store.current_rv()},
        "items": out,
    }))
}

async fn list_all_deployments(State(s): State<SharedRef>, Query(q): Params) -> Response {
    let shared = lock(&s);
    list(
        &shared.store,
        "Deployment",
        shared.store.deployments.values().collect(),
        &q,
    )
}

async fn list_deployments(
    State(s): State<SharedRef>,
    Path(ns): Path<String>,
    Query(q): Params,
) -> Response {
    let shared = lock(&s);
    let items = shared
        .store
        .deployments
        .iter()
        .filter(|((n, _), _)| *n == ns)
        .map(|(_, d)| d)
        .collect();
    list(&shared.store, "Deployment", items, &q)
}

async fn list_replica_sets(
    State(s): State<SharedRef>,
    Path(ns): Path<String>,
    Query(q): Params,
) -> Response {
    let shared = lock(&s);
    let items = shared
        .store
        .replicasets
        .iter()
        .filter(|((n, _), _)| *n == ns)
        .map(|(_, d)| d)
        .collect();
    list(&shared.store, "ReplicaSet", items, &q)
}

async fn get_deployment(
    State(s): State<SharedRef>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let shared = lock(&s);
    answer(
        shared
            .store
            .deployments
            .get(&(ns, name.clone()))
            .cloned()
            .ok_or_else(|| ApiError::not_found("deployments", &name)),
    )
}

async fn get_replica_set(
    State(s): State<SharedRef>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let shared = lock(&s);
    answer(
        shared
            .store
            .replicasets
            .get(&(ns, name.clone()))
            .cloned()
            .ok_or_else(|| ApiError::not_found("replicasets", &name)),
    )
}

/// A write to a deployment: the scripted conflicts first, then `f` on the store (on a copy
/// of it for `dryRun=All`).
fn write(
    s: &SharedRef,
    q: &HashMap<String, String>,
    name: &str,
    f: impl FnOnce(&mut Store) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let mut shared = lock(s);
    if shared.faults.conflict_writes > 0 {
        shared.faults.conflict_writes -= 1;
        return Err(ApiError::conflict("deployments", name));
    }
    if q.get("dryRun").is_some_and(|d| d == "All") {
        let mut copy = shared.store.clone();
        f(&mut copy)
    } else {
        f(&mut shared.store)
    }
}

async fn create(
    State(s): State<SharedRef>,
    Path(ns): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let result = parse(&body).and_then(|obj| {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        write(&s, &q, &name, |store| store.create_deployment(&ns, obj))
    });
    match result {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => status_response(&e),
    }
}

async fn replace(
    State(s): State<SharedRef>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    answer(parse(&body).and_then(|obj| {
        write(&s, &q, &name, |store| {
            store.update_deployment(&ns, &name, obj)
        })
    }))
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn patch_deployment(
    State(s): State<SharedRef>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = PatchType::from_content_type(content_type(&headers)).and_then(|kind| {
        let patch = parse(&body)?;
        write(&s, &q, &name, |store| {
            let mut obj = store
                .deployments
                .get(&(ns.clone(), name.clone()))
                .cloned()
                .ok_or_else(|| ApiError::not_found("deployments", &name))?;
            patch::apply(kind, &mut obj, &patch)?;
            store.update_deployment(&ns, &name, obj)
        })
    });
    answer(result)
}

async fn delete(
    State(s): State<SharedRef>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    answer(write(&s, &q, &name, |store| {
        let old = store.delete_deployment(&ns, &name)?;
        Ok(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": "apps", "kind": "deployments", "uid": old["metadata"]["uid"]},
        }))
    }))
}

/// The `autoscaling/v1` `Scale` of a deployment.
fn scale_of(d: &Value) -> Value {
    let selector: Vec<String> = d["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    let meta = &d["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                     "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": d["spec"]["replicas"]},
        "status": {"replicas": d["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector.join(",")},
    })
}

async fn get_scale(
    State(s): State<SharedRef>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let shared = lock(&s);
    answer(
        shared
            .store
            .deployments
            .get(&(ns, name.clone()))
            .map(scale_of)
            .ok_or_else(|| ApiError::not_found("deployments", &name)),
    )
}

/// Sets `spec.replicas` from a Scale that a client sent or patched.
fn write_scale(
    store: &mut Store,
    ns: &str,
    name: &str,
    scale: impl FnOnce(Value) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let d = store
        .deployments
        .get(&(ns.to_string(), name.to_string()))
        .cloned()
        .ok_or_else(|| ApiError::not_found("deployments", name))?;
    let new = scale(scale_of(&d))?;
    let replicas = new["spec"]["replicas"].as_i64().unwrap_or(0);
    let mut obj = d.clone();
    obj["spec"]["replicas"] = json!(replicas);
    obj["metadata"]["resourceVersion"] = new["metadata"]["resourceVersion"].clone();
    if obj["metadata"]["resourceVersion"].is_null() {
        obj["metadata"]["resourceVersion"] = d["metadata"]["resourceVersion"].clone();
    }
    store.update_deployment(ns, name, obj).map(|d| scale_of(&d))
}

async fn replace_scale(
    State(s): State<SharedRef>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    answer(parse(&body).and_then(|sent| {
        write(&s, &q, &name, |store| {
            write_scale(store, &ns, &name, |_| Ok(sent))
        })
    }))
}

async fn patch_scale(
    State(s): State<SharedRef>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = PatchType::from_content_type(content_type(&headers)).and_then(|kind| {
        let patch = parse(&body)?;
        write(&s, &q, &name, |store| {
            write_scale(store, &ns, &name, |mut scale| {
                patch::apply(kind, &mut scale, &patch)?;
                Ok(scale)
            })
        })
    });
    answer(result)
}

/// Pods made up from the replica sets' counts: the first `readyReplicas` of each are ready.
async fn list_pods(
    State(s): State<SharedRef>,
    Path(ns): Path<String>,
    Query(q): Params,
) -> Response {
    let shared = lock(&s);
    let selector = q.get("labelSelector").map(String::as_str).unwrap_or("");
    let mut pods = Vec::new();
    for ((n, rs_name), rs) in &shared.store.replicasets {
        let labels = &rs["spec"]["template"]["metadata"]["labels"];
        match selector_matches(selector, labels) {
            Ok(true) if *n == ns => {}
            Ok(_) => continue,
            Err(e) => return status_response(&e),
        }
        let ready = rs["status"]["readyReplicas"].as_i64().unwrap_or(0);
        for i in 0..rs["spec"]["replicas"].as_i64().unwrap_or(0) {
            let is_ready = i < ready;
            let flag = if is_ready { "True" } else { "False" };
            let spec = &rs["spec"]["template"]["spec"];
            let statuses: Vec<Value> = spec["containers"].as_array().into_iter().flatten().map(|c| json!({
                "name": c["name"], "image": c["image"], "imageID": "", "ready": is_ready, "restartCount": 0,
                "started": is_ready,
                "state": if is_ready { json!({"running": {}}) } else { json!({"waiting": {"reason": "ContainerCreating"}}) },
            })).collect();
            pods.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("{rs_name}-{}", pod_suffix(i)), "namespace": ns, "labels": labels,
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                                                  "uid": rs["metadata"]["uid"], "controller": true}]},
                "spec": spec,
                "status": {"phase": if is_ready { "Running" } else { "Pending" },
                           "conditions": [{"type": "Ready", "status": flag}], "containerStatuses": statuses},
            }));
        }
    }
    ok(
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": shared.store.current_rv()}, "items": pods}),
    )
}

fn pod_suffix(i: i64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = i as usize * 7919 + 12345;
    (0..5)
        .map(|_| {
            let c = ALPHABET[n % ALPHABET.len()] as char;
            n /= ALPHABET.len();
            c
        })
        .collect()
}
