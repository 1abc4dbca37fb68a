//! HTTP checks and Prometheus queries, through one reqwest client (rustls).
//!
//! A URL may carry a token (in its query, or as user info): no error here
//! names more of it than the host and port. A body is read up to a cap and
//! the rest is left unread, so a 1 GB answer costs a megabyte.

use std::time::Duration;

/// What a check keeps of a body; the rest is not downloaded.
pub const BODY_CAP: usize = 1 << 20;
/// How long one request may take when the step sets no shorter timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `get`, `head`, `post`, `put`, `patch` or `delete`.
    pub method: String,
    pub url: String,
    /// The URL is a secret: messages show only its scheme, host and port.
    pub secret: bool,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The first `BODY_CAP` bytes of the body, as text.
    pub body: String,
    /// Whether the body went on beyond the cap.
    pub cut: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("`{0}` is not a URL runbook can request (it needs http:// or https:// and a host)")]
    BadUrl(String),
    #[error("`{0}` is not an HTTP method runbook knows")]
    BadMethod(String),
    #[error("header `{0}` cannot be sent: its name or value holds characters HTTP does not allow")]
    BadHeader(String),
    #[error("{0}")]
    Failed(String),
}

/// Sends the request and reads up to `BODY_CAP` bytes of the answer.
pub async fn send(client: &reqwest::Client, request: &Request) -> Result<Answer, HttpError> {
    let url = reqwest::Url::parse(&request.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| {
            HttpError::BadUrl(if request.secret {
                origin(&request.url)
            } else {
                shown_url(&request.url)
            })
        })?;
    let target = target(&url);
    let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| HttpError::BadMethod(request.method.clone()))?;
    // The client drops `Authorization` and cookies when a redirect leads to
    // another host, but not a header of the step's own (`X-Api-Key`), which
    // may hold a secret: a request with such headers follows redirects only
    // within its own origin.
    let client = if request.headers.is_empty() {
        client
    } else {
        same_origin_client()
    };
    let mut builder = client
        .request(method, url)
        .timeout(request.timeout.unwrap_or(REQUEST_TIMEOUT));
    for (name, value) in &request.headers {
        let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
            && reqwest::header::HeaderValue::from_str(value).is_ok();
        if !valid {
            return Err(HttpError::BadHeader(name.clone()));
        }
        builder = builder.header(name, value);
    }
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    let mut answer = builder
        .send()
        .await
        .map_err(|e| HttpError::Failed(describe(&e, &target)))?;
    let status = answer.status().as_u16();
    let mut body = Vec::new();
    let mut cut = false;
    loop {
        match answer.chunk().await {
            Ok(Some(chunk)) => {
                let room = BODY_CAP - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    cut = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(HttpError::Failed(describe(&e, &target))),
        }
    }
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        cut,
    })
}

/// A client that follows a redirect only to the same scheme, host and port
/// (or from http to https on the same host), and otherwise fails the
/// request, naming only the host it was sent to.
fn same_origin_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            let Some(first) = attempt.previous().first() else {
                return attempt.follow();
            };
            let next = attempt.url();
            // http://host to https://host on the default ports only.
            let upgrade = first.scheme() == "http"
                && next.scheme() == "https"
                && first.port_or_known_default() == Some(80)
                && next.port_or_known_default() == Some(443);
            let same = first.host_str() == next.host_str()
                && (first.origin() == next.origin() || upgrade);
            if attempt.previous().len() >= 10 {
                attempt.error("it redirected more than 10 times")
            } else if same {
                attempt.follow()
            } else {
                let to = target(next);
                attempt.error(format!(
                    "it redirected to {to}, another server; runbook does not follow, so that the step's headers are sent only where the step says"
                ))
            }
        });
        // No idle connections kept: the client outlives any one runtime
        // (tests make several), and a pooled connection belongs to one.
        reqwest::Client::builder()
            .redirect(policy)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default()
    })
}

/// `host:port` of a URL: what errors may show of it.
pub(super) fn target(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// A URL that is (or may be) a secret, as messages show it: its scheme,
/// host and port only (a Prometheus server's URL is taken as one).
pub fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) if parsed.host_str().is_some() => {
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{port}",
                parsed.scheme(),
                parsed.host_str().unwrap_or_default()
            )
        }
        _ => "(not a URL)".into(),
    }
}

/// A URL shown without what may be a credential: no user info, no query,
/// no fragment; text that is not a URL at all is not shown. Text with an
/// `@` that does not parse as a URL is not shown either: its user info
/// cannot be told apart from the rest (`http://admin:Pw#x@host`). (A URL
/// that is a secret also has its path and query hidden by the masks.)
pub fn shown_url(url: &str) -> String {
    if url.contains('@') {
        return match reqwest::Url::parse(url) {
            Ok(parsed) if parsed.host_str().is_some() => {
                let mut shown = parsed.clone();
                let _ = shown.set_username("");
                let _ = shown.set_password(None);
                shown.set_query(None);
                shown.set_fragment(None);
                shown.to_string().trim_end_matches('/').to_string()
            }
            _ => "(not a URL)".into(),
        };
    }
    let head = url.split(['?', '#']).next().unwrap_or_default();
    match head.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
            let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
            if path.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => "(not a URL)".to_string(),
    }
}

/// One sentence for a failed request, naming only `target`.
pub(super) fn describe(e: &reqwest::Error, target: &str) -> String {
    let mut causes = String::new();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        causes.push_str(&c.to_string().to_lowercase());
        causes.push(' ');
        cause = c.source();
    }
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    if e.is_timeout() {
        format!("{target} did not answer in time")
    } else if causes.contains("dns error") || causes.contains("failed to lookup address") {
        format!("the host name `{host}` could not be resolved (DNS)")
    } else if causes.contains("connection refused") {
        format!("{target} refused the connection; is the service listening there?")
    } else if causes.contains("certificate") || causes.contains("tls") {
        format!("the TLS handshake with {target} failed: {}", causes.trim())
    } else if e.is_connect() {
        format!("cannot connect to {target}: {}", causes.trim())
    } else if e.is_body() || e.is_decode() {
        format!("the answer from {target} broke off: {}", causes.trim())
    } else {
        format!("the request to {target} failed: {}", causes.trim())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PromError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("Prometheus answered {status}: {error}")]
    Refused { status: u16, error: String },
    #[error("the answer is not Prometheus's query API JSON: {0}")]
    NotProm(String),
    #[error("the query returned no series, so there is no value to check (wrap it in `sum(...) or vector(0)` if none means zero)")]
    Empty,
    #[error("the query returned {0} series; `expect value` needs one (aggregate with sum(), max(), ...)")]
    Many(usize),
    #[error("the query's value `{0}` is not a number")]
    NotANumber(String),
}

/// An instant query (`/api/v1/query`): the one number it returns.
pub async fn prometheus(
    client: &reqwest::Client,
    server: &str,
    query: &str,
    timeout: Option<Duration>,
) -> Result<f64, PromError> {
    let mut url = reqwest::Url::parse(server)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| HttpError::BadUrl(origin(server)))?;
    url.path_segments_mut()
        .map_err(|_| HttpError::BadUrl(origin(server)))?
        .pop_if_empty()
        .extend(["api", "v1", "query"]);
    url.query_pairs_mut().append_pair("query", query);
    let answer = send(
        client,
        &Request {
            method: "get".into(),
            url: url.to_string(),
            timeout,
            ..Request::default()
        },
    )
    .await?;
    instant_value(&answer)
}

/// The number in an instant query's answer: a scalar, or a vector of one sample.
fn instant_value(answer: &Answer) -> Result<f64, PromError> {
    let json: serde_json::Value = serde_json::from_str(&answer.body).map_err(|_| {
        if answer.status >= 400 {
            PromError::Refused {
                status: answer.status,
                error: first_line(&answer.body),
            }
        } else {
            PromError::NotProm(first_line(&answer.body))
        }
    })?;
    if json["status"] != "success" {
        return Err(PromError::Refused {
            status: answer.status,
            error: json["error"]
                .as_str()
                .map_or_else(|| first_line(&answer.body), str::to_string),
        });
    }
    let data = &json["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let series = data["result"]
                .as_array()
                .ok_or_else(|| PromError::NotProm("`data.result` is not a list".into()))?;
            match series.as_slice() {
                [] => return Err(PromError::Empty),
                [one] => &one["value"],
                many => return Err(PromError::Many(many.len())),
            }
        }
        other => {
            return Err(PromError::NotProm(format!(
                "result type {}, where an instant query gives a vector or a scalar",
                other.unwrap_or("missing")
            )))
        }
    };
    let text = sample[1]
        .as_str()
        .ok_or_else(|| PromError::NotProm("a sample is not [time, \"value\"]".into()))?;
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(PromError::NotANumber(text.to_string())),
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod standin;
#[cfg(test)]
mod tests;
