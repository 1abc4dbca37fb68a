//! `notify`: a Slack-compatible webhook POST, or a PagerDuty Events v2
//! alert. Webhook URLs and routing keys are credentials: no error, log
//! line or output names more than the host.

use std::time::Duration;

/// PagerDuty's Events API v2. `PAGERDUTY_EVENTS_URL` replaces it (the EU
/// service region, or a proxy).
pub const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";

pub enum Channel {
    Webhook(String),
    PagerDuty { routing_key: String, url: String },
}

pub struct Notice<'a> {
    /// Which runbook, on which machine: with the run and the step, what
    /// tells this notice's incident from every other.
    pub runbook: &'a str,
    pub host: &'a str,
    pub message: &'a str,
    /// `info`, `warning`, `error` or `critical`.
    pub severity: &'a str,
    pub run: u64,
    pub step: &'a str,
}

/// How many times to try when the other side is down or busy (refused,
/// timed out, 429, 5xx), and the first pause between tries (doubled
/// after each).
#[derive(Debug, Clone, Copy)]
pub struct Tries {
    pub times: u32,
    pub pause: Duration,
}

impl Default for Tries {
    fn default() -> Self {
        Tries {
            times: 3,
            pause: Duration::from_secs(1),
        }
    }
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Delivers the notice; the status of the answer that accepted it.
pub async fn deliver(
    client: &reqwest::Client,
    channel: &Channel,
    notice: &Notice<'_>,
    tries: Tries,
) -> Result<u16, String> {
    let (who, url, body) = match channel {
        Channel::Webhook(url) => ("the webhook", url.as_str(), slack(notice)),
        Channel::PagerDuty { routing_key, url } => {
            ("PagerDuty", url.as_str(), pagerduty(notice, routing_key))
        }
    };
    let target = reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .map(|u| super::http::target(&u))
        .ok_or_else(|| format!("{who}'s URL is not an http:// or https:// URL"))?;
    let mut pause = tries.pause;
    let mut tried = 0;
    loop {
        tried += 1;
        let outcome = client
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .json(&body)
            .send()
            .await;
        let (transient, error) = match outcome {
            Ok(answer) if answer.status().is_success() => return Ok(answer.status().as_u16()),
            Ok(answer) => {
                let status = answer.status();
                let said = first_bytes(answer, 64 << 10).await;
                let transient = status.as_u16() == 429 || status.is_server_error();
                (
                    transient,
                    format!("{who} answered {status}{}", detail(&said)),
                )
            }
            Err(e) => (
                true,
                format!(
                    "{who} could not be reached: {}",
                    super::http::describe(&e, &target)
                ),
            ),
        };
        if !transient || tried >= tries.times.max(1) {
            let after = if tried > 1 {
                format!(" (tried {tried} times)")
            } else {
                String::new()
            };
            return Err(format!("{error}{after}"));
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// The beginning of an answer's body: a refusal is read for its reason,
/// never whole.
async fn first_bytes(mut answer: reqwest::Response, cap: usize) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = answer.chunk().await {
        body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]);
        if body.len() >= cap {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

fn slack(notice: &Notice<'_>) -> serde_json::Value {
    serde_json::json!({
        "text": format!("[{}] {}", notice.severity, notice.message),
        "severity": notice.severity,
        "step": notice.step,
        "run": notice.run,
    })
}

/// An Events v2 `trigger`. The dedup key names the machine, the runbook,
/// the run and the step, so a retried or resumed notify updates one
/// incident instead of opening another, and run 7 of another machine's
/// store opens its own.
fn pagerduty(notice: &Notice<'_>, routing_key: &str) -> serde_json::Value {
    serde_json::json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": format!(
            "runbook/{}/{}/{}/{}",
            notice.host, notice.runbook, notice.run, notice.step
        ),
        "payload": {
            "summary": notice.message.chars().take(1024).collect::<String>(),
            "source": "runbook",
            "severity": notice.severity,
            "custom_details": { "run": notice.run, "step": notice.step },
        },
    })
}

/// What PagerDuty says went wrong (`errors`), or nothing for other bodies.
fn detail(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match json["errors"].as_array() {
        Some(errors) if !errors.is_empty() => {
            let said: Vec<String> = errors
                .iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .collect();
            let said = said.join("; ");
            let cut: String = said.chars().take(500).collect();
            if cut.len() < said.len() {
                format!(": {cut}…")
            } else {
                format!(": {cut}")
            }
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::http::standin::Standin;

    /// The stand-in, answering each request with the next status of
    /// `script` (the last one repeated), at a path that must never be shown.
    async fn server(script: Vec<(u16, &'static str)>) -> (String, Standin) {
        let standin = Standin::answering(move |_, before| {
            let (status, body) = script[before.min(script.len() - 1)];
            (status, body.to_string())
        })
        .await;
        (format!("{}/x/secret-path", standin.url), standin)
    }

    fn notice() -> Notice<'static> {
        Notice {
            runbook: "dr",
            host: "ops-1",
            message: "db failover started",
            severity: "critical",
            run: 7,
            step: "page",
        }
    }

    fn quick(times: u32) -> Tries {
        Tries {
            times,
            pause: Duration::from_millis(10),
        }
    }

    #[tokio::test]
    async fn pagerduty_gets_an_events_v2_trigger_with_a_stable_dedup_key() {
        let (url, served) = server(vec![(202, r#"{"status":"success"}"#)]).await;
        let channel = Channel::PagerDuty {
            routing_key: "R0UTING-KEY".into(),
            url,
        };
        let status = deliver(&reqwest::Client::new(), &channel, &notice(), quick(1))
            .await
            .expect("accepted");
        assert_eq!(status, 202);
        let request = served.seen().remove(0);
        let body = request.split("\r\n\r\n").nth(1).expect("a body");
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(json["routing_key"], "R0UTING-KEY");
        assert_eq!(json["event_action"], "trigger");
        assert_eq!(json["dedup_key"], "runbook/ops-1/dr/7/page");
        assert_eq!(json["payload"]["severity"], "critical");
        assert_eq!(json["payload"]["summary"], "db failover started");
    }

    #[tokio::test]
    async fn a_busy_or_failing_receiver_is_tried_again() {
        let (url, served) = server(vec![(429, ""), (503, ""), (200, "")]).await;
        let status = deliver(
            &reqwest::Client::new(),
            &Channel::Webhook(url),
            &notice(),
            quick(3),
        )
        .await
        .expect("the third try is accepted");
        assert_eq!(status, 200);
        assert_eq!(served.seen().len(), 3);
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried_and_says_why_without_the_key() {
        let (url, _served) = server(vec![(
            400,
            r#"{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect"]}"#,
        )])
        .await;
        let channel = Channel::PagerDuty {
            routing_key: "R0UTING-KEY".into(),
            url,
        };
        let err = deliver(&reqwest::Client::new(), &channel, &notice(), quick(3))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "PagerDuty answered 400 Bad Request: Length of 'routing_key' is incorrect"
        );
    }

    #[tokio::test]
    async fn an_unreachable_webhook_names_the_host_only_and_how_often_it_was_tried() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port")
            .port();
        let url = format!("http://127.0.0.1:{port}/services/T000/B000/s3cret");
        let err = deliver(
            &reqwest::Client::new(),
            &Channel::Webhook(url),
            &notice(),
            quick(2),
        )
        .await
        .unwrap_err();
        assert!(
            err.starts_with(&format!(
                "the webhook could not be reached: 127.0.0.1:{port} refused the connection"
            )),
            "{err}"
        );
        assert!(err.ends_with("(tried 2 times)"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
