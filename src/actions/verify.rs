//! `verify`: take a sample of one check (a program, an HTTP request, a
//! Prometheus query, a certificate), then judge it with `expect` or the
//! check's own default; with `hold`, again at every interval until the hold
//! time has passed, each sample judged.

use super::command::Ended;
use super::http::{self, Request};
use super::local::{execute, outputs, Log, Scope};
use crate::compile::eval::Value;
use crate::compile::Step;
use crate::syntax::format;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// How long a certificate check may take to connect and shake hands.
const TLS_TIMEOUT: Duration = Duration::from_secs(30);
/// What an output keeps of an HTTP body.
const BODY_OUTPUT: usize = 8 << 10;

/// One sample: the names `expect` sees, what the step outputs, and how
/// a failed judgement describes it.
pub(super) struct Sample {
    pub(super) names: BTreeMap<String, Value>,
    pub(super) json: Option<serde_json::Value>,
    pub(super) outputs: BTreeMap<String, String>,
    /// Without `expect`: whether the sample passes, and if not, why.
    pub(super) default: Result<(), String>,
}

pub(super) async fn verify_step(
    step: &Step,
    scope: &Scope,
    log: &Log,
    client: &reqwest::Client,
) -> Result<BTreeMap<String, String>, String> {
    let hold = step.property("hold").and_then(|p| {
        let total = scope.eval(p.args.first()?);
        let every = scope.eval(p.args.get(2)?);
        match (total, every) {
            (Value::Duration(t), Value::Duration(e)) => Some((t, e.max(1))),
            _ => None,
        }
    });
    let started = tokio::time::Instant::now();
    loop {
        let sample = take(step, scope, log, client).await?;
        judge(step, scope, &sample)?;
        match hold {
            Some((total, every)) if (started.elapsed().as_millis() as u64) < total => {
                tokio::time::sleep(Duration::from_millis(every)).await;
            }
            _ => return Ok(sample.outputs),
        }
    }
}

async fn take(
    step: &Step,
    scope: &Scope,
    log: &Log,
    client: &reqwest::Client,
) -> Result<Sample, String> {
    if step.property("http").is_some() {
        http_sample(step, scope, log, client).await
    } else if step.property("prometheus").is_some() {
        prometheus_sample(step, scope, log, client).await
    } else if step.property("certificate").is_some() {
        certificate_sample(step, scope, log).await
    } else if step.property("command").is_some() {
        command_sample(step, scope, log).await
    } else if step.property("rollout").is_some() {
        super::cluster::rollout_sample(step, scope, log).await
    } else if step.property("sql").is_some() {
        let connection = scope.text(step, "sql", 0)?.unwrap_or_default();
        let sql = scope.text(step, "sql", 1)?.unwrap_or_default();
        super::data::sql_sample(step, scope, log, connection, sql).await
    } else {
        Err("this check does not run yet".into())
    }
}

async fn command_sample(step: &Step, scope: &Scope, log: &Log) -> Result<Sample, String> {
    let result = execute(step, scope, log).await?;
    let out = outputs(&result, log);
    let code: i64 = match result.ended {
        Ended::Exited(code) => code.into(),
        _ => -1,
    };
    let mut names = BTreeMap::from([("exit_code".to_string(), Value::Int(code))]);
    for name in ["stdout", "stderr"] {
        let text = out.get(name).cloned().unwrap_or_default();
        names.insert(name.into(), Value::Str(text));
    }
    let default = if code == 0 {
        Ok(())
    } else {
        Err(format!("the check exited with code {code}"))
    };
    Ok(Sample {
        names,
        json: None,
        outputs: out,
        default,
    })
}

async fn http_sample(
    step: &Step,
    scope: &Scope,
    log: &Log,
    client: &reqwest::Client,
) -> Result<Sample, String> {
    let method = step
        .property("http")
        .and_then(|p| p.args.first())
        .map(format::expr)
        .unwrap_or_default();
    let (url, secret) = scope.url(step, "http", 1)?.unwrap_or_default();
    let mut headers = Vec::new();
    for p in step.properties.iter().filter(|p| p.name == "header") {
        let pair = (p.args.first(), p.args.get(1));
        let (Some(name), Some(value)) = pair else {
            continue;
        };
        match (scope.eval(name).expose(), scope.eval(value).expose()) {
            (Some(n), Some(v)) => headers.push((n, v)),
            _ => return Err("a `header` value could not be worked out".into()),
        }
    }
    let request = Request {
        method: method.clone(),
        url: url.clone(),
        secret,
        headers,
        body: scope.text(step, "body", 0)?,
        timeout: None,
    };
    let answer = http::send(client, &request)
        .await
        .map_err(|e| e.to_string())?;
    let body = log.scrub(&answer.body);
    log.line(
        false,
        &format!(
            "{} {} answered {} ({} bytes{})\n",
            method.to_uppercase(),
            if secret {
                http::origin(&url)
            } else {
                http::shown_url(&url)
            },
            answer.status,
            answer.body.len(),
            if answer.cut {
                ", cut: the rest was not read"
            } else {
                ""
            }
        ),
    );
    let json = serde_json::from_str(&answer.body).ok();
    let names = BTreeMap::from([
        ("status".to_string(), Value::Int(answer.status.into())),
        ("body".to_string(), Value::Str(body.clone())),
    ]);
    let outputs = BTreeMap::from([
        ("status".to_string(), answer.status.to_string()),
        ("body".to_string(), excerpt_bytes(&body, BODY_OUTPUT)),
    ]);
    let default = if answer.status < 400 {
        Ok(())
    } else {
        Err(format!(
            "the answer was {} (expected below 400)",
            answer.status
        ))
    };
    Ok(Sample {
        names,
        json,
        outputs,
        default,
    })
}

async fn prometheus_sample(
    step: &Step,
    scope: &Scope,
    log: &Log,
    client: &reqwest::Client,
) -> Result<Sample, String> {
    let query = scope.text(step, "prometheus", 0)?.unwrap_or_default();
    let server = match scope.text(step, "server", 0)? {
        Some(server) => server,
        None => scope
            .env_var("PROMETHEUS_URL")
            .ok_or("no Prometheus to ask: give the step `server URL`, or set PROMETHEUS_URL")?,
    };
    let value = http::prometheus(client, &server, &query, None)
        .await
        .map_err(|e| e.to_string())?;
    log.line(false, &format!("the query's value: {value}\n"));
    Ok(Sample {
        names: BTreeMap::from([("value".to_string(), Value::Float(value))]),
        json: None,
        outputs: BTreeMap::from([("value".to_string(), value.to_string())]),
        default: Err("a `prometheus` check needs `expect`".into()),
    })
}

async fn certificate_sample(step: &Step, scope: &Scope, log: &Log) -> Result<Sample, String> {
    let target = scope.text(step, "certificate", 0)?.unwrap_or_default();
    let days = super::tls::days_left(&target, SystemTime::now(), TLS_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let expired = days <= 0.0;
    // Two decimals: enough for a message, without a float's noise.
    let days = (days * 100.0).round() / 100.0;
    log.line(
        false,
        &format!("{target}: the certificate expires in {days} days\n"),
    );
    let default = if !expired {
        Ok(())
    } else {
        Err(format!("the certificate expired {} days ago", -days))
    };
    Ok(Sample {
        names: BTreeMap::from([("days_left".to_string(), Value::Float(days))]),
        json: None,
        outputs: BTreeMap::from([("days_left".to_string(), days.to_string())]),
        default,
    })
}

/// `expect` on the sample, or the check's default without one.
pub(super) fn judge(step: &Step, scope: &Scope, sample: &Sample) -> Result<(), String> {
    let Some(expect) = step.property("expect").and_then(|p| p.args.first()) else {
        return sample.default.clone();
    };
    let mut bindings = scope.bindings().clone();
    bindings.values.extend(sample.names.clone());
    let written = format::expr(expect);
    match scope.eval_check(expect, &bindings, sample.json.as_ref()) {
        Value::Bool(true) => Ok(()),
        Value::Bool(false) => {
            let seen: Vec<String> = sample
                .names
                .iter()
                .filter(|(name, _)| mentions(&written, name))
                .map(|(name, value)| match value {
                    Value::Str(text) => format!("{name} was {:?}", excerpt(text)),
                    other => format!("{name} was {other}"),
                })
                .collect();
            if seen.is_empty() {
                Err(format!("expected {written}"))
            } else {
                Err(format!("expected {written}, but {}", seen.join(", ")))
            }
        }
        other => Err(format!("`expect {written}` could not be decided ({other})")),
    }
}

/// Whether `name` appears in the expression as a word, or as `json.`'s base.
fn mentions(written: &str, name: &str) -> bool {
    written
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| word == name)
}

/// The first 80 characters of a text, for messages.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn excerpt_bytes(text: &str, cap: usize) -> String {
    if text.len() <= cap {
        return text.to_string();
    }
    let mut cut = cap;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_string()
}

/// A JSON value as the language sees it: `json.a.b`.
pub(super) fn json_field(json: &serde_json::Value, path: &[&str]) -> Option<Value> {
    let mut here = json;
    for key in path {
        here = match here {
            serde_json::Value::Object(map) => map.get(*key)?,
            serde_json::Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(match here {
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        serde_json::Value::Null => return None,
        other => Value::Str(other.to_string()),
    })
}
