#![allow(unsafe_code)] // tests set up processes and files with raw calls
use super::*;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A redis-server of the test's own on a free port of loopback; `None`
/// (said loudly) where the machine has no redis-server, except under CI.
struct Server {
    port: u16,
    dir: PathBuf,
    child: std::process::Child,
}

impl Server {
    fn start(name: &str, password: Option<&str>) -> Option<Server> {
        Server::start_with(name, password, None)
    }

    /// Given `tls`, the server listens in TLS only, with the certificates
    /// of `Pki::write` there, and asks every client for its certificate.
    fn start_with(name: &str, password: Option<&str>, tls: Option<&Path>) -> Option<Server> {
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
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--dbfilename", "dump.rdb", "--dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::null());
        match tls {
            None => command.args(["--port", &port.to_string()]),
            Some(pki) => command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-auth-clients", "yes", "--tls-cert-file"])
                .arg(pki.join("server.pem"))
                .arg("--tls-key-file")
                .arg(pki.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(pki.join("ca.pem")),
        };
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
            tls: None,
        }
    );
    assert_eq!(Target::parse("redis://cache").expect("parses").port, 6379);
    let err = Target::parse("rediss://:s3cret@cache:6380?insecure=yes").unwrap_err();
    assert_eq!(
        err.to_string(),
        "`rediss://cache:6380?insecure=yes` is not a Redis URL runbook can use (redis://[user:password@]host[:port][/db], or rediss:// with [?cacert=FILE][&cert=FILE&key=FILE] for TLS)"
    );
    // Without a scheme there is no telling what is a password.
    for url in [":s3cret@cache:6379", "app:s3cret@cache", "s3cret"] {
        let err = Target::parse(url).unwrap_err();
        assert_eq!(err, RedisError::BadUrl("(not a redis:// URL)".into()));
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
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
    // A wrong password fails the step before the snapshot is loaded, and
    // is not in the sentence.
    let rdb = dir.join("header-only.rdb");
    std::fs::write(&rdb, "REDIS0011").expect("writes");
    let mut lines = Vec::new();
    let wrong = restore(&target.url(Some("hunter2-wrong")), &rdb, |_, l| {
        lines.push(l.to_string())
    })
    .await
    .unwrap_err();
    let said = wrong.to_string();
    assert!(
        said.starts_with(&format!(
            "Redis at 127.0.0.1:{} answered an error: WRONGPASS",
            target.port
        )),
        "{said}"
    );
    assert!(!said.contains("hunter2"), "{said}");
    assert!(!lines.concat().contains("hunter2"), "{lines:?}");
}

#[tokio::test]
async fn a_refused_port_is_one_sentence() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let url = format!("redis://app:s3cret-pw@127.0.0.1:{port}");
    let rdb =
        std::env::temp_dir().join(format!("runbook-redis-refused-{}.rdb", std::process::id()));
    std::fs::write(&rdb, "REDIS0011").expect("writes");
    let mut lines = Vec::new();
    let err = restore(&url, &rdb, |_, l| lines.push(l.to_string()))
        .await
        .unwrap_err();
    let _ = std::fs::remove_file(&rdb);
    assert_eq!(
        err.to_string(),
        format!("cannot connect to Redis at 127.0.0.1:{port}: connection refused")
    );
    assert!(!lines.concat().contains("s3cret"), "{lines:?}");
}

/// What the fake server does after its reply.
enum Then {
    Hold,
    Close,
    Repeat(&'static [u8]),
}

/// What a connection makes of a fake server on loopback that answers PING
/// with `reply`, then does `then`; it waits at most two seconds for bytes.
async fn ping_a_server_that_sends(reply: &[u8], then: Then) -> (u16, Result<Reply, RedisError>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = listener.local_addr().expect("an address").port();
    let reply = reply.to_vec();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("a client");
        let mut request = [0u8; 64];
        let _ = socket.read(&mut request).await;
        let _ = socket.write_all(&reply).await;
        match then {
            Then::Hold => {
                let _ = socket.read(&mut request).await;
            }
            Then::Close => {}
            Then::Repeat(chunk) => while socket.write_all(chunk).await.is_ok() {},
        }
    });
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    let mut connection = Connection {
        stream: BufReader::new(Box::new(tcp)),
        target: format!("127.0.0.1:{port}"),
        patience: Duration::from_secs(2),
    };
    let result = connection.call(&[b"PING"]).await;
    drop(connection);
    server.await.expect("the fake server ends");
    (port, result)
}

#[tokio::test]
async fn a_hostile_or_silent_server_is_one_sentence_without_a_panic_or_a_huge_allocation() {
    let cases: Vec<(&[u8], Then, &str)> = vec![
        (
            b"$999999999999\r\n",
            Then::Hold,
            "announced a string of 999999999999 bytes, more than the 512 MiB Redis allows",
        ),
        (
            b"+",
            Then::Repeat(&[b'a'; 8192]),
            "sent a line longer than 64 KiB",
        ),
        (
            b"*2000000\r\n",
            Then::Hold,
            "announced a list of 2000000 items, more than the 1000000 runbook reads",
        ),
        (
            "\u{e9}t\u{e9}\r\n".as_bytes(),
            Then::Hold,
            "sent something that is not the Redis protocol",
        ),
        (
            b"+OK\n",
            Then::Hold,
            "sent something that is not the Redis protocol",
        ),
        (
            b"$-5\r\n",
            Then::Hold,
            "sent something that is not the Redis protocol",
        ),
        (
            b"$3\r\nabcde",
            Then::Hold,
            "sent something that is not the Redis protocol",
        ),
        (b"", Then::Hold, "sent nothing for 2 seconds"),
        // Announced 500 MiB, sent 5 bytes: what is kept is what came.
        (
            b"$524288000\r\nabcde",
            Then::Hold,
            "sent nothing for 2 seconds",
        ),
        (
            b"$10\r\nabc",
            Then::Close,
            "broke off: the connection was closed",
        ),
        (b"", Then::Close, "broke off: the connection was closed"),
    ];
    for (reply, then, said) in cases {
        let (port, result) = ping_a_server_that_sends(reply, then).await;
        let err = result.expect_err("refused");
        assert_eq!(err.to_string(), format!("Redis at 127.0.0.1:{port} {said}"));
    }
    let deep = b"*1\r\n".repeat(100);
    let (port, result) = ping_a_server_that_sends(&deep, Then::Hold).await;
    assert_eq!(
        result.expect_err("refused").to_string(),
        format!("Redis at 127.0.0.1:{port} sent lists nested more than 8 deep")
    );
    // Within the bounds, the same reader reads.
    let (_, result) = ping_a_server_that_sends(
        b"*3\r\n$3\r\nabc\r\n*2\r\n:-5\r\n$-1\r\n-ERR no\r\n",
        Then::Hold,
    )
    .await;
    assert_eq!(
        result,
        Ok(Reply::Array(vec![
            bulk("abc"),
            Reply::Array(vec![Reply::Int(-5), Reply::Bulk(None)]),
            Reply::Error("ERR no".into()),
        ]))
    );
}

#[test]
fn a_key_scan_returns_twice_is_counted_once() {
    let mut seen = Seen::default();
    assert!(seen.first(b"a"));
    assert!(seen.first(b"b"));
    assert!(!seen.first(b"a"));
    assert!(seen.first(b""));
    assert!(!seen.first(b""));
}

#[tokio::test]
async fn the_private_server_wants_a_password_no_ps_shows_in_a_directory_of_its_own() {
    use std::os::unix::fs::PermissionsExt;
    let Some(source) = Server::start("private", None) else {
        return;
    };
    let mut s = source.connect(None).await;
    s.ok(&[b"SET", b"k", b"v"]).await.expect("set");
    s.ok(&[b"SAVE"]).await.expect("save");
    let loader = Loader::start(&source.dir.join("dump.rdb"), &mut |_, _| {})
        .await
        .expect("loads");
    let dir = loader._dir.0.clone();
    let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("redis.conf")), 0o600);
    let password = loader.password.clone();
    assert_eq!(password.len(), 32);
    assert!(
        password.bytes().all(|b| b.is_ascii_hexdigit()),
        "{password}"
    );
    let config = std::fs::read_to_string(dir.join("redis.conf")).expect("reads");
    assert!(
        config.contains(&format!("requirepass {password}\n")),
        "{config}"
    );
    let pid = loader.child.id().expect("running");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("a command line");
    assert!(!String::from_utf8_lossy(&cmdline).contains(&password));
    let pid = i32::try_from(pid).expect("a pid");
    // SAFETY: getpgid only reads the process table.
    let group = unsafe { libc::getpgid(pid) };
    assert_eq!(group, pid, "a process group of its own");

    let anonymous = Target {
        password: None,
        ..loader.target()
    };
    let Err(RedisError::Refused { message, .. }) = Connection::open(&anonymous).await else {
        panic!("the private server let in a client without its password")
    };
    assert!(message.starts_with("NOAUTH"), "{message}");
    let mut c = Connection::open(&loader.target()).await.expect("connects");
    assert_eq!(c.ok(&[b"GET", b"k"]).await, Ok(bulk("v")));
    drop(c);
    drop(loader);
    assert!(!dir.exists(), "{}", dir.display());
}

#[test]
fn rediss_urls_say_how_the_server_is_verified_and_anything_else_is_refused() {
    let t = Target::parse("rediss://:pw@cache.dr:6380/1").expect("parses");
    assert_eq!((t.port, t.db), (6380, 1));
    assert_eq!(t.tls, Some(Tls::default()));
    // The book's example (reference/sql.md, "Into `redis`").
    let book = "rediss://:PASSWORD@cache.dr:6380/0?cacert=/etc/redis/ca.pem&cert=/etc/redis/runbook.pem&key=/etc/redis/runbook.key";
    let t = Target::parse(book).expect("parses");
    assert_eq!((t.host.as_str(), t.port, t.db), ("cache.dr", 6380, 0));
    assert_eq!(
        t.tls.and_then(|tls| tls.client),
        Some((
            "/etc/redis/runbook.pem".into(),
            "/etc/redis/runbook.key".into()
        ))
    );
    let t = Target::parse("rediss://cache?cacert=/etc/ca.pem&cert=/etc/me.pem&key=/etc/me.key")
        .expect("parses");
    assert_eq!(
        t.tls,
        Some(Tls {
            ca_file: Some("/etc/ca.pem".into()),
            client: Some(("/etc/me.pem".into(), "/etc/me.key".into())),
        })
    );
    for url in [
        "redis://cache?cacert=/etc/ca.pem", // TLS settings without TLS
        "rediss://cache?verify=no",         // a setting runbook does not know
        "rediss://cache?cert=/etc/me.pem",  // a certificate without its key
        "rediss://cache?key=/etc/me.key",
        "rediss://cache?cacert=",
        "rediss://cache?cacert=/a&cacert=/b",
    ] {
        assert!(
            matches!(Target::parse(url), Err(RedisError::BadUrl(_))),
            "{url}"
        );
    }
}

/// A private CA, a server certificate for 127.0.0.1 only, and a client
/// certificate, written as PEM files into a directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn write(name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir =
            std::env::temp_dir().join(format!("runbook-redis-pki-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory");
        let ca_key = KeyPair::generate().expect("a key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "runbook test CA");
        let ca = ca.self_signed(&ca_key).expect("the CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("writes");
        for (who, names) in [
            ("server", vec!["127.0.0.1".to_string()]),
            ("client", vec![]),
        ] {
            let key = KeyPair::generate().expect("a key");
            let params = CertificateParams::new(names).expect("params");
            let cert = params.signed_by(&key, &ca, &ca_key).expect("signed");
            std::fs::write(dir.join(format!("{who}.pem")), cert.pem()).expect("writes");
            std::fs::write(dir.join(format!("{who}.key")), key.serialize_pem()).expect("writes");
        }
        Pki { dir }
    }

    /// A `rediss://` URL for `host:port` trusting this CA, and showing the
    /// client certificate when `client`.
    fn url(&self, host: &str, port: u16, client: bool) -> String {
        let d = self.dir.display();
        let mine = if client {
            format!("&cert={d}/client.pem&key={d}/client.key")
        } else {
            String::new()
        };
        format!("rediss://:t4rget@{host}:{port}/0?cacert={d}/ca.pem{mine}")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_snapshot_is_restored_over_tls_and_an_untrusted_server_is_refused() {
    let pki = Pki::write("tls");
    let Some(source) = Server::start("tls-source", None) else {
        return;
    };
    let Some(target) = Server::start_with("tls-target", Some("t4rget"), Some(&pki.dir)) else {
        return;
    };
    let mut s = source.connect(None).await;
    s.ok(&[b"SET", b"session:1", b"alice"]).await.expect("set");
    s.ok(&[b"SAVE"]).await.expect("save");
    let rdb = source.dir.join("dump.rdb");
    let port = target.port;

    let copied = restore(&pki.url("127.0.0.1", port, true), &rdb, |_, _| {})
        .await
        .expect("restores over TLS");
    assert_eq!(copied, 1);
    let url = pki.url("127.0.0.1", port, true);
    let mut t = Connection::open(&Target::parse(&url).expect("a URL"))
        .await
        .expect("connects");
    assert_eq!(t.ok(&[b"GET", b"session:1"]).await, Ok(bulk("alice")));

    let failed = |url: String| {
        let rdb = rdb.clone();
        async move {
            restore(&url, &rdb, |_, _| {})
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let at = format!("Redis at 127.0.0.1:{port}");
    // Verified against the public roots, the private CA is not trusted.
    let public = format!("rediss://:t4rget@127.0.0.1:{port}/0");
    assert_eq!(
        failed(public).await,
        format!("the TLS handshake with {at} failed: invalid peer certificate: UnknownIssuer")
    );
    // The certificate is for 127.0.0.1, not for localhost.
    let said = failed(pki.url("localhost", port, true)).await;
    assert!(
        said.starts_with(&format!(
            "the TLS handshake with Redis at localhost:{port} failed: invalid peer certificate: "
        )),
        "{said}"
    );
    // The server asks for a client certificate and none is shown.
    let said = failed(pki.url("127.0.0.1", port, false)).await;
    assert_eq!(
        said,
        format!("{at} broke off: received fatal alert: CertificateRequired")
    );
    // TLS spoken to a port that does not speak it: that server waits for
    // a line, and the handshake is given up (after ten seconds).
    let said = failed(pki.url("127.0.0.1", source.port, true)).await;
    assert_eq!(
        said,
        format!(
            "the TLS handshake with Redis at 127.0.0.1:{} failed: no answer in 10 seconds (does that port speak TLS?)",
            source.port
        )
    );
    // A CA file that is not there, or holds no certificate.
    let missing = pki.dir.join("nope.pem");
    let url = format!("rediss://127.0.0.1:{port}?cacert={}", missing.display());
    assert_eq!(
        failed(url).await,
        format!("cannot use {} for TLS: no such file", missing.display())
    );
    let url = format!(
        "rediss://127.0.0.1:{port}?cacert={}/server.key",
        pki.dir.display()
    );
    assert_eq!(
        failed(url).await,
        format!(
            "cannot use {}/server.key for TLS: it holds no certificate (-----BEGIN CERTIFICATE-----)",
            pki.dir.display()
        )
    );
}
