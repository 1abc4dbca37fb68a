//! `restore` into Redis from an RDB snapshot, over the network.
//!
//! A running Redis cannot be handed a snapshot through its protocol, and
//! the DR Redis is usually on another machine. So the snapshot is loaded by
//! a private `redis-server` on this machine's loopback (a free port, no
//! persistence, removed afterwards), and every key is copied from it to the
//! target with `DUMP` and `RESTORE ... REPLACE`, keeping its time to live,
//! database by database. Keys of the target that the snapshot does not
//! have are left alone. Needs `redis-server` where runbook runs, of a
//! version no newer than the target's (a `DUMP` payload is refused by an
//! older Redis).
//!
//! The URL may hold a password: no error names more than `host:port`.

use super::command::Stream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedisError {
    #[error("`{0}` is not a Redis URL runbook can use (redis://[user:password@]host[:port][/db]; rediss:// is not supported yet)")]
    BadUrl(String),
    #[error("the snapshot {0} does not exist")]
    Missing(String),
    #[error("{0} is not a Redis RDB snapshot (it does not start with REDIS)")]
    NotRdb(String),
    #[error("cannot connect to Redis at {target}: {why}")]
    Connect { target: String, why: String },
    #[error("Redis at {target} answered an error: {message}")]
    Refused { target: String, message: String },
    #[error("Redis at {target} broke off: {why}")]
    Lost { target: String, why: String },
    #[error("cannot load the snapshot: {0}")]
    Loader(String),
}

/// Where a `redis://` URL points, and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, RedisError> {
        let bad = || RedisError::BadUrl(shown(url));
        let parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
        if parsed.scheme() != "redis" {
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
        })
    }

    fn shown(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A URL without what may be a password, for messages.
fn shown(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => url.chars().take(40).collect(),
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

/// A reply of the Redis protocol (RESP 2).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// One connection, commands one at a time.
struct Connection {
    stream: BufReader<TcpStream>,
    target: String,
}

impl Connection {
    async fn open(target: &Target) -> Result<Connection, RedisError> {
        let shown = target.shown();
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| RedisError::Connect {
            target: shown.clone(),
            why: "no answer in time".into(),
        })?
        .map_err(|e| RedisError::Connect {
            target: shown.clone(),
            why: match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                _ => crate::error::io_reason(&e),
            },
        })?;
        let mut connection = Connection {
            stream: BufReader::new(tcp),
            target: shown,
        };
        if let Some(password) = &target.password {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &target.user {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            connection.ok(&auth).await?;
        }
        connection
            .ok(&[b"SELECT", target.db.to_string().as_bytes()])
            .await?;
        Ok(connection)
    }

    async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        let lost = |e: std::io::Error, target: &str| RedisError::Lost {
            target: target.to_string(),
            why: crate::error::io_reason(&e),
        };
        self.stream
            .get_mut()
            .write_all(&request)
            .await
            .map_err(|e| lost(e, &self.target))?;
        read_reply(&mut self.stream)
            .await
            .map_err(|e| lost(e, &self.target))
    }

    /// A command whose error reply is the step's error.
    async fn ok(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        match self.call(args).await? {
            Reply::Error(message) => Err(RedisError::Refused {
                target: self.target.clone(),
                message,
            }),
            reply => Ok(reply),
        }
    }
}

fn read_reply<'a>(
    r: &'a mut BufReader<TcpStream>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Reply>> + Send + 'a>> {
    Box::pin(async move {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line).await?;
        let broken =
            || std::io::Error::new(std::io::ErrorKind::InvalidData, "not the Redis protocol");
        let text =
            String::from_utf8_lossy(line.strip_suffix(b"\r\n").ok_or_else(broken)?).to_string();
        let (kind, rest) = text.split_at(1.min(text.len()));
        let number = || rest.parse::<i64>().map_err(|_| broken());
        Ok(match kind {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(number()?),
            "$" => match number()? {
                -1 => Reply::Bulk(None),
                n => {
                    let n = usize::try_from(n).map_err(|_| broken())?;
                    let mut data = vec![0; n + 2];
                    r.read_exact(&mut data).await?;
                    data.truncate(n);
                    Reply::Bulk(Some(data))
                }
            },
            "*" => match number()? {
                -1 => Reply::Array(Vec::new()),
                n => {
                    let mut items = Vec::new();
                    for _ in 0..n {
                        items.push(read_reply(r).await?);
                    }
                    Reply::Array(items)
                }
            },
            _ => return Err(broken()),
        })
    })
}

/// Copies every key of the snapshot into the Redis at `url`; the number of keys.
pub async fn restore(
    url: &str,
    rdb: &Path,
    mut on_line: impl FnMut(Stream, &str),
) -> Result<u64, RedisError> {
    let target = Target::parse(url)?;
    check_rdb(rdb)?;
    let loader = Loader::start(rdb).await?;
    on_line(
        Stream::Stdout,
        &format!(
            "loaded {} in a private redis-server on 127.0.0.1:{}\n",
            rdb.display(),
            loader.port
        ),
    );
    let source_target = Target {
        host: "127.0.0.1".into(),
        port: loader.port,
        user: None,
        password: None,
        db: 0,
    };
    let mut source = Connection::open(&source_target).await?;
    let mut dest = Connection::open(&target).await?;
    let mut copied = 0;
    for db in databases(&mut source).await? {
        let number = db.to_string();
        source.ok(&[b"SELECT", number.as_bytes()]).await?;
        dest.ok(&[b"SELECT", number.as_bytes()]).await?;
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
                copied += copy_key(&mut source, &mut dest, key).await?;
                if copied % 10_000 == 0 {
                    on_line(Stream::Stdout, &format!("{copied} keys copied\n"));
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

/// One key, with its time to live; 0 when it expired in between.
async fn copy_key(
    source: &mut Connection,
    dest: &mut Connection,
    key: &[u8],
) -> Result<u64, RedisError> {
    let Reply::Bulk(Some(payload)) = source.ok(&[b"DUMP", key]).await? else {
        return Ok(0);
    };
    let ttl = match source.ok(&[b"PTTL", key]).await? {
        Reply::Int(ms) if ms > 0 => ms,
        Reply::Int(-2) => return Ok(0),
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
    Ok(1)
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

fn check_rdb(rdb: &Path) -> Result<(), RedisError> {
    let shown = rdb.display().to_string();
    let mut head = [0u8; 5];
    let mut file = std::fs::File::open(rdb).map_err(|_| RedisError::Missing(shown.clone()))?;
    use std::io::Read;
    match file.read_exact(&mut head) {
        Ok(()) if &head == b"REDIS" => Ok(()),
        _ => Err(RedisError::NotRdb(shown)),
    }
}

/// A private redis-server holding the snapshot, killed and its directory
/// removed when dropped.
struct Loader {
    port: u16,
    child: tokio::process::Child,
    dir: PathBuf,
}

impl Loader {
    async fn start(rdb: &Path) -> Result<Loader, RedisError> {
        let dir = std::env::temp_dir().join(format!(
            "runbook-redis-restore-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let io = |e: std::io::Error| RedisError::Loader(crate::error::io_reason(&e));
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::copy(rdb, dir.join("dump.rdb")).map_err(io)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io)?
            .port();
        let child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--dbfilename",
                "dump.rdb",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                RedisError::Loader(format!(
                    "redis-server cannot be started ({}); it is needed where runbook runs",
                    crate::error::io_reason(&e)
                ))
            })?;
        let mut loader = Loader { port, child, dir };
        loader.ready().await?;
        Ok(loader)
    }

    /// Until the server answers PING with PONG (not LOADING), for up to a minute.
    async fn ready(&mut self) -> Result<(), RedisError> {
        let target = Target {
            host: "127.0.0.1".into(),
            port: self.port,
            user: None,
            password: None,
            db: 0,
        };
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(RedisError::Loader(format!(
                    "redis-server exited ({status}) while loading the snapshot"
                )));
            }
            if let Ok(mut c) = Connection::open(&target).await {
                if c.call(&[b"PING"]).await == Ok(Reply::Status("PONG".into())) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(RedisError::Loader(
            "redis-server did not finish loading within a minute".into(),
        ))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
#[path = "redis_tests.rs"]
mod tests;
