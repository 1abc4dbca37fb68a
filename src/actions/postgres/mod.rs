//! Running one SQL statement against PostgreSQL, for `query` steps and for
//! `verify` steps that check a value. Parameters are always bound, never
//! pasted into the SQL text. Errors name the server as `host:port/dbname`
//! and never carry the password or the connection string. Dumps and
//! restores (the client programs) are in `postgres_dump.rs`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::tls::NoTls;
use tokio_postgres::types::{Format, IsNull, ToSql, Type};
use tokio_postgres::{CancelToken, Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

mod dump;
mod render;
mod tls;

pub use dump::{backup, dump_kind, restore, DumpFormat, DumpKind};

#[derive(Debug, Clone, Default)]
pub struct Query {
    /// A `postgres://` URL or `key=value` pairs, as libpq takes them.
    pub connection: String,
    pub sql: String,
    /// Bound in order to `$1`, `$2`, ...
    pub params: Vec<String>,
    /// For connecting and running together.
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// Rows returned, or for a statement that returns none, rows affected.
    pub rows: u64,
    pub columns: Vec<String>,
    /// The PostgreSQL type of each column (`bool`, `int4`, `text`, ...).
    pub types: Vec<String>,
    /// Each column of the first row as text; `None` for SQL NULL.
    pub first_row: Vec<Option<String>>,
    /// The first column of the first row.
    pub value: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the PostgreSQL connection string is malformed: {why}")]
    Malformed { why: String },
    #[error("cannot connect to PostgreSQL at {target}: {why}")]
    Connect { target: String, why: String },
    #[error("cannot connect to PostgreSQL at {target}: the host name {host} does not resolve")]
    UnknownHost { target: String, host: String },
    #[error("PostgreSQL at {target} refused the login: {why}")]
    Login { target: String, why: String },
    #[error("the database {dbname} does not exist on the PostgreSQL server at {target}")]
    NoDatabase { target: String, dbname: String },
    #[error("the query failed at {target}: {message} (SQLSTATE {code})")]
    Sql {
        target: String,
        message: String,
        code: String,
    },
    #[error("the query expects {wanted} parameter values, not {given}")]
    Params { wanted: usize, given: usize },
    #[error("the connection to PostgreSQL at {target} was lost: {why}")]
    Lost { target: String, why: String },
    #[error("the query at {target} did not finish within {limit:?} and was cancelled")]
    TimedOut { target: String, limit: Duration },
    #[error("the dump {} does not exist", path.display())]
    DumpMissing { path: std::path::PathBuf },
    #[error("{} is not a PostgreSQL dump (neither custom format nor plain SQL)", path.display())]
    NotADump { path: std::path::PathBuf },
    #[error("cannot use {}: {why}", path.display())]
    File {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("`{program}` failed for {target}: {why}")]
    Program {
        program: String,
        target: String,
        why: String,
    },
}

/// How the connection is protected. `tokio-postgres` knows only disable,
/// prefer and require, so `verify-ca` and `verify-full` are read here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    Off,
    /// `prefer` and `require`: encrypted, the certificate not checked, as
    /// libpq does. `prefer` goes on without TLS when the server has none.
    Unverified,
    /// The chain against the Mozilla roots, not the host name.
    VerifyCa,
    VerifyFull,
}

/// A parsed connection string: what to connect to and how to name it.
pub(crate) struct Target {
    pub(crate) config: Config,
    pub(crate) tls: TlsMode,
    /// The `sslmode` as written, for the client programs (libpq knows all).
    pub(crate) sslmode: Option<String>,
    /// `host:port/dbname`, safe to print.
    pub(crate) name: String,
}

impl Target {
    pub(crate) fn parse(connection: &str) -> Result<Target, PgError> {
        let (text, sslmode) = take_sslmode(connection);
        let config: Config = text.parse().map_err(|e: tokio_postgres::Error| {
            let why = match std::error::Error::source(&e) {
                // Option names and "invalid value for option `port`"; the
                // parser's other messages may quote characters of a secret.
                Some(s) if s.to_string().contains("option") => s.to_string(),
                _ => "it is neither a postgres:// URL nor key=value pairs".into(),
            };
            PgError::Malformed { why }
        })?;
        let tls = match sslmode.as_deref() {
            Some("disable") => TlsMode::Off,
            Some("verify-ca") => TlsMode::VerifyCa,
            Some("verify-full") => TlsMode::VerifyFull,
            _ => TlsMode::Unverified,
        };
        let name = describe(&config);
        Ok(Target {
            config,
            tls,
            sslmode,
            name,
        })
    }

    pub(crate) fn dbname(&self) -> String {
        self.config
            .get_dbname()
            .or(self.config.get_user())
            .unwrap_or("postgres")
            .to_string()
    }

    pub(crate) fn password(&self) -> Option<String> {
        self.config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// Replaces the password wherever it shows up in `text`: the last guard
    /// on anything printed about this connection.
    pub(crate) fn scrub(&self, text: &str) -> String {
        match self.password() {
            Some(p) if !p.is_empty() => text.replace(&p, "***"),
            _ => text.to_string(),
        }
    }
}

/// Finds `sslmode` in either form, and puts `require` in place of the modes
/// `tokio-postgres` cannot parse.
fn take_sslmode(connection: &str) -> (Cow<'_, str>, Option<String>) {
    let Some(at) = connection.rfind("sslmode") else {
        return (Cow::Borrowed(connection), None);
    };
    let after = &connection[at + "sslmode".len()..];
    let Some(rest) = after.trim_start().strip_prefix('=') else {
        return (Cow::Borrowed(connection), None);
    };
    let rest = rest.trim_start();
    let quoted = rest.starts_with('\'');
    let value_start = connection.len() - rest.len() + usize::from(quoted);
    let value: String = connection[value_start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if value != "verify-ca" && value != "verify-full" {
        return (Cow::Borrowed(connection), Some(value));
    }
    let mut text = connection.to_string();
    text.replace_range(value_start..value_start + value.len(), "require");
    (Cow::Owned(text), Some(value))
}

/// `host:port/dbname` for every host, without user or password.
fn describe(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                tokio_postgres::config::Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "(no host)".to_string()
    } else {
        hosts.join(",")
    };
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{hosts}/{db}")
}

/// A value bound as text: the server parses it as whatever type it
/// inferred for the parameter (`$1::int` makes it an integer), exactly as
/// psql would. It never becomes part of the SQL text.
#[derive(Debug)]
struct TextParam<'a>(&'a str);

impl ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A connected client, and how to cancel what it runs.
struct Session {
    client: Client,
    cancel: Cancel,
}

/// Sends a server-side cancel when dropped armed: a step stopped while its
/// query runs must not leave the backend working.
struct Cancel {
    token: Option<CancelToken>,
    tls: Option<MakeRustlsConnect>,
}

impl Cancel {
    async fn now(mut self) {
        if let Some(token) = self.token.take() {
            send_cancel(token, self.tls.take()).await;
        }
    }

    fn disarm(mut self) {
        self.token = None;
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        if let (Some(token), Ok(handle)) =
            (self.token.take(), tokio::runtime::Handle::try_current())
        {
            handle.spawn(send_cancel(token, self.tls.take()));
        }
    }
}

async fn send_cancel(token: CancelToken, tls: Option<MakeRustlsConnect>) {
    // Best effort: the session's statement_timeout stops it otherwise.
    let limit = Duration::from_secs(5);
    let _ = match tls {
        Some(tls) => tokio::time::timeout(limit, token.cancel_query(tls)).await,
        None => tokio::time::timeout(limit, token.cancel_query(NoTls)).await,
    };
}

/// Runs one statement with its parameters bound. TLS follows `sslmode` as
/// libpq does: `disable` never, `prefer` (the default) when the server
/// offers it, `require` always, the certificate checked against the
/// Mozilla roots only with `verify-ca` and `verify-full`. With a timeout, the
/// session's `statement_timeout` is set too, and the query is cancelled on
/// the server when the time passes or the caller stops waiting.
pub async fn query(q: &Query) -> Result<QueryResult, PgError> {
    let target = Target::parse(&q.connection)?;
    let deadline = q.timeout.map(|t| tokio::time::Instant::now() + t);
    let timed_out = |target: &Target| PgError::TimedOut {
        target: target.name.clone(),
        limit: q.timeout.unwrap_or_default(),
    };
    let session = match deadline {
        Some(at) => tokio::time::timeout_at(at, connect(&target))
            .await
            .map_err(|_| timed_out(&target))??,
        None => connect(&target).await?,
    };
    let Session { client, cancel } = session;
    let work = run(&client, &target, q);
    let result = match deadline {
        Some(at) => match tokio::time::timeout_at(at, work).await {
            Ok(result) => result,
            Err(_) => {
                cancel.now().await;
                return Err(timed_out(&target));
            }
        },
        None => work.await,
    };
    cancel.disarm();
    match result {
        Err(PgError::Sql { code, .. }) if code == "57014" && q.timeout.is_some() => {
            Err(timed_out(&target))
        }
        other => other,
    }
}

async fn connect(target: &Target) -> Result<Session, PgError> {
    let fail = |e: tokio_postgres::Error| connect_error(target, &e);
    match tls_config(target.tls) {
        None => {
            let (client, connection) = target.config.connect(NoTls).await.map_err(fail)?;
            tokio::spawn(connection);
            let token = client.cancel_token();
            Ok(Session {
                client,
                cancel: Cancel {
                    token: Some(token),
                    tls: None,
                },
            })
        }
        Some(config) => {
            let tls = MakeRustlsConnect::new(config);
            let (client, connection) = target.config.connect(tls.clone()).await.map_err(fail)?;
            tokio::spawn(connection);
            let token = client.cancel_token();
            Ok(Session {
                client,
                cancel: Cancel {
                    token: Some(token),
                    tls: Some(tls),
                },
            })
        }
    }
}

async fn run(client: &Client, target: &Target, q: &Query) -> Result<QueryResult, PgError> {
    let sql_error = |e: tokio_postgres::Error| sql_error(target, &e);
    if let Some(limit) = q.timeout {
        // 0 would mean no limit; the value is a number we made, not input.
        let ms = limit.as_millis().clamp(1, i32::MAX as u128);
        client
            .batch_execute(&format!("SET statement_timeout = {ms}"))
            .await
            .map_err(sql_error)?;
    }
    let statement = client.prepare(&q.sql).await.map_err(sql_error)?;
    let wanted = statement.params().len();
    if wanted != q.params.len() {
        return Err(PgError::Params {
            wanted,
            given: q.params.len(),
        });
    }
    let params: Vec<TextParam> = q.params.iter().map(|p| TextParam(p)).collect();
    let rows = client
        .query_raw(&statement, params.iter().map(|p| p as &dyn ToSql))
        .await
        .map_err(sql_error)?;
    let mut rows = std::pin::pin!(rows);
    let mut result = QueryResult {
        columns: statement
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect(),
        types: statement
            .columns()
            .iter()
            .map(|c| c.type_().name().to_string())
            .collect(),
        ..QueryResult::default()
    };
    // Rows are counted as they stream by; only the first is kept.
    let mut count = 0u64;
    while let Some(row) = rows.next().await {
        let row = row.map_err(sql_error)?;
        if count == 0 {
            result.first_row = render::row(&row);
        }
        count += 1;
    }
    result.rows = if statement.columns().is_empty() {
        rows.rows_affected().unwrap_or(0)
    } else {
        count
    };
    result.value = result.first_row.first().cloned().flatten();
    Ok(result)
}

/// The rustls configuration for a mode, or `None` for no TLS.
fn tls_config(mode: TlsMode) -> Option<rustls::ClientConfig> {
    if mode == TlsMode::Off {
        return None;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .ok()?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?;
    let config = match mode {
        TlsMode::VerifyFull => builder.with_webpki_verifier(verifier).with_no_client_auth(),
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tls::Lenient {
                inner: verifier,
                check_chain: mode == TlsMode::VerifyCa,
            }))
            .with_no_client_auth(),
    };
    Some(config)
}

/// What went wrong while connecting, in terms of the server's answer or
/// the socket's, never quoting the connection string.
fn connect_error(target: &Target, e: &tokio_postgres::Error) -> PgError {
    let t = target.name.clone();
    if let Some(db) = e.as_db_error() {
        let why = target.scrub(db.message());
        return match db.code().code() {
            "3D000" => PgError::NoDatabase {
                target: t,
                dbname: target.dbname(),
            },
            "28P01" => PgError::Login {
                target: t,
                why: format!(
                    "the password for role {} is wrong",
                    target.config.get_user().unwrap_or("(default)")
                ),
            },
            "28000" => PgError::Login { target: t, why },
            code => PgError::Connect {
                target: t,
                why: format!("{why} (SQLSTATE {code})"),
            },
        };
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    let why = match io.map(|io| (io.kind(), io.to_string())) {
        Some((std::io::ErrorKind::ConnectionRefused, _)) => {
            "connection refused; is the server running?".to_string()
        }
        Some((std::io::ErrorKind::TimedOut, _)) => "the connection timed out".to_string(),
        Some((_, text)) if text.contains("lookup") || text.contains("not known") => {
            let host = t.split(':').next().unwrap_or_default().to_string();
            return PgError::UnknownHost { target: t, host };
        }
        Some((_, text)) => text,
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    };
    PgError::Connect {
        target: t,
        why: target.scrub(&why),
    }
}

fn sql_error(target: &Target, e: &tokio_postgres::Error) -> PgError {
    match e.as_db_error() {
        Some(db) => PgError::Sql {
            target: target.name.clone(),
            message: target.scrub(db.message()),
            code: db.code().code().to_string(),
        },
        None => PgError::Lost {
            target: target.name.clone(),
            why: target.scrub(&e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests;
