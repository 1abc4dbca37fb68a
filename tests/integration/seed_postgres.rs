//! The seed's database workflows, from `workflows/`, run end to end by the
//! real binary against the machine's PostgreSQL (and Redis for the
//! snapshot). Each test creates its own database and drops it.

use crate::common;
use crate::standin;

use crate::common::{postgres_here, psql, root, scratch, stderr, stdout, Redis, TestDb};
use standin::Standin;
use std::path::Path;
use std::process::{Command, Output};

fn run(state: &Path, file: &str, params: &[String], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
    c.arg("--state")
        .arg(state)
        .arg("run")
        .arg(root().join(file));
    for p in params {
        c.arg("-p").arg(p);
    }
    c.current_dir(root()).env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the runbook binary starts")
}

fn seed(db: &TestDb) {
    psql(
        &db.0,
        "CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL);
         CREATE INDEX accounts_email ON accounts (email);
         INSERT INTO accounts (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, 500) g;
         DELETE FROM accounts WHERE id % 3 = 0;",
    );
}

#[test]
fn nightly_maintenance_vacuums_reindexes_and_finds_no_invalid_index() {
    if !postgres_here("nightly_maintenance") {
        return;
    }
    // REINDEX DATABASE needs the database's name in the SQL text, and the
    // workflow names the seed's database: the test creates it, unless the
    // machine has one of its own, which it leaves alone.
    let Some(db) = TestDb::create("neo_service_layer") else {
        eprintln!("SKIPPED: nightly_maintenance: a database neo_service_layer already exists here");
        return;
    };
    seed(&db);
    let before = psql(
        &db.0,
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'accounts'",
    );
    let hooks = Standin::start(|_, _| (200, String::new()));
    let state = scratch("seed-db-maintenance");
    let out = run(
        &state,
        "workflows/db_maintenance.runbook",
        &[],
        &[
            ("DATABASE_URL", db.url()),
            ("ALERT_WEBHOOK_URL", format!("{}/hook", hooks.url)),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    for step in [
        "primary",
        "vacuum",
        "reindex",
        "no_invalid_indexes",
        "analyze",
    ] {
        assert!(text.contains(step), "{step} ran: {text}");
    }
    let after = psql(
        &db.0,
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'accounts'",
    );
    assert_ne!(before, "0", "the seed left dead rows");
    assert_eq!(after, "0", "VACUUM removed the dead rows");
    assert_eq!(
        hooks.count("/hook"),
        0,
        "no alert when the maintenance succeeds"
    );
}

#[test]
fn the_nightly_backup_dumps_keeps_30_days_and_snapshots_redis() {
    if !postgres_here("nightly_backup") || !common::redis_here("nightly_backup") {
        return;
    }
    let name = format!("runbook_t_backup_{}", std::process::id());
    let db = TestDb::create(&name).expect("a fresh database");
    seed(&db);
    let dir = scratch("seed-backups");
    let backups = dir.join("postgres");
    std::fs::create_dir_all(&backups).expect("a directory");
    // A dump from 40 days ago goes; one from 10 days ago stays.
    let old = chrono::Utc::now() - chrono::Duration::days(40);
    let recent = chrono::Utc::now() - chrono::Duration::days(10);
    for when in [old, recent] {
        let file = backups.join(format!("{name}-{}.dump", when.format("%Y%m%dT%H%M%SZ")));
        std::fs::write(&file, "PGDMP old").expect("writes");
    }
    let redis = Redis::start(&dir.join("redis-data"), Some("redis-pa55"));
    let hooks = Standin::start(|_, _| (200, String::new()));
    let state = dir.join("state");
    let out = run(
        &state,
        "workflows/backups.runbook",
        &[
            format!("backup_dir={}", backups.display()),
            format!("redis_file={}", dir.join("redis.rdb").display()),
            "redis_host=127.0.0.1".into(),
            format!("redis_port={}", redis.port),
        ],
        &[
            ("DATABASE_URL", db.url()),
            ("REDIS_PASSWORD", "redis-pa55".into()),
            ("ALERT_WEBHOOK_URL", format!("{}/hook", hooks.url)),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let mut dumps: Vec<String> = std::fs::read_dir(&backups)
        .expect("lists")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dumps.sort();
    assert_eq!(
        dumps.len(),
        2,
        "the new dump and the 10-day-old one: {dumps:?}"
    );
    assert!(dumps.contains(&format!("{name}-{}.dump", recent.format("%Y%m%dT%H%M%SZ"))));
    let new = dumps
        .iter()
        .find(|d| !d.contains(&recent.format("%Y%m%dT").to_string()));
    let new = backups.join(new.expect("the new dump"));
    assert!(std::fs::read(&new).expect("reads").starts_with(b"PGDMP"));
    assert!(
        dir.join("redis.rdb").exists(),
        "the Redis snapshot was written"
    );
    assert!(
        !dir.join("redis.rdb.new").exists(),
        "and moved in place whole"
    );
    assert_eq!(hooks.count("/hook"), 0);
}
