//! The three patch types the API server takes for a deployment.
//!
//! - `application/merge-patch+json`: RFC 7386 (objects merge, `null` removes, lists replace).
//! - `application/strategic-merge-patch+json`: like a merge patch, but the lists that Kubernetes
//!   marks `patchStrategy: merge` are merged by their key (`containers` by `name`, `ports` by
//!   `containerPort`, ...), `$patch: delete` removes a list element, `$patch: replace` replaces
//!   an object, and `$setElementOrder/...` and `$retainKeys` are accepted and ignored (new list
//!   elements go at the end).
//! - `application/json-patch+json`: RFC 6902 (add, remove, replace, move, copy, test). As in
//!   the real server (`k8s.io/apiserver/pkg/endpoints/handlers/patch.go`), an operation that
//!   fails, a failed `test` included, is answered 422 Unprocessable Entity (reason `Invalid`);
//!   a patch that is not a list of operations is 400 Bad Request.

use crate::store::ApiError;
use serde_json::{Map, Value};

pub enum PatchType {
    Merge,
    Strategic,
    Json,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Result<PatchType, ApiError> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/json-patch+json" => Ok(PatchType::Json),
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types \
                     include: application/json-patch+json, application/merge-patch+json, \
                     application/strategic-merge-patch+json (kubesim has no server-side apply); got {other:?}"
                ),
            )),
        }
    }
}

/// Applies `patch` to `target`.
pub fn apply(kind: PatchType, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            merge(target, patch);
            Ok(())
        }
        PatchType::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            strategic(target, patch);
            Ok(())
        }
        PatchType::Json => {
            let ops = patch.as_array().ok_or_else(|| {
                ApiError::bad_request("a JSON patch must be a list of operations")
            })?;
            for op in ops {
                json_op(target, op).map_err(|m| ApiError::new(422, "Invalid", m))?;
            }
            Ok(())
        }
    }
}

/// RFC 7386.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("an object");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The merge key of the lists that the pod template and object metadata merge by key.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "conditions" => "type",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

fn is_directive(key: &str) -> bool {
    key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/")
}

/// A strategic merge patch for the shapes deployments take.
pub fn strategic(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") || !target.is_object() {
        *target = strip(&Value::Object(patch.clone()));
        return;
    }
    let map = target.as_object_mut().expect("an object");
    for (k, v) in patch {
        if is_directive(k) {
            continue;
        }
        match (v, merge_key(k)) {
            (Value::Null, _) => {
                map.remove(k);
            }
            (Value::Array(items), Some(key)) => {
                let current = map.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                if !current.is_array() {
                    *current = Value::Array(Vec::new());
                }
                merge_list(current.as_array_mut().expect("an array"), items, key);
            }
            (Value::Object(_), _) => {
                strategic(map.entry(k.clone()).or_insert(Value::Null), v);
            }
            _ => {
                map.insert(k.clone(), strip(v));
            }
        }
    }
}

fn merge_list(current: &mut Vec<Value>, items: &[Value], key: &str) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *current = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip)
            .collect();
        return;
    }
    for item in items {
        let id = item.get(key);
        let found = id.and_then(|id| current.iter().position(|c| c.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (found, delete) {
            (Some(i), true) => {
                current.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic(&mut current[i], item),
            (None, false) => current.push(strip(item)),
        }
    }
}

/// A patch value without its directives, as it is stored.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, v)| !is_directive(k) && !v.is_null())
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
        other => other.clone(),
    }
}

/// One RFC 6902 operation. The messages follow evanphx/json-patch, which the real server uses.
fn json_op(doc: &mut Value, op: &Value) -> Result<(), String> {
    let name = op["op"].as_str().ok_or("missing op")?;
    let path = op["path"]
        .as_str()
        .ok_or_else(|| format!("missing path in {name} operation"))?;
    let value = || {
        op.get("value")
            .cloned()
            .ok_or(format!("missing value in {name} operation"))
    };
    match name {
        "add" => add(doc, path, value()?),
        "remove" => remove(doc, path).map(|_| ()),
        "replace" => {
            let target = pointer_mut(doc, path).ok_or_else(|| {
                format!("replace operation does not apply: doc is missing key: {path}")
            })?;
            *target = value()?;
            Ok(())
        }
        "test" => {
            let want = value()?;
            let got = doc.pointer(path).cloned().unwrap_or(Value::Null);
            if got == want {
                Ok(())
            } else {
                Err(format!("testing value {path} failed: test failed"))
            }
        }
        "move" | "copy" => {
            let from = op["from"]
                .as_str()
                .ok_or_else(|| format!("missing from in {name} operation"))?;
            let v = if name == "move" {
                remove(doc, from)?
            } else {
                doc.pointer(from).cloned().ok_or_else(|| {
                    format!("{name} operation does not apply: doc is missing from path: {from}")
                })?
            };
            add(doc, path, v)
        }
        other => Err(format!("Unexpected kind: {other}")),
    }
}

fn split(path: &str) -> Result<(&str, String), String> {
    let i = path
        .rfind('/')
        .ok_or_else(|| format!("invalid path {path:?}"))?;
    let last = path[i + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&path[..i], last))
}

fn pointer_mut<'a>(doc: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    if path.is_empty() {
        Some(doc)
    } else {
        doc.pointer_mut(path)
    }
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split(path)?;
    let missing = || format!("add operation does not apply: doc is missing path: {path:?}");
    match pointer_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) => {
            let i = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>().map_err(|_| missing())?
            };
            if i > items.len() {
                return Err(format!(
                    "add operation does not apply: index out of bounds: {path}"
                ));
            }
            items.insert(i, value);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split(path)?;
    let missing = || format!("remove operation does not apply: doc is missing path: {path:?}");
    match pointer_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(map) => map.remove(&last).ok_or_else(missing),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"metadata": {"resourceVersion": "7", "annotations": {"a": "1"}},
               "spec": {"replicas": 3, "template": {"spec": {"containers": [
                   {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}]},
                   {"name": "sidecar", "image": "proxy:1"}]}}}})
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut d = deployment();
        apply(
            PatchType::Strategic,
            &mut d,
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{"name": "web", "image": "web:2"}]}}}}),
        )
        .unwrap();
        let c = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            c[0],
            json!({"name": "web", "image": "web:2", "ports": [{"containerPort": 80}]})
        );
        assert_eq!(c[1]["image"], "proxy:1");
        apply(
            PatchType::Strategic,
            &mut d,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}),
        )
        .unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn merge_replaces_lists_and_null_removes() {
        let mut d = deployment();
        apply(
            PatchType::Merge,
            &mut d,
            &json!({"metadata": {"annotations": {"a": null, "b": "2"}},
                    "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:3"}]}}}}),
        )
        .unwrap();
        assert_eq!(d["metadata"]["annotations"], json!({"b": "2"}));
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"],
            json!([{"name": "web", "image": "web:3"}])
        );
    }

    #[test]
    fn json_patch_ops_and_a_failed_test_is_422() {
        let mut d = deployment();
        apply(
            PatchType::Json,
            &mut d,
            &json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "web:4"},
                {"op": "add", "path": "/metadata/annotations/x~1y", "value": "z"},
                {"op": "remove", "path": "/metadata/annotations/a"},
                {"op": "copy", "from": "/spec/replicas", "path": "/spec/copied"},
                {"op": "move", "from": "/spec/copied", "path": "/spec/moved"},
            ]),
        )
        .unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:4"
        );
        assert_eq!(d["metadata"]["annotations"], json!({"x/y": "z"}));
        assert_eq!(d["spec"]["moved"], 3);
        let err = apply(
            PatchType::Json,
            &mut d,
            &json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "6"}]),
        )
        .unwrap_err();
        assert_eq!((err.code, err.reason), (422, "Invalid"));
        let err = apply(PatchType::Json, &mut d, &json!({"op": "add"})).unwrap_err();
        assert_eq!(err.code, 400);
    }
}
