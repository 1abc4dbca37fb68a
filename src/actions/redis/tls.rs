//! `rediss://`: the connection in TLS, with the same rustls (ring) as
//! reqwest and tokio-postgres. The server's certificate is always verified,
//! and its name: against the public roots (webpki-roots), or, given
//! `cacert=FILE`, against that file's certificates alone (a private CA, as
//! `redis-cli --cacert`). `cert=FILE&key=FILE` is this side's certificate,
//! for a server that asks for one (Redis's `tls-auth-clients`, on by
//! default). There is no way to skip the verification: a cache the DR
//! restore writes into is worth knowing it is the right one.

use super::{RedisError, Tls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A certificate or key file is a few KiB; a megabyte is plenty.
const MAX_FILE: u64 = 1 << 20;
/// How long the server may take to answer the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `tcp` in TLS, the server's certificate verified for `host`.
pub(super) async fn wrap(
    tcp: TcpStream,
    host: &str,
    tls: &Tls,
    shown: &str,
) -> Result<TlsStream<TcpStream>, RedisError> {
    let failed = |why: String| RedisError::Handshake {
        target: shown.to_string(),
        why,
    };
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        failed(format!(
            "`{host}` is not a host name a certificate can be for"
        ))
    })?;
    let config = config(tls).await?;
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp);
    // A server that does not speak TLS waits for a line that never comes.
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(done) => done.map_err(|e| failed(handshake_reason(&e))),
        Err(_) => Err(failed(format!(
            "no answer in {} seconds (does that port speak TLS?)",
            HANDSHAKE_TIMEOUT.as_secs()
        ))),
    }
}

async fn config(tls: &Tls) -> Result<rustls::ClientConfig, RedisError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &tls.ca_file {
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in certificates(path).await? {
                roots
                    .add(certificate)
                    .map_err(|e| unusable(path, &format!("a certificate in it is refused: {e}")))?;
            }
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RedisError::Loader(format!("TLS cannot be set up: {e}")))?
        .with_root_certificates(roots);
    match &tls.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates(cert).await?;
            let private = private_key(key).await?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| unusable(key, &format!("it does not go with {}: {e}", cert.display())))
        }
    }
}

fn unusable(path: &Path, why: &str) -> RedisError {
    RedisError::TlsFile {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// A plain file's bytes, read off the runtime's thread (`files`).
async fn read(path: &Path) -> Result<Vec<u8>, RedisError> {
    let bytes = super::super::files::read_at_most(path, MAX_FILE + 1)
        .await
        .map_err(|e| unusable(path, &crate::error::io_reason(&e)))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(unusable(path, "it is larger than 1 MiB"));
    }
    Ok(bytes)
}

async fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, RedisError> {
    let bytes = read(path).await?;
    let found: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|_| unusable(path, "it is not PEM"))?;
    if found.is_empty() {
        return Err(unusable(
            path,
            "it holds no certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(found)
}

async fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, RedisError> {
    let bytes = read(path).await?;
    // What the parser says about a key file could quote it: not repeated.
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| unusable(path, "it holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"))
}

/// What rustls said, as the end of "the TLS handshake ... failed: ".
fn handshake_reason(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(refused) => refused.to_string(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection (is it a TLS port?)".into()
        }
        None => crate::error::io_reason(e),
    }
}
