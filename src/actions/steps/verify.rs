//! `verify`: take a sample of one check (a program, an HTTP request, a
//! Prometheus query, a certificate), then judge it with `expect` or the
//! check's own default; with `hold`, again at every interval until the hold
//! time has passed, each sample judged.

use super::log::Log;
use super::program::{execute, outputs};
use super::sample::{excerpt_bytes, judge, Sample};
use super::scope::Scope;
use crate::actions::command::Ended;
use crate::actions::http::{self, Request};
use crate::compile::eval::Value;
use crate::compile::Step;
use crate::syntax::format;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// How long a certificate check may take to connect and shake hands.
const TLS_TIMEOUT: Duration = Duration::from_secs(30);
/// What an output keeps of an HTTP body.
const BODY_OUTPUT: usize = 8 << 10;

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
        super::kube::rollout_sample(step, scope, log).await
    } else if step.property("sql").is_some() {
        let connection = scope.text(step, "sql", 0)?.unwrap_or_default();
        let sql = scope.text(step, "sql", 1)?.unwrap_or_default();
        super::sql::sql_sample(step, scope, log, connection, sql).await
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
    let days = crate::actions::tls::days_left(&target, SystemTime::now(), TLS_TIMEOUT)
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
