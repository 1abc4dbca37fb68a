//! The objects the simulated API server keeps, and the writes the API and the controller make.
//!
//! Every write takes the next value of one global counter as the object's
//! `metadata.resourceVersion`, as etcd's revision does for the real server. A deployment's
//! `metadata.generation` goes up only when its `spec` changes.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// An error the API answers as a Kubernetes `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details` of the `Status` (name, kind, retryAfterSeconds...), when there are any.
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(resource: &str, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{resource}.apps \"{name}\" not found"),
        )
        .with_details(json!({"name": name, "group": "apps", "kind": resource}))
    }

    /// The message the real server gives when a resourceVersion precondition fails.
    pub fn conflict(resource: &str, name: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource}.apps \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(json!({"name": name, "group": "apps", "kind": resource}))
    }

    pub fn invalid(resource: &str, name: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::new(
            422,
            "Invalid",
            format!("{resource}.apps \"{name}\" is invalid: {message}"),
        )
        .with_details(json!({"name": name, "group": "apps", "kind": resource}))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The `Status` body.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// (namespace, name)
pub type Key = (String, String);

#[derive(Clone)]
pub struct Store {
    rv: u64,
    uids: u64,
    /// Simulated seconds since the simulator started.
    pub now: u64,
    /// Unix time of the simulator's start: timestamps are `epoch + now`.
    pub epoch: u64,
    pub deployments: BTreeMap<Key, Value>,
    pub replicasets: BTreeMap<Key, Value>,
    /// When (in `now` seconds) each deployment last made progress, for its deadline.
    pub last_progress: BTreeMap<Key, u64>,
}

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const HASH_LABEL: &str = "pod-template-hash";

impl Store {
    pub fn new(epoch: u64) -> Self {
        Store {
            rv: 1000,
            uids: 0,
            now: 0,
            epoch,
            deployments: BTreeMap::new(),
            replicasets: BTreeMap::new(),
            last_progress: BTreeMap::new(),
        }
    }

    pub fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    pub fn current_rv(&self) -> String {
        self.rv.to_string()
    }

    pub fn new_uid(&mut self) -> String {
        self.uids += 1;
        format!("6b1e3c2a-0000-4000-8000-{:012x}", self.uids)
    }

    /// The simulated time as RFC 3339, as Kubernetes writes `metav1.Time`.
    pub fn timestamp(&self) -> String {
        rfc3339(self.epoch + self.now)
    }

    /// Stores a deployment (or replica set) with a new resourceVersion.
    pub fn write(&mut self, kind: Kind, key: Key, mut obj: Value) -> Value {
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.map(kind).insert(key, obj.clone());
        obj
    }

    pub fn map(&mut self, kind: Kind) -> &mut BTreeMap<Key, Value> {
        match kind {
            Kind::Deployment => &mut self.deployments,
            Kind::ReplicaSet => &mut self.replicasets,
        }
    }

    /// A new deployment from a client's body (POST).
    pub fn create_deployment(&mut self, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let name = obj["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::invalid("deployments", "", "metadata.name: Required value"))?
            .to_string();
        let key = (ns.to_string(), name.clone());
        if self.deployments.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("deployments.apps \"{name}\" already exists"),
            )
            .with_details(json!({"name": name, "group": "apps", "kind": "deployments"})));
        }
        normalize_deployment(&mut obj, &name)?;
        let uid = self.new_uid();
        let now = self.timestamp();
        let meta = &mut obj["metadata"];
        meta["namespace"] = json!(ns);
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(now);
        meta["generation"] = json!(1);
        obj["status"] = json!({});
        self.last_progress.insert(key.clone(), self.now);
        Ok(self.write(Kind::Deployment, key, obj))
    }

    /// Replaces a deployment (PUT, and PATCH once the patch is applied). The body's
    /// `metadata.resourceVersion`, when present, must be the current one; `status` and the
    /// server's own metadata are kept from the stored object.
    pub fn update_deployment(
        &mut self,
        ns: &str,
        name: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let key = (ns.to_string(), name.to_string());
        let Some(old) = self.deployments.get(&key).cloned() else {
            return Err(ApiError::not_found("deployments", name));
        };
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        }
        match obj["metadata"]["name"].as_str() {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
            _ => {}
        }
        if let Some(rv) = obj["metadata"]
            .get("resourceVersion")
            .and_then(Value::as_str)
        {
            if rv != old["metadata"]["resourceVersion"] {
                return Err(ApiError::conflict("deployments", name));
            }
        }
        normalize_deployment(&mut obj, name)?;
        for field in ["namespace", "uid", "creationTimestamp", "resourceVersion"] {
            obj["metadata"][field] = old["metadata"][field].clone();
        }
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        let spec_changed = obj["spec"] != old["spec"];
        obj["metadata"]["generation"] = json!(if spec_changed {
            generation + 1
        } else {
            generation
        });
        obj["status"] = old["status"].clone();
        if obj == old {
            // A write that changes nothing is not written (no new resourceVersion).
            return Ok(old);
        }
        Ok(self.write(Kind::Deployment, key, obj))
    }

    /// Deletes a deployment and (as the garbage collector would, here at once) its replica sets.
    pub fn delete_deployment(&mut self, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = (ns.to_string(), name.to_string());
        let old = self
            .deployments
            .remove(&key)
            .ok_or_else(|| ApiError::not_found("deployments", name))?;
        let uid = old["metadata"]["uid"].clone();
        self.replicasets.retain(|_, rs| !owned_by(rs, &uid));
        self.last_progress.remove(&key);
        self.next_rv();
        Ok(old)
    }

    /// The replica sets a deployment owns, oldest revision first.
    pub fn replica_sets_of(&self, ns: &str, name: &str) -> Vec<Value> {
        let Some(d) = self.deployments.get(&(ns.to_string(), name.to_string())) else {
            return Vec::new();
        };
        let uid = &d["metadata"]["uid"];
        let mut sets: Vec<Value> = self
            .replicasets
            .iter()
            .filter(|((n, _), rs)| n == ns && owned_by(rs, uid))
            .map(|(_, rs)| rs.clone())
            .collect();
        sets.sort_by_key(revision);
        sets
    }
}

#[derive(Clone, Copy)]
pub enum Kind {
    Deployment,
    ReplicaSet,
}

pub fn owned_by(rs: &Value, uid: &Value) -> bool {
    rs["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| &r["uid"] == uid))
}

/// `deployment.kubernetes.io/revision` of an object, 0 when absent.
pub fn revision(obj: &Value) -> u64 {
    obj["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Checks what the real validation would refuse outright, and fills the defaults the real
/// server's defaulting would (replicas, strategy, revisionHistoryLimit, progressDeadlineSeconds).
fn normalize_deployment(obj: &mut Value, name: &str) -> Result<(), ApiError> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["name"] = json!(name);
    obj["kind"] = json!("Deployment");
    obj["apiVersion"] = json!("apps/v1");
    if let Some(map) = obj["metadata"].as_object_mut() {
        map.remove("managedFields");
    }
    let spec = obj
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::invalid("deployments", name, "spec: Required value"))?;
    let selector = spec
        .get("selector")
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .cloned()
        .ok_or_else(|| {
            ApiError::invalid(
                "deployments",
                name,
                "spec.selector: Required value (kubesim supports matchLabels only)",
            )
        })?;
    let labels = spec
        .get("template")
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if selector.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        return Err(ApiError::invalid(
            "deployments",
            name,
            "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`",
        ));
    }
    let containers = spec
        .get("template")
        .and_then(|t| t.get("spec"))
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        return Err(ApiError::invalid(
            "deployments",
            name,
            "spec.template.spec.containers: Required value",
        ));
    }
    match spec.get("replicas") {
        None | Some(Value::Null) => {
            spec.insert("replicas".into(), json!(1));
        }
        Some(r) if r.as_i64().is_none_or(|r| r < 0) => {
            return Err(ApiError::invalid(
                "deployments",
                name,
                format!("spec.replicas: Invalid value: {r}: must be greater than or equal to 0"),
            ))
        }
        Some(_) => {}
    }
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
    default(
        spec,
        "strategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
    );
    if spec.get("paused") == Some(&json!(false)) {
        spec.remove("paused");
    }
    Ok(())
}

fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.into(), value);
    }
}

/// Whether `labels` match a label selector string as `labelSelector=` takes it: `k=v`,
/// `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, joined by commas.
pub fn selector_matches(selector: &str, labels: &Value) -> Result<bool, ApiError> {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    for term in split_terms(selector) {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        let ok = if let Some((k, v)) = term.split_once("!=") {
            label(k.trim()) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            label(k.trim()) == Some(v.trim())
        } else if let Some((k, set)) = split_set(term, " notin ") {
            label(k).is_none_or(|l| !set.contains(&l))
        } else if let Some((k, set)) = split_set(term, " in ") {
            label(k).is_some_and(|l| set.contains(&l))
        } else if let Some(k) = term.strip_prefix('!') {
            label(k.trim()).is_none()
        } else if term
            .chars()
            .all(|c| c.is_alphanumeric() || "-_./".contains(c))
        {
            label(term).is_some()
        } else {
            return Err(ApiError::bad_request(format!(
                "unable to parse requirement: {term}"
            )));
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn split_terms(selector: &str) -> Vec<&str> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
}

fn split_set<'a>(term: &'a str, op: &str) -> Option<(&'a str, Vec<&'a str>)> {
    let (k, rest) = term.split_once(op)?;
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some((k.trim(), inner.split(',').map(str::trim).collect()))
}

/// The `pod-template-hash` of a template, computed as the real controller does in spirit:
/// FNV-1a (32 bits) of the template, its decimal form encoded with Kubernetes'
/// `rand.SafeEncodeString` alphabet. (The real one hashes Go's printing of the struct, so the
/// values differ from a real cluster's.)
pub fn template_hash(template: &Value) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in canonical(&template_without_hash(template)).bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// A template without its `pod-template-hash` label, for comparing as `EqualIgnoreHash` does.
pub fn template_without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .get_mut("metadata")
        .and_then(|m| m.get_mut("labels"))
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    t
}

/// JSON with object keys sorted, whatever map serde_json was built with.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&map[*k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(1_735_689_600), "2025-01-01T00:00:00Z");
    }

    #[test]
    fn selectors() {
        let labels = json!({"app": "web", "tier": "front"});
        for (sel, want) in [
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app=api", false),
            ("app!=api", true),
            ("tier", true),
            ("!tier", false),
            ("app in (api, web)", true),
            ("app notin (api,web)", false),
            ("", true),
        ] {
            assert_eq!(selector_matches(sel, &labels).unwrap(), want, "{sel}");
        }
    }

    #[test]
    fn hash_ignores_the_hash_label_and_key_order() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let b = json!({"spec": {"containers": [{"image": "i", "name": "c"}]}, "metadata": {"labels": {"pod-template-hash": "x", "app": "web"}}});
        assert_eq!(template_hash(&a), template_hash(&b));
        assert!(template_hash(&a)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
