use super::*;

/// A redis-server of the test's own on a free port of loopback; `None`
/// (said loudly) where the machine has no redis-server, except under CI.
struct Server {
    port: u16,
    dir: PathBuf,
    child: std::process::Child,
}

impl Server {
    fn start(name: &str, password: Option<&str>) -> Option<Server> {
        let dir =
            std::env::temp_dir().join(format!("runbook-redis-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port")
            .port();
        let mut command = std::process::Command::new("redis-server");
        command
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dbfilename", "dump.rdb", "--dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::null());
        if let Some(p) = password {
            command.args(["--requirepass", p]);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(_) => {
                assert_ne!(
                    std::env::var("CI").as_deref(),
                    Ok("true"),
                    "CI must have redis-server"
                );
                eprintln!("SKIPPED: {name} needs redis-server");
                return None;
            }
        };
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Server { port, dir, child })
    }

    fn url(&self, password: Option<&str>) -> String {
        match password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    async fn connect(&self, password: Option<&str>) -> Connection {
        Connection::open(&Target::parse(&self.url(password)).expect("a URL"))
            .await
            .expect("connects")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bulk(text: &str) -> Reply {
    Reply::Bulk(Some(text.as_bytes().to_vec()))
}

#[test]
fn urls_are_read_and_never_shown_with_their_password() {
    let t = Target::parse("redis://app:pa%24s@cache.dr:6380/2").expect("parses");
    assert_eq!(
        t,
        Target {
            host: "cache.dr".into(),
            port: 6380,
            user: Some("app".into()),
            password: Some("pa$s".into()),
            db: 2,
        }
    );
    assert_eq!(Target::parse("redis://cache").expect("parses").port, 6379);
    let err = Target::parse("rediss://:s3cret@cache:6380").unwrap_err();
    assert_eq!(
        err.to_string(),
        "`rediss://cache:6380` is not a Redis URL runbook can use (redis://[user:password@]host[:port][/db]; rediss:// is not supported yet)"
    );
}

#[tokio::test]
async fn a_snapshot_is_restored_key_by_key_with_ttls_into_every_database() {
    let Some(source) = Server::start("source", None) else {
        return;
    };
    let Some(target) = Server::start("target", Some("t4rget")) else {
        return;
    };
    let mut s = source.connect(None).await;
    s.ok(&[b"SET", b"session:1", b"alice"]).await.expect("set");
    s.ok(&[b"PEXPIRE", b"session:1", b"3600000"])
        .await
        .expect("ttl");
    s.ok(&[b"HSET", b"user:1", b"name", b"Alice", b"plan", b"pro"])
        .await
        .expect("hset");
    s.ok(&[b"RPUSH", b"queue", b"a", b"b", b"c"])
        .await
        .expect("list");
    s.ok(&[b"SELECT", b"3"]).await.expect("select");
    s.ok(&[b"SET", b"in-db-3", b"yes"]).await.expect("set");
    s.ok(&[b"SAVE"]).await.expect("save");
    let rdb = source.dir.join("dump.rdb");
    // The target has a key the snapshot does not, and an old value of one it does.
    let mut t = target.connect(Some("t4rget")).await;
    t.ok(&[b"SET", b"only-in-target", b"kept"])
        .await
        .expect("set");
    t.ok(&[b"SET", b"session:1", b"stale"]).await.expect("set");

    let mut lines = Vec::new();
    let copied = restore(&target.url(Some("t4rget")), &rdb, |_, l| {
        lines.push(l.to_string())
    })
    .await
    .expect("restores");
    assert_eq!(copied, 4);
    assert!(
        lines.iter().any(|l| l.contains("4 keys restored")),
        "{lines:?}"
    );
    assert!(!lines.concat().contains("t4rget"), "{lines:?}");

    let mut t = target.connect(Some("t4rget")).await;
    assert_eq!(t.ok(&[b"GET", b"session:1"]).await, Ok(bulk("alice")));
    let Ok(Reply::Int(ttl)) = t.ok(&[b"PTTL", b"session:1"]).await else {
        panic!("a ttl")
    };
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{ttl}");
    assert_eq!(t.ok(&[b"HGET", b"user:1", b"plan"]).await, Ok(bulk("pro")));
    assert_eq!(t.ok(&[b"LLEN", b"queue"]).await, Ok(Reply::Int(3)));
    assert_eq!(t.ok(&[b"PTTL", b"queue"]).await, Ok(Reply::Int(-1)));
    assert_eq!(t.ok(&[b"GET", b"only-in-target"]).await, Ok(bulk("kept")));
    t.ok(&[b"SELECT", b"3"]).await.expect("select");
    assert_eq!(t.ok(&[b"GET", b"in-db-3"]).await, Ok(bulk("yes")));
}

#[tokio::test]
async fn a_wrong_password_a_missing_file_and_a_file_that_is_not_rdb_are_one_sentence_each() {
    let Some(target) = Server::start("refusing", Some("right")) else {
        return;
    };
    let dir = target.dir.clone();
    let missing = dir.join("nope.rdb");
    let err = restore(&target.url(Some("right")), &missing, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err, RedisError::Missing(missing.display().to_string()));
    let junk = dir.join("junk.rdb");
    std::fs::write(&junk, "PGDMP not redis").expect("writes");
    let err = restore(&target.url(Some("right")), &junk, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err, RedisError::NotRdb(junk.display().to_string()));
    let wrong = Connection::open(&Target::parse(&target.url(Some("wrong"))).expect("a URL"))
        .await
        .err()
        .expect("refused");
    let said = wrong.to_string();
    assert!(
        said.starts_with(&format!(
            "Redis at 127.0.0.1:{} answered an error: WRONGPASS",
            target.port
        )),
        "{said}"
    );
    assert!(!said.contains("wrong@"), "{said}");
}

#[tokio::test]
async fn a_refused_port_is_one_sentence() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let target = Target::parse(&format!("redis://:pw@127.0.0.1:{port}")).expect("a URL");
    let err = Connection::open(&target).await.err().expect("refused");
    assert_eq!(
        err.to_string(),
        format!("cannot connect to Redis at 127.0.0.1:{port}: connection refused")
    );
}
