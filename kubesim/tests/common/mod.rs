//! A small HTTP client for the tests: JSON in, (status, JSON) out.

#![allow(dead_code)]

use reqwest::Method;
use serde_json::Value;

pub const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments";
pub const RS: &str = "/apis/apps/v1/namespaces/default/replicasets";
pub const STRATEGIC: &str = "application/strategic-merge-patch+json";
pub const MERGE: &str = "application/merge-patch+json";
pub const JSON_PATCH: &str = "application/json-patch+json";

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: String) -> Client {
        Client {
            http: reqwest::Client::new(),
            base,
            token: None,
        }
    }

    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_string());
        self
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = body {
            req = req.body(serde_json::to_vec(b).unwrap());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value, headers)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.send(Method::GET, path, None, None).await;
        (s, v)
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: &Value) -> (u16, Value) {
        let (s, v, _) = self
            .send(Method::PATCH, path, Some(content_type), Some(body))
            .await;
        (s, v)
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, v, _) = self
            .send(Method::PUT, path, Some("application/json"), Some(body))
            .await;
        (s, v)
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.send(Method::DELETE, path, None, None).await;
        (s, v)
    }
}

/// The strategic merge patch `kubectl set image deployment/NAME CONTAINER=IMAGE` sends.
pub fn set_image(container: &str, image: &str) -> Value {
    serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}})
}

pub fn condition<'a>(d: &'a Value, kind: &str) -> &'a Value {
    d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

pub fn revision(obj: &Value) -> &str {
    obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .unwrap_or("")
}
