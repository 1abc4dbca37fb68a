//! Against the machine's PostgreSQL at 127.0.0.1:5432 (user `postgres`,
//! trust). Each test makes its own database and drops it, even on failure.

use super::*;
use crate::actions::command::Launching;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const SERVER: &str = "127.0.0.1:5432";

/// Whether PostgreSQL is there. Without it a test is skipped, loudly, on a
/// developer's machine, and fails in CI, where it must be there.
fn postgres_here(test: &str) -> bool {
    let reachable = SERVER
        .parse()
        .ok()
        .and_then(|addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .is_some();
    if !reachable {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test} needs PostgreSQL at {SERVER}, and CI must have it");
        }
        eprintln!("SKIPPED: {test} needs PostgreSQL at {SERVER}");
    }
    reachable
}

fn url(db: &str) -> String {
    format!("postgres://postgres@{SERVER}/{db}")
}

async fn admin(sql: &str) {
    let q = Query {
        connection: url("postgres"),
        sql: sql.into(),
        ..Query::default()
    };
    query(&q).await.expect(sql);
}

/// A database of the test's own, dropped when the test ends however it ends.
struct TestDb {
    name: String,
}

impl TestDb {
    async fn new(test: &str) -> Option<TestDb> {
        if !postgres_here(test) {
            return None;
        }
        let name = format!("runbook_t_{test}_{}", std::process::id());
        admin(&format!("drop database if exists {name} with (force)")).await;
        admin(&format!("create database {name}")).await;
        Some(TestDb { name })
    }

    fn url(&self) -> String {
        url(&self.name)
    }

    async fn run(&self, sql: &str, params: &[&str]) -> Result<QueryResult, PgError> {
        query(&Query {
            connection: self.url(),
            sql: sql.into(),
            params: params.iter().map(|p| p.to_string()).collect(),
            timeout: None,
        })
        .await
    }

    async fn value(&self, sql: &str) -> Option<String> {
        self.run(sql, &[]).await.expect(sql).value
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("drop database if exists {} with (force)", self.name);
        // Its own thread and runtime: Drop cannot await, and the test's
        // runtime may be the one unwinding.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(admin(&sql));
            }
        })
        .join();
    }
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("runbook-pg-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[tokio::test]
async fn parameters_are_bound_and_an_injection_attempt_is_data() {
    let Some(db) = TestDb::new("params").await else {
        return;
    };
    let r = db.run("select $1::int + 1", &["41"]).await.expect("runs");
    assert_eq!(r.value.as_deref(), Some("42"));
    db.run("create table x (t text)", &[]).await.expect("table");
    let evil = "'); drop table x; --";
    let r = db
        .run("insert into x values ($1)", &[evil])
        .await
        .expect("insert");
    assert_eq!(r.rows, 1);
    assert_eq!(db.value("select t from x").await.as_deref(), Some(evil));
    let err = db.run("select $1, $2", &["only one"]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the query expects 2 parameter values, not 1"
    );
}

#[tokio::test]
async fn a_huge_value_is_kept_and_shown_only_in_part() {
    let Some(db) = TestDb::new("huge").await else {
        return;
    };
    let text = db
        .value("select repeat('x', 10000000)")
        .await
        .expect("a value");
    assert!(text.len() < 70_000, "{} bytes kept", text.len());
    assert!(text.starts_with(&"x".repeat(65_536)));
    assert!(
        text.ends_with("… (cut: the value is 10000000 bytes; runbook keeps the first 65536)"),
        "{}",
        &text[65_000..]
    );
    // Cut at a character, never inside one.
    let text = db
        .value("select repeat('é', 100000)")
        .await
        .expect("a value");
    assert!(
        text.starts_with(&"é".repeat(32_768)),
        "cut inside a character"
    );
    let bytes = db
        .value("select decode(repeat('ab', 100000), 'hex')")
        .await
        .expect("a value");
    assert!(bytes.starts_with("\\xabab"), "{}", &bytes[..10]);
    assert!(bytes.ends_with("(cut: the value is 100000 bytes; runbook keeps the first 65536)"));
}

#[tokio::test]
async fn a_select_counts_its_rows_and_shows_the_first_as_text() {
    let Some(db) = TestDb::new("select").await else {
        return;
    };
    let r = db
        .run(
            "select n, n * 1.50 as price, n > 2 as big, null::text as nothing, \
             timestamptz '2024-03-01 12:30:00.25+00' as at, interval '1 day 02:00' as span, \
             'a'::varchar as v, 1.5::float8 as f \
             from generate_series(7, 11) n",
            &[],
        )
        .await
        .expect("runs");
    assert_eq!(r.rows, 5);
    assert_eq!(
        r.columns,
        ["n", "price", "big", "nothing", "at", "span", "v", "f"]
    );
    let shown: Vec<Option<&str>> = r.first_row.iter().map(|v| v.as_deref()).collect();
    assert_eq!(
        shown,
        [
            Some("7"),
            Some("10.50"),
            Some("true"),
            None,
            Some("2024-03-01 12:30:00.25+00"),
            Some("1 day 02:00:00"),
            Some("a"),
            Some("1.5")
        ]
    );
    assert_eq!(r.value.as_deref(), Some("7"));
    for (sql, shown) in [
        ("select -0.000120::numeric", "-0.000120"),
        ("select 123456789.5::numeric", "123456789.5"),
        ("select 'NaN'::numeric", "NaN"),
        ("select 10000::numeric", "10000"),
        ("select date '1999-12-31'", "1999-12-31"),
        (
            "select 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ),
        ("select '{\"a\": 1}'::jsonb", "{\"a\": 1}"),
        ("select interval '-1 year -2 mons'", "-1 years -2 mons"),
        ("select 'x'::tsvector", "(type tsvector cannot be shown)"),
    ] {
        assert_eq!(db.value(sql).await.as_deref(), Some(shown), "{sql}");
    }
}

#[tokio::test]
async fn an_update_reports_the_rows_it_changed_and_an_empty_select_has_no_value() {
    let Some(db) = TestDb::new("update").await else {
        return;
    };
    db.run(
        "create table t as select n from generate_series(1, 10) n",
        &[],
    )
    .await
    .expect("table");
    let r = db
        .run("update t set n = n + 100 where n <= $1", &["4"])
        .await
        .expect("update");
    assert_eq!((r.rows, r.value), (4, None));
    let r = db
        .run("select n from t where n < 0", &[])
        .await
        .expect("select");
    assert_eq!(r.rows, 0);
    assert_eq!(r.value, None);
    assert!(r.first_row.is_empty());
}

#[tokio::test]
async fn an_sql_error_says_what_the_server_said() {
    let Some(db) = TestDb::new("sqlerr").await else {
        return;
    };
    let err = db
        .run("select * from missing_table", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the query failed at {SERVER}/{}: relation \"missing_table\" does not exist (SQLSTATE 42P01)",
            db.name
        )
    );
}

#[tokio::test]
async fn an_unknown_database_is_named() {
    if !postgres_here("unknown_database") {
        return;
    }
    let err = query(&Query {
        connection: url("runbook_no_such_db"),
        sql: "select 1".into(),
        ..Query::default()
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("the database runbook_no_such_db does not exist on the PostgreSQL server at {SERVER}/runbook_no_such_db")
    );
}

#[tokio::test]
async fn an_unknown_role_is_refused_with_the_server_s_reason() {
    if !postgres_here("unknown_role") {
        return;
    }
    let err = query(&Query {
        connection: format!("postgres://runbook_no_such_role:pw@{SERVER}/postgres"),
        sql: "select 1".into(),
        ..Query::default()
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "PostgreSQL at {SERVER}/postgres refused the login: \
             role \"runbook_no_such_role\" does not exist"
        )
    );
}

#[tokio::test]
async fn a_refused_port_is_plain_and_never_shows_the_password() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    for connection in [
        format!("postgres://admin:s3cr3t-pw@127.0.0.1:{port}/app"),
        format!("host=127.0.0.1 port={port} user=admin password=s3cr3t-pw dbname=app"),
    ] {
        let err = query(&Query {
            connection,
            sql: "select 1".into(),
            ..Query::default()
        })
        .await
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(
            text,
            format!("cannot connect to PostgreSQL at 127.0.0.1:{port}/app: connection refused; is the server running?")
        );
        assert!(!format!("{err:?}").contains("s3cr3t"));
    }
}

#[tokio::test]
async fn a_host_name_that_does_not_resolve_is_named() {
    let err = query(&Query {
        connection: "postgres://u:s3cr3t@runbook-no-such-host.invalid/app".into(),
        sql: "select 1".into(),
        timeout: Some(Duration::from_secs(20)),
        ..Query::default()
    })
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot connect to PostgreSQL at runbook-no-such-host.invalid:5432/app: \
         the host name runbook-no-such-host.invalid does not resolve"
    );
}

#[tokio::test]
async fn a_malformed_connection_string_is_refused_without_quoting_it() {
    let err = Target::parse("host=db password='unterminated s3cr3t")
        .err()
        .expect("malformed");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    assert!(err
        .to_string()
        .starts_with("the PostgreSQL connection string is malformed"));
    let err = Target::parse("host=db sslmode=sometimes")
        .err()
        .expect("bad mode");
    assert_eq!(
        err.to_string(),
        "the PostgreSQL connection string is malformed: invalid value for option `sslmode`"
    );
}

#[test]
fn verify_modes_are_read_here_and_passed_on_as_written() {
    for (text, mode) in [
        ("host=db sslmode=verify-full", TlsMode::VerifyFull),
        ("postgres://u@db/app?sslmode=verify-ca", TlsMode::VerifyCa),
        ("host=db sslmode = 'disable'", TlsMode::Off),
        ("host=db", TlsMode::Unverified),
        ("postgres://u@db/app?sslmode=require", TlsMode::Unverified),
    ] {
        let target = Target::parse(text).expect(text);
        assert_eq!(target.tls, mode, "{text}");
    }
    let target = Target::parse("host=db sslmode=verify-full").expect("parses");
    assert_eq!(target.sslmode.as_deref(), Some("verify-full"));
    assert_eq!(target.name, "db:5432/postgres");
}

async fn sleeping_backends(db: &TestDb) -> String {
    let q = Query {
        connection: url("postgres"),
        sql: "select count(*) from pg_stat_activity \
              where datname = $1 and state = 'active' and query like 'select pg_sleep%'"
            .into(),
        params: vec![db.name.clone()],
        timeout: None,
    };
    // The cancel travels on its own connection: give it a moment.
    let mut count = String::new();
    for _ in 0..40 {
        count = query(&q).await.expect("activity").value.unwrap_or_default();
        if count == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    count
}

#[tokio::test]
async fn a_timeout_stops_the_query_on_the_server_too() {
    let Some(db) = TestDb::new("timeout").await else {
        return;
    };
    let started = std::time::Instant::now();
    let err = query(&Query {
        connection: db.url(),
        sql: "select pg_sleep(30)".into(),
        params: vec![],
        timeout: Some(Duration::from_millis(500)),
    })
    .await
    .unwrap_err();
    assert!(matches!(err, PgError::TimedOut { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(sleeping_backends(&db).await, "0");
}

#[tokio::test]
async fn a_query_dropped_while_running_is_cancelled_on_the_server() {
    let Some(db) = TestDb::new("dropped").await else {
        return;
    };
    // No timeout of its own, so no statement_timeout: only the cancel stops it.
    let q = Query {
        connection: db.url(),
        sql: "select pg_sleep(30)".into(),
        ..Query::default()
    };
    let stopped = tokio::time::timeout(Duration::from_millis(700), query(&q)).await;
    assert!(stopped.is_err(), "still running when dropped");
    assert_eq!(sleeping_backends(&db).await, "0");
}

#[tokio::test]
async fn dump_kinds_are_told_from_the_first_bytes() {
    let dir = scratch_dir("kinds");
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    };
    let custom = write("a.dump", b"PGDMP\x01\x0e\x00\x04\x08");
    let plain = write(
        "a.sql",
        b"--\n-- PostgreSQL database dump\n--\n\nSET x = 1;\n",
    );
    let garbage = write("a.bin", b"\x89PNG\r\n\x1a\n\x00\x00");
    let text = write("notes.txt", b"hello there\n");
    assert_eq!(dump_kind(&custom).await.expect("custom"), DumpKind::Custom);
    assert_eq!(dump_kind(&plain).await.expect("plain"), DumpKind::Plain);
    for path in [&garbage, &text] {
        let err = dump_kind(path).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not a PostgreSQL dump (neither custom format nor plain SQL)",
                path.display()
            )
        );
    }
    let missing = dir.join("missing.dump");
    let err = dump_kind(&missing).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("the dump {} does not exist", missing.display())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn round_trip(test: &str, format: DumpFormat) {
    let Some(source) = TestDb::new(&format!("{test}_src")).await else {
        return;
    };
    let Some(copy) = TestDb::new(&format!("{test}_dst")).await else {
        return;
    };
    source
        .run(
            "create table items as select n as id, 'item ' || n as name \
             from generate_series(1, 250) n",
            &[],
        )
        .await
        .expect("data");
    let dir = scratch_dir(test);
    let mut lines = 0;
    let path = backup(
        &source.url(),
        &dir,
        format,
        None,
        SystemTime::now(),
        Launching::default(),
        |_, _| lines += 1,
    )
    .await
    .expect("backup");
    assert!(lines > 0, "pg_dump's progress was streamed");
    assert_eq!(dump_kind(&path).await.expect("kind"), format);
    restore(&copy.url(), &path, Some(2), Launching::default(), |_, _| {})
        .await
        .expect("restore");
    assert_eq!(
        copy.value("select count(*) from items").await.as_deref(),
        Some("250")
    );
    // Restoring again fails: the table exists. The error says so.
    let err = restore(&copy.url(), &path, None, Launching::default(), |_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_custom_dump_restores_into_a_fresh_database() {
    round_trip("rt_custom", DumpKind::Custom).await;
}

#[tokio::test]
async fn a_plain_dump_restores_into_a_fresh_database() {
    round_trip("rt_plain", DumpKind::Plain).await;
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn backups_older_than_keep_are_deleted_and_nothing_else() {
    let Some(db) = TestDb::new("keep").await else {
        return;
    };
    let dir = scratch_dir("keep");
    let now = SystemTime::now();
    let stamp = |ago: u64| {
        chrono::DateTime::<chrono::Utc>::from(now - Duration::from_secs(ago))
            .format("%Y%m%dT%H%M%SZ")
            .to_string()
    };
    let day = 86_400;
    let d = &db.name;
    let kept = [
        format!("{d}-{}.dump", stamp(2 * day)),
        format!("{d}-{}.sql", stamp(30 * day)),
        format!("other-{}.dump", stamp(30 * day)),
        format!("{d}-extra-{}.dump", stamp(30 * day)),
        format!("{d}-garbage.dump"),
        "notes.txt".to_string(),
    ];
    let old = [
        format!("{d}-{}.dump", stamp(8 * day)),
        format!("{d}-{}.dump", stamp(400 * day)),
    ];
    for name in kept.iter().chain(&old) {
        std::fs::write(dir.join(name), b"x").expect("write");
    }
    let path = backup(
        &db.url(),
        &dir,
        DumpKind::Custom,
        Some(Duration::from_secs(7 * day)),
        now,
        Launching::default(),
        |_, _| {},
    )
    .await
    .expect("backup");
    let new = path
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(new, format!("{d}-{}.dump", stamp(0)));
    let mut expected: Vec<String> = kept.to_vec();
    expected.push(new);
    expected.sort();
    assert_eq!(names(&dir), expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failed_dump_leaves_no_file_behind() {
    if !postgres_here("failed_dump") {
        return;
    }
    let dir = scratch_dir("faileddump");
    let err = backup(
        &url("runbook_no_such_db"),
        &dir,
        DumpKind::Plain,
        None,
        SystemTime::now(),
        Launching::default(),
        |_, _| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().starts_with("`pg_dump` failed for"), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(names(&dir).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
