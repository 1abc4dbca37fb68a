//! The Redis protocol (RESP 2) as `restore` speaks it: one connection,
//! commands one at a time, every reply read within bounds (`MAX_LINE` and
//! below) and within `REPLY_TIMEOUT` of silence, so that a server that
//! misbehaves ends the step with one sentence instead of a hang or a
//! runaway allocation.

use super::{RedisError, Target};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What a connection's bytes travel on: TCP, or TLS over it (`rediss://`).
pub(super) trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire for T {}

pub(super) type Reader = BufReader<Box<dyn Wire>>;

/// The longest status, error or number line a server may send.
const MAX_LINE: usize = 64 * 1024;
/// The longest string a server may announce: Redis's own limit.
const MAX_BULK: usize = 512 * 1024 * 1024;
/// How deep lists may nest, and how many items one may have: far above any
/// reply of the commands sent here (SCAN's is two deep).
const MAX_DEPTH: usize = 8;
const MAX_ITEMS: usize = 1_000_000;
/// How long a server may send nothing while a reply is awaited.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A reply of the Redis protocol (RESP 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// Why a reply could not be read: the connection failed, or what the server
/// sent (or did not) is refused, said as the end of "Redis at HOST:PORT ...".
#[derive(Debug)]
enum Unread {
    Io(std::io::Error),
    Refused(String),
}

/// One connection, commands one at a time.
pub(super) struct Connection {
    pub(super) stream: Reader,
    pub(super) target: String,
    /// How long the server may send nothing while a reply is awaited.
    pub(super) patience: Duration,
}

impl Connection {
    pub(super) async fn open(target: &Target) -> Result<Connection, RedisError> {
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
        let wire: Box<dyn Wire> = match &target.tls {
            None => Box::new(tcp),
            Some(tls) => Box::new(super::tls::wrap(tcp, &target.host, tls, &shown).await?),
        };
        let mut connection = Connection {
            stream: BufReader::new(wire),
            target: shown,
            patience: REPLY_TIMEOUT,
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

    pub(super) async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        let read = match self.stream.get_mut().write_all(&request).await {
            Ok(()) => read_reply(&mut self.stream, 0, self.patience).await,
            Err(e) => Err(Unread::Io(e)),
        };
        let target = self.target.clone();
        read.map_err(|unread| match unread {
            Unread::Io(e) => RedisError::Lost {
                target,
                why: crate::error::io_reason(&e),
            },
            Unread::Refused(what) => RedisError::Unreadable { target, what },
        })
    }

    /// A command whose error reply is the step's error.
    pub(super) async fn ok(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        match self.call(args).await? {
            Reply::Error(message) => Err(RedisError::Refused {
                target: self.target.clone(),
                message,
            }),
            reply => Ok(reply),
        }
    }
}

/// One read, given up when the server sends nothing for `patience`.
async fn within<T>(
    patience: Duration,
    read: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, Unread> {
    match tokio::time::timeout(patience, read).await {
        Ok(done) => done.map_err(Unread::Io),
        Err(_) => Err(Unread::Refused(format!(
            "sent nothing for {} seconds",
            patience.as_secs()
        ))),
    }
}

fn closed() -> Unread {
    Unread::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the connection was closed",
    ))
}

fn not_resp() -> Unread {
    Unread::Refused("sent something that is not the Redis protocol".into())
}

/// A line without its CRLF, of at most `MAX_LINE` bytes.
async fn read_line(r: &mut Reader, patience: Duration) -> Result<Vec<u8>, Unread> {
    let mut line = Vec::new();
    let mut limited = (&mut *r).take(MAX_LINE as u64 + 2);
    within(patience, limited.read_until(b'\n', &mut line)).await?;
    if let Some(text) = line.strip_suffix(b"\r\n") {
        Ok(text.to_vec())
    } else if line.len() > MAX_LINE {
        Err(Unread::Refused("sent a line longer than 64 KiB".into()))
    } else if line.ends_with(b"\n") {
        Err(not_resp())
    } else {
        Err(closed())
    }
}

/// A bulk string of `n` bytes and its CRLF, read as it arrives: memory
/// follows what the server sends, not what it announced.
async fn read_bulk(r: &mut Reader, n: usize, patience: Duration) -> Result<Vec<u8>, Unread> {
    let mut data = Vec::new();
    while data.len() < n + 2 {
        let chunk = within(patience, r.fill_buf()).await?;
        if chunk.is_empty() {
            return Err(closed());
        }
        let taken = chunk.len().min(n + 2 - data.len());
        data.extend_from_slice(&chunk[..taken]);
        r.consume(taken);
    }
    if !data.ends_with(b"\r\n") {
        return Err(not_resp());
    }
    data.truncate(n);
    Ok(data)
}

fn read_reply<'a>(
    r: &'a mut Reader,
    depth: usize,
    patience: Duration,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, Unread>> + Send + 'a>> {
    Box::pin(async move {
        let line = read_line(r, patience).await?;
        let Some((&kind, rest)) = line.split_first() else {
            return Err(not_resp());
        };
        let text = || String::from_utf8_lossy(rest).into_owned();
        let number = || {
            std::str::from_utf8(rest)
                .ok()
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(not_resp)
        };
        Ok(match kind {
            b'+' => Reply::Status(text()),
            b'-' => Reply::Error(text()),
            b':' => Reply::Int(number()?),
            b'$' | b'*' if rest == b"-1" => match kind {
                b'$' => Reply::Bulk(None),
                _ => Reply::Array(Vec::new()),
            },
            b'$' => {
                let n = usize::try_from(number()?).map_err(|_| not_resp())?;
                if n > MAX_BULK {
                    return Err(Unread::Refused(format!(
                        "announced a string of {n} bytes, more than the 512 MiB Redis allows"
                    )));
                }
                Reply::Bulk(Some(read_bulk(r, n, patience).await?))
            }
            b'*' => {
                let n = usize::try_from(number()?).map_err(|_| not_resp())?;
                if depth >= MAX_DEPTH {
                    return Err(Unread::Refused(format!(
                        "sent lists nested more than {MAX_DEPTH} deep"
                    )));
                }
                if n > MAX_ITEMS {
                    return Err(Unread::Refused(format!(
                        "announced a list of {n} items, more than the {MAX_ITEMS} runbook reads"
                    )));
                }
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(read_reply(r, depth + 1, patience).await?);
                }
                Reply::Array(items)
            }
            _ => return Err(not_resp()),
        })
    })
}
