//! The PostgreSQL action through the library's public API, against the
//! machine's server at 127.0.0.1:5432 (skipped without it, except in CI).
//! The details are tested beside the code, in `src/actions/postgres/tests.rs`.

use runbook::actions::postgres::{dump_kind, query, PgError, Query};
use std::time::Duration;

fn postgres_here() -> bool {
    let addr = "127.0.0.1:5432".parse().expect("an address");
    let reachable = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok();
    if !reachable {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI must have PostgreSQL at 127.0.0.1:5432"
        );
        eprintln!("SKIPPED: tests/postgres.rs needs PostgreSQL at 127.0.0.1:5432");
    }
    reachable
}

#[tokio::test]
async fn a_bound_query_and_a_timeout_through_the_public_api() {
    if !postgres_here() {
        return;
    }
    let mut q = Query {
        connection: "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into(),
        sql: "select $1::int * 2 as doubled, $2::text as echoed".into(),
        params: vec!["21".into(), "x'; select 1; --".into()],
        timeout: Some(Duration::from_secs(10)),
    };
    let r = query(&q).await.expect("runs");
    assert_eq!((r.rows, r.value.as_deref()), (1, Some("42")));
    assert_eq!(r.columns, ["doubled", "echoed"]);
    assert_eq!(r.first_row[1].as_deref(), Some("x'; select 1; --"));

    q.sql = "select pg_sleep(20)".into();
    q.params.clear();
    q.timeout = Some(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = query(&q).await.unwrap_err();
    assert!(matches!(err, PgError::TimedOut { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_missing_dump_is_one_sentence() {
    let err = dump_kind(std::path::Path::new("/no/such/backup.dump"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the dump /no/such/backup.dump does not exist"
    );
}
