//! Faults a test scripts while the server runs, the bearer token, and the record of requests.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::BTreeSet;

use crate::api::status_response;
use crate::store::ApiError;
use crate::Shared;

/// How the next requests fail, whatever they ask (see [`crate::SimHandle::fail_next_requests`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 Too Many Requests with `Retry-After: SECONDS` (and `details.retryAfterSeconds`), as
    /// the API server's priority and fairness answers when it sheds load.
    TooManyRequests { retry_after_secs: u64 },
    /// 500 Internal Server Error (reason `InternalError`).
    ServerError,
}

#[derive(Default)]
pub struct Faults {
    /// Pods of these images never become ready.
    pub never_ready_images: BTreeSet<String>,
    /// The next this many writes (PUT, PATCH, DELETE) to a deployment answer 409 Conflict.
    pub conflict_writes: u32,
    /// The next `.0` requests fail as `.1`.
    pub failures: Option<(u32, Failure)>,
    /// When set, requests need `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
}

/// One request as the simulator received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path with its query string, e.g. `/apis/apps/v1/namespaces/ns/replicasets?labelSelector=app%3Dweb`.
    pub path: String,
    pub content_type: Option<String>,
    pub body: String,
    /// The status code of the answer.
    pub status: u16,
}

const MAX_BODY: usize = 8 * 1024 * 1024;

/// Records the request, then answers from the faults (401, 429, 500) or passes it on.
pub async fn middleware(
    State(shared): State<crate::SharedRef>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return status_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                "body too large",
            ))
        }
    };
    let method = parts.method.to_string();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.to_string());
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body_text = String::from_utf8_lossy(&bytes).into_owned();

    let early = {
        let mut shared = lock(&shared);
        let faults = &mut shared.faults;
        let unauthorized = faults
            .token
            .as_ref()
            .is_some_and(|t| authorization.as_deref() != Some(format!("Bearer {t}").as_str()));
        if unauthorized {
            Some(status_response(&ApiError::new(
                401,
                "Unauthorized",
                "Unauthorized",
            )))
        } else if let Some((n, failure)) = faults.failures {
            faults.failures = (n > 1).then_some((n - 1, failure));
            Some(failure_response(failure))
        } else {
            None
        }
    };
    let response = match early {
        Some(r) => r,
        None => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    };
    lock(&shared).requests.push(RecordedRequest {
        method,
        path,
        content_type,
        body: body_text,
        status: response.status().as_u16(),
    });
    response
}

fn failure_response(failure: Failure) -> Response {
    match failure {
        Failure::TooManyRequests { retry_after_secs } => {
            let err = ApiError::new(
                429,
                "TooManyRequests",
                "The server has received too many requests and has asked us to try again later",
            )
            .with_details(json!({"retryAfterSeconds": retry_after_secs}));
            let mut response = status_response(&err);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&retry_after_secs.to_string()).expect("digits"),
            );
            response
        }
        Failure::ServerError => status_response(&ApiError::new(
            500,
            "InternalError",
            "Internal error occurred: kubesim was told to fail this request",
        )),
    }
}

/// The state's lock; a test that panicked while holding it does not poison the others.
pub fn lock(shared: &crate::SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Not found, for paths the simulator does not serve.
pub async fn fallback() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
            .status(),
        ),
    )
        .into_response()
}
