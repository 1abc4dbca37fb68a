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
use crate::actions::postgres::Query;
use crate::actions::step::{FailureKind, StepError};
use crate::compile::action::{Check, Http, Input, Program, Verify};
use crate::compile::eval::Value;
use crate::compile::Step;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// How long a certificate check may take to connect and shake hands.
const TLS_TIMEOUT: Duration = Duration::from_secs(30);
/// What an output keeps of an HTTP body.
const BODY_OUTPUT: usize = 8 << 10;

pub(super) async fn verify_step(
    verify: &Verify,
    step: &Step,
    scope: &Scope,
    log: &Log,
    client: &reqwest::Client,
) -> Result<BTreeMap<String, String>, StepError> {
    let hold = match &verify.hold {
        Some(hold) => Some((
            scope.millis(&hold.total)?,
            scope.millis(&hold.every)?.max(1),
        )),
        None => None,
    };
    let started = tokio::time::Instant::now();
    loop {
        let sample = take(verify, step, scope, log, client).await?;
        judge(verify.expect.as_ref(), scope, &sample)?;
        match hold {
            Some((total, every)) if (started.elapsed().as_millis() as u64) < total => {
                tokio::time::sleep(Duration::from_millis(every)).await;
            }
            _ => return Ok(sample.outputs),
        }
    }
}

async fn take(
    verify: &Verify,
    step: &Step,
    scope: &Scope,
    log: &Log,
    client: &reqwest::Client,
) -> Result<Sample, StepError> {
    let expect = verify.expect.as_ref();
    match &verify.check {
        Check::Http(http) => http_sample(http, scope, log, client).await,
        Check::Prometheus { query, server } => {
            prometheus_sample(query, server.as_ref(), scope, log, client).await
        }
        Check::Certificate { target } => certificate_sample(target, scope, log).await,
        Check::Command(program) => command_sample(program, scope, log).await,
        Check::Rollout { deployment, target } => {
            super::kube::rollout_sample(deployment, target, scope, log).await
        }
        Check::Sql {
            connection,
            query,
            params,
        } => {
            let written = query;
            let query = Query {
                connection: scope.text(connection)?,
                sql: scope.text(query)?,
                params: scope.list(params.as_ref())?,
                timeout: step.timeout,
            };
            super::sql::sql_sample(&query, written, expect, log).await
        }
    }
}

async fn command_sample(program: &Program, scope: &Scope, log: &Log) -> Result<Sample, StepError> {
    let result = execute(program, scope, log).await?;
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
    http: &Http,
    scope: &Scope,
    log: &Log,
    client: &reqwest::Client,
) -> Result<Sample, StepError> {
    let method = http.method.as_str();
    let (url, secret) = scope.url(&http.url)?;
    let request = Request {
        method: method.to_string(),
        url: url.clone(),
        secret,
        headers: scope.pairs(&http.headers)?,
        body: scope.text_of(http.body.as_ref())?,
        timeout: None,
    };
    let answer = http::send(client, &request)
        .await
        .map_err(StepError::from)?;
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
    query: &Input,
    server: Option<&Input>,
    scope: &Scope,
    log: &Log,
    client: &reqwest::Client,
) -> Result<Sample, StepError> {
    let query = scope.text(query)?;
    let written = server;
    let server = match scope.text_of(written)? {
        Some(server) => server,
        None => scope
            .env_var("PROMETHEUS_URL")
            .ok_or("no Prometheus to ask: give the step `server URL`, or set PROMETHEUS_URL")?,
    };
    let value = http::prometheus(client, &server, &query, None)
        .await
        .map_err(|e| {
            // A Prometheus that cannot be reached is its `server` line's,
            // or, from PROMETHEUS_URL, no line's; a bad answer, the query's.
            let failure = StepError::from(e);
            match (failure.kind, written) {
                (FailureKind::Unreachable, Some(server)) => failure.at(server.expr.span),
                (FailureKind::Unreachable, None) => failure.nowhere(),
                _ => failure,
            }
        })?;
    log.line(false, &format!("the query's value: {value}\n"));
    Ok(Sample {
        names: BTreeMap::from([("value".to_string(), Value::Float(value))]),
        json: None,
        outputs: BTreeMap::from([("value".to_string(), value.to_string())]),
        default: Err("a `prometheus` check needs `expect`".into()),
    })
}

async fn certificate_sample(target: &Input, scope: &Scope, log: &Log) -> Result<Sample, StepError> {
    let target = scope.text(target)?;
    // A file named relative to where the run was started is read there.
    let named = scope.path(target.clone());
    let looked_at = if target.contains('/') || named.is_file() {
        named.display().to_string()
    } else {
        target.clone()
    };
    let days = crate::actions::tls::days_left(&looked_at, SystemTime::now(), TLS_TIMEOUT)
        .await
        .map_err(StepError::from)?;
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
