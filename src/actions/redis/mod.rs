//! `restore` into Redis from an RDB snapshot, over the network.
//!
//! A running Redis cannot be handed a snapshot through its protocol, and
//! the DR Redis is usually on another machine. So the snapshot is loaded by
//! a private `redis-server` on this machine's loopback (a free port, no
//! persistence, its own process group, killed and its directory removed
//! afterwards), and every key is copied from it to the target with `DUMP`
//! and `RESTORE ... REPLACE`, keeping its time to live, database by
//! database. Keys of the target that the snapshot does not have are left
//! alone. Needs `redis-server` where runbook runs, of a version no newer
//! than the target's (a `DUMP` payload is refused by an older Redis).
//!
//! Other local users reach loopback too: the private server's directory is
//! runbook's user's only (0700), and it asks for a random password, in a
//! config file there (0600), never on its command line (`ps` shows that).
//! It is waited for as long as it is alive and loading (the step's timeout
//! bounds that), with a line every ten seconds saying it still loads.
//!
//! The target is tried (reachable, credentials) before a long load. Replies
//! are read within bounds (see `redis_resp.rs`): beyond them, or after
//! 60 seconds without a byte, the step ends with one sentence.
//!
//! The URL may hold a password: no error or progress line names more than
//! `host:port`. `rediss://` puts the connection to the target in TLS, the
//! server's certificate verified (`tls.rs`).

use super::command::Stream;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod resp;
mod tls;
use resp::{Connection, Reply};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedisError {
    #[error("`{0}` is not a Redis URL runbook can use (redis://[user:password@]host[:port][/db], or rediss:// with [?cacert=FILE][&cert=FILE&key=FILE] for TLS)")]
    BadUrl(String),
    #[error("the snapshot {0} does not exist")]
    Missing(String),
    #[error("{0} is not a Redis RDB snapshot (it does not start with REDIS)")]
    NotRdb(String),
    #[error("cannot connect to Redis at {target}: {why}")]
    Connect { target: String, why: String },
    #[error("the TLS handshake with Redis at {target} failed: {why}")]
    Handshake { target: String, why: String },
    #[error("cannot use {path} for TLS: {why}")]
    TlsFile { path: String, why: String },
    #[error("Redis at {target} answered an error: {message}")]
    Refused { target: String, message: String },
    #[error("Redis at {target} broke off: {why}")]
    Lost { target: String, why: String },
    /// A reply runbook refuses to read further, or none: `what` is the
    /// rest of the sentence ("sent a line longer than 64 KiB").
    #[error("Redis at {target} {what}")]
    Unreadable { target: String, what: String },
    #[error("cannot load the snapshot: {0}")]
    Loader(String),
}

/// Where a `redis://` or `rediss://` URL points, and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// `rediss://`: the connection is in TLS (see `tls.rs`).
    pub tls: Option<Tls>,
}

/// How a `rediss://` connection verifies the server, and shows itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// `cacert=FILE`: the only certificates the server's may chain to;
    /// without it, the public roots.
    pub ca_file: Option<PathBuf>,
    /// `cert=FILE&key=FILE`: this side's certificate and its key.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, RedisError> {
        let bad = || RedisError::BadUrl(shown(url));
        let parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
        let tls = match parsed.scheme() {
            "redis" => None,
            "rediss" => Some(tls_settings(&parsed).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        // A setting runbook does not know is refused, not ignored.
        if tls.is_none() && parsed.query().is_some() {
            return Err(bad());
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(bad)?;
        let db = match parsed.path().trim_start_matches('/') {
            "" => 0,
            n => n.parse().map_err(|_| bad())?,
        };
        let decode = |s: &str| percent_decode(s).filter(|s| !s.is_empty());
        Ok(Target {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: parsed.port().unwrap_or(6379),
            user: decode(parsed.username()),
            password: parsed.password().and_then(decode),
            db,
            tls,
        })
    }

    fn shown(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The settings of a `rediss://` URL's query; `None` for one it does not
/// know, one given twice or empty, or a `cert` without its `key`.
fn tls_settings(url: &reqwest::Url) -> Option<Tls> {
    let (mut ca_file, mut cert, mut key) = (None, None, None);
    for (name, value) in url.query_pairs() {
        let slot = match &*name {
            "cacert" => &mut ca_file,
            "cert" => &mut cert,
            "key" => &mut key,
            _ => return None,
        };
        if value.is_empty() || slot.is_some() {
            return None;
        }
        *slot = Some(PathBuf::from(value.into_owned()));
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return None,
    };
    Some(Tls { ca_file, client })
}

/// A URL without what may be a password, for messages.
fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        // Without a scheme, any part of it may be a password (`:pw@cache`).
        None => "(not a redis:// URL)".into(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Copies every key of the snapshot into the Redis at `url`; the number of
/// distinct keys restored.
pub async fn restore(
    url: &str,
    rdb: &Path,
    mut on_line: impl FnMut(Stream, &str),
) -> Result<u64, RedisError> {
    let target = Target::parse(url)?;
    check_rdb(rdb).await?;
    // A target that cannot be reached or refuses the credentials fails the
    // step now, not after a long load; the connection is opened again after
    // it, as a target with an idle `timeout` would close this one meanwhile.
    drop(Connection::open(&target).await?);
    let loader = Loader::start(rdb, &mut on_line).await?;
    on_line(
        Stream::Stdout,
        &format!(
            "loaded {} in a private redis-server on 127.0.0.1:{}\n",
            rdb.display(),
            loader.port
        ),
    );
    let mut source = Connection::open(&loader.target()).await?;
    let mut dest = Connection::open(&target).await?;
    let mut copied = 0;
    for db in databases(&mut source).await? {
        let number = db.to_string();
        source.ok(&[b"SELECT", number.as_bytes()]).await?;
        dest.ok(&[b"SELECT", number.as_bytes()]).await?;
        let mut seen = Seen::default();
        let mut cursor = b"0".to_vec();
        loop {
            let reply = source.ok(&[b"SCAN", &cursor, b"COUNT", b"1000"]).await?;
            let Reply::Array(parts) = reply else {
                return Err(RedisError::Loader("SCAN did not answer a list".into()));
            };
            let (Some(Reply::Bulk(Some(next))), Some(Reply::Array(keys))) =
                (parts.first(), parts.get(1))
            else {
                return Err(RedisError::Loader("SCAN answered something else".into()));
            };
            for key in keys {
                let Reply::Bulk(Some(key)) = key else {
                    continue;
                };
                if !seen.first(key) {
                    continue;
                }
                if copy_key(&mut source, &mut dest, key).await? {
                    copied += 1;
                    if copied % 10_000 == 0 {
                        on_line(Stream::Stdout, &format!("{copied} keys copied\n"));
                    }
                }
            }
            if next.as_slice() == b"0" {
                break;
            }
            cursor = next.clone();
        }
    }
    on_line(
        Stream::Stdout,
        &format!("{copied} keys restored into {}\n", target.shown()),
    );
    Ok(copied)
}

/// The keys of one database met so far. SCAN may return a key more than
/// once (when the private server resizes its table, as keys expire in it
/// during the copy); a key met again is neither copied nor counted again.
/// It holds a 128-bit fingerprint of each key (SipHash with random keys),
/// not the key: about 30 bytes a key with the table, a fraction of what the
/// private redis-server on this machine already holds for the same key
/// (so the memory is there), where the keys themselves would double it.
/// Two keys share a fingerprint with a chance of about n²/2¹²⁹: none.
#[derive(Default)]
struct Seen {
    hasher: RandomState,
    fingerprints: HashSet<u128>,
}

impl Seen {
    /// Whether `key` is met for the first time.
    fn first(&mut self, key: &[u8]) -> bool {
        let high = u128::from(self.hasher.hash_one((key, 1u8)));
        let low = u128::from(self.hasher.hash_one((key, 2u8)));
        self.fingerprints.insert((high << 64) | low)
    }
}

/// One key, with its time to live; false when it expired in between.
async fn copy_key(
    source: &mut Connection,
    dest: &mut Connection,
    key: &[u8],
) -> Result<bool, RedisError> {
    let Reply::Bulk(Some(payload)) = source.ok(&[b"DUMP", key]).await? else {
        return Ok(false);
    };
    let ttl = match source.ok(&[b"PTTL", key]).await? {
        Reply::Int(ms) if ms > 0 => ms,
        Reply::Int(-2) => return Ok(false),
        _ => 0,
    };
    dest.ok(&[
        b"RESTORE",
        key,
        ttl.to_string().as_bytes(),
        &payload,
        b"REPLACE",
    ])
    .await?;
    Ok(true)
}

/// The databases that hold keys, from `INFO keyspace` (`db3:keys=...`).
async fn databases(source: &mut Connection) -> Result<Vec<u32>, RedisError> {
    let Reply::Bulk(Some(info)) = source.ok(&[b"INFO", b"keyspace"]).await? else {
        return Ok(Vec::new());
    };
    Ok(String::from_utf8_lossy(&info)
        .lines()
        .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
        .collect())
}

/// A plain file that starts as an RDB snapshot does; read off the
/// runtime's thread, and a pipe or a device is refused (`files`).
async fn check_rdb(rdb: &Path) -> Result<(), RedisError> {
    let shown = rdb.display().to_string();
    let owned = rdb.to_path_buf();
    let head = super::files::off_thread(move || {
        use std::io::Read;
        let mut head = [0u8; 5];
        let file = super::files::open_plain(&owned);
        Ok(file.map(|mut f| f.read_exact(&mut head).map(|()| head)))
    })
    .await
    .map_err(|_| RedisError::Missing(shown.clone()))?;
    match head {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RedisError::Missing(shown)),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(RedisError::Loader(format!(
            "{shown}: {}",
            crate::error::io_reason(&e)
        ))),
        Err(_) => Err(RedisError::Missing(shown)),
        Ok(Ok(head)) if &head == b"REDIS" => Ok(()),
        Ok(_) => Err(RedisError::NotRdb(shown)),
    }
}

/// `n` random bytes from the kernel, as hex.
fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    Ok(bytes
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect())
}

/// A directory removed with everything in it when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private redis-server holding the snapshot. When dropped, it is killed
/// (`kill_on_drop`), then its directory removed (fields drop in order).
struct Loader {
    port: u16,
    password: String,
    child: tokio::process::Child,
    _dir: Scratch,
}

impl Loader {
    async fn start(
        rdb: &Path,
        on_line: &mut impl FnMut(Stream, &str),
    ) -> Result<Loader, RedisError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |e: std::io::Error| RedisError::Loader(crate::error::io_reason(&e));
        let random = random_hex(20).map_err(io)?;
        let (password, tag) = random.split_at(32);
        let path = std::env::temp_dir().join(format!(
            "runbook-redis-restore-{}-{tag}",
            std::process::id()
        ));
        // `create`, not `create_all`: a directory someone else made is refused.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io)?;
        let dir = Scratch(path);
        let config = dir.0.join("redis.conf");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&config)
            .and_then(|mut file| {
                write!(
                    file,
                    "requirepass {password}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndbfilename dump.rdb\n"
                )
            })
            .map_err(io)?;
        let (from, to) = (rdb.to_path_buf(), dir.0.join("dump.rdb"));
        super::files::off_thread(move || std::fs::copy(from, to))
            .await
            .map_err(io)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io)?
            .port();
        let child = tokio::process::Command::new("redis-server")
            .arg(&config)
            .args(["--port", &port.to_string()])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                RedisError::Loader(format!(
                    "redis-server cannot be started ({}); it is needed where runbook runs",
                    crate::error::io_reason(&e)
                ))
            })?;
        let mut loader = Loader {
            port,
            password: password.to_string(),
            child,
            _dir: dir,
        };
        loader.ready(on_line).await?;
        Ok(loader)
    }

    fn target(&self) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: self.port,
            user: None,
            password: Some(self.password.clone()),
            db: 0,
            tls: None,
        }
    }

    /// Until the server answers PING with PONG. While it answers LOADING it
    /// is waited for as long as it is alive, saying so every ten seconds;
    /// one that never answers is given up after a minute.
    async fn ready(&mut self, on_line: &mut impl FnMut(Stream, &str)) -> Result<(), RedisError> {
        let started = Instant::now();
        let mut said = started;
        let mut answered = false;
        let loading = |message: &str| message.starts_with("LOADING");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(RedisError::Loader(format!(
                    "redis-server exited ({status}) while loading the snapshot"
                )));
            }
            let reply = match Connection::open(&self.target()).await {
                Ok(mut c) => c.call(&[b"PING"]).await,
                Err(e) => Err(e),
            };
            match reply {
                Ok(Reply::Status(pong)) if pong == "PONG" => return Ok(()),
                Ok(Reply::Error(m)) | Err(RedisError::Refused { message: m, .. })
                    if loading(&m) =>
                {
                    answered = true
                }
                Err(RedisError::Connect { .. } | RedisError::Lost { .. }) => {}
                Ok(_) => {
                    return Err(RedisError::Loader(format!(
                        "127.0.0.1:{} does not answer PING as a redis-server",
                        self.port
                    )))
                }
                Err(e) => return Err(RedisError::Loader(e.to_string())),
            }
            if !answered && started.elapsed() > Duration::from_secs(60) {
                return Err(RedisError::Loader(format!(
                    "redis-server did not answer on 127.0.0.1:{} within a minute",
                    self.port
                )));
            }
            if said.elapsed() >= Duration::from_secs(10) {
                said = Instant::now();
                on_line(
                    Stream::Stdout,
                    &format!(
                        "redis-server is still loading the snapshot ({} s)\n",
                        started.elapsed().as_secs()
                    ),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests;
