use super::*;

use super::standin::{response as ok, Standin};

/// The stand-in, answering every request with `answer(request)`.
async fn serve(answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Standin {
    Standin::raw(move |request, _| answer(request)).await
}

fn get(url: &str) -> Request {
    Request {
        method: "get".into(),
        url: url.into(),
        ..Request::default()
    }
}

#[tokio::test]
async fn an_answer_has_its_status_and_body() {
    let server = serve(|_| ok(503, "{\"status\":\"Degraded\"}")).await;
    let answer = send(
        &reqwest::Client::new(),
        &get(&format!("{}/health", server.url)),
    )
    .await
    .expect("answers");
    assert_eq!(answer.status, 503);
    assert_eq!(answer.body, "{\"status\":\"Degraded\"}");
    assert!(!answer.cut);
}

#[tokio::test]
async fn headers_and_body_are_sent_as_given() {
    let server = serve(|_| ok(200, "")).await;
    let request = Request {
        method: "post".into(),
        url: format!("{}/health/cache", server.url),
        headers: vec![("Authorization".into(), "Bearer t0ken".into())],
        body: Some("{\"deep\": true}".into()),
        timeout: None,
        secret: false,
    };
    send(&reqwest::Client::new(), &request)
        .await
        .expect("answers");
    let seen = server.seen()[0].clone();
    assert!(
        seen.starts_with("POST /health/cache HTTP/1.1\r\n"),
        "{seen}"
    );
    assert!(
        seen.to_lowercase().contains("authorization: bearer t0ken"),
        "{seen}"
    );
    assert!(seen.ends_with("{\"deep\": true}"), "{seen}");
}

#[tokio::test]
async fn a_request_with_its_own_headers_follows_no_redirect_to_another_server() {
    let other = serve(|_| ok(200, "")).await;
    // The same port on another name: another origin.
    let elsewhere = other.url.replace("127.0.0.1", "localhost");
    let redirecting = serve(move |request| {
        let to = if request.starts_with("GET /here ") {
            "/there".to_string()
        } else if request.starts_with("GET /there ") {
            return ok(200, "arrived");
        } else {
            format!("{elsewhere}/steal")
        };
        format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").into_bytes()
    })
    .await;
    let with_key = |path: &str| Request {
        headers: vec![("X-Api-Key".into(), "k3y-s3cret".into())],
        ..get(&format!("{}{path}", redirecting.url))
    };
    let e = send(&reqwest::Client::new(), &with_key("/away"))
        .await
        .expect_err("not followed");
    assert!(e.to_string().contains("redirected to localhost:"), "{e}");
    assert!(!e.to_string().contains("k3y"), "{e}");
    assert!(other.seen().is_empty(), "the key went elsewhere");
    // Within the same server, redirects are followed with the header.
    let answer = send(&reqwest::Client::new(), &with_key("/here"))
        .await
        .expect("followed");
    assert_eq!(answer.body, "arrived");
    let seen = redirecting.seen();
    assert!(seen
        .last()
        .expect("a request")
        .to_lowercase()
        .contains("x-api-key: k3y-s3cret"));
}

#[tokio::test]
async fn a_huge_body_is_cut_at_the_cap_without_reading_the_rest() {
    // Announces a gigabyte, sends 8 MB: the check keeps 1 MiB and stops.
    let server = serve(|_| {
        let mut answer = b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n".to_vec();
        answer.extend(std::iter::repeat_n(b'x', 8 << 20));
        answer
    })
    .await;
    let answer = send(&reqwest::Client::new(), &get(&server.url))
        .await
        .expect("answers");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), BODY_CAP);
    assert!(answer.cut);
}

#[tokio::test]
async fn a_refused_connection_names_host_and_port_and_no_token() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        listener.local_addr().expect("address").port()
    };
    let url = format!("http://user:pa55word@127.0.0.1:{port}/health?token=s3cret");
    let err = send(&reqwest::Client::new(), &get(&url)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("127.0.0.1:{port} refused the connection; is the service listening there?")
    );
}

#[tokio::test]
async fn a_name_that_does_not_resolve_says_dns() {
    let err = send(
        &reqwest::Client::new(),
        &get("http://no-such-host.invalid/health"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the host name `no-such-host.invalid` could not be resolved (DNS)"
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}/", listener.local_addr().expect("address"));
    let request = Request {
        timeout: Some(Duration::from_millis(200)),
        ..get(&url)
    };
    let err = send(&reqwest::Client::new(), &request).await.unwrap_err();
    assert!(err.to_string().ends_with("did not answer in time"), "{err}");
    drop(listener);
}

#[tokio::test]
async fn bad_urls_methods_and_headers_are_refused_before_sending() {
    let client = reqwest::Client::new();
    let err = send(&client, &get("ftp://host/file?key=s3cret"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`ftp://host/file` is not a URL runbook can request (it needs http:// or https:// and a host)"
    );
    let request = Request {
        method: "fetch me".into(),
        ..get("http://127.0.0.1:1/")
    };
    assert!(matches!(
        send(&client, &request).await,
        Err(HttpError::BadMethod(_))
    ));
    let request = Request {
        headers: vec![("X-Token".into(), "line\nbreak".into())],
        ..get("http://127.0.0.1:1/")
    };
    assert_eq!(
        send(&client, &request).await,
        Err(HttpError::BadHeader("X-Token".into()))
    );
}

fn vector(samples: &[&str]) -> Answer {
    let result: Vec<String> = samples
        .iter()
        .map(|v| format!("{{\"metric\":{{}},\"value\":[1700000000.1,\"{v}\"]}}"))
        .collect();
    Answer {
        status: 200,
        body: format!(
            "{{\"status\":\"success\",\"data\":{{\"resultType\":\"vector\",\"result\":[{}]}}}}",
            result.join(",")
        ),
        cut: false,
    }
}

#[test]
fn an_instant_query_gives_its_one_number() {
    assert_eq!(instant_value(&vector(&["0.0042"])), Ok(0.0042));
    let scalar = Answer {
        status: 200,
        body: r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#
            .into(),
        cut: false,
    };
    assert_eq!(instant_value(&scalar), Ok(3.0));
}

#[test]
fn no_series_many_series_and_nan_are_each_said_plainly() {
    assert_eq!(instant_value(&vector(&[])), Err(PromError::Empty));
    assert_eq!(instant_value(&vector(&["1", "2"])), Err(PromError::Many(2)));
    assert_eq!(
        instant_value(&vector(&["NaN"])),
        Err(PromError::NotANumber("NaN".into()))
    );
    let matrix = Answer {
        status: 200,
        body: r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into(),
        cut: false,
    };
    assert!(matches!(instant_value(&matrix), Err(PromError::NotProm(_))));
}

#[test]
fn a_query_prometheus_refuses_gives_its_error() {
    let bad = Answer {
        status: 400,
        body: r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#.into(),
        cut: false,
    };
    assert_eq!(
        instant_value(&bad).unwrap_err().to_string(),
        "Prometheus answered 400: parse error at char 5"
    );
    let html = Answer {
        status: 200,
        body: "<html>login</html>".into(),
        cut: false,
    };
    assert_eq!(
        instant_value(&html).unwrap_err().to_string(),
        "the answer is not Prometheus's query API JSON: <html>login</html>"
    );
}

#[tokio::test]
async fn a_query_goes_to_the_query_api_encoded() {
    let server = serve(|_| {
        ok(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.5"]}]}}"#,
        )
    })
    .await;
    let value = prometheus(
        &reqwest::Client::new(),
        &format!("{}/", server.url),
        "sum(rate(x{code=~\"5..\"}[5m]))",
        None,
    )
    .await
    .expect("a value");
    assert_eq!(value, 0.5);
    let seen = server.seen()[0].clone();
    let line = seen.lines().next().unwrap_or_default();
    assert!(
        line.starts_with(
            "GET /api/v1/query?query=sum%28rate%28x%7Bcode%3D%7E%225..%22%7D%5B5m%5D%29%29 "
        ),
        "{line}"
    );
}

#[test]
fn a_url_is_shown_without_credentials_or_query() {
    assert_eq!(
        shown_url("https://admin:pw@api.example:8443/health?token=s3cret#x"),
        "https://api.example:8443/health"
    );
    assert_eq!(shown_url("http://host"), "http://host");
    assert_eq!(shown_url(":pw@cache:6379"), "(not a URL)");
    // A `#` or `?` in a password: no part of the password is shown.
    assert_eq!(shown_url("http://admin:Pw#tail@host/x"), "(not a URL)");
    assert_eq!(shown_url("http://admin:Pw?tail@host/x"), "(not a URL)");
    assert_eq!(
        shown_url("http://admin:Pw%23tail@host/x?y=1"),
        "http://host/x"
    );
    // A URL that is a secret: its origin only.
    assert_eq!(
        origin("https://hooks.example:8443/services/T0/B0/XYZ?token=1"),
        "https://hooks.example:8443"
    );
    assert_eq!(
        origin("https://hooks.example/short"),
        "https://hooks.example"
    );
    assert_eq!(origin("http://admin:Pw#tail@host/x"), "(not a URL)");
}
