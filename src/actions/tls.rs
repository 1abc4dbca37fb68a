//! Days until a certificate expires: the one a server presents
//! (`host:port`), or the first in a PEM file. What the seed's
//! `openssl x509 -noout -dates` was for.
//!
//! Only the expiry is read. The chain is not verified: a certificate that
//! is about to expire, or already has, or is self-signed, must still be
//! measurable, and nothing is sent over the connection.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("the TLS handshake with {0} failed: {1}")]
    Handshake(String, String),
    #[error("{0} presented no certificate")]
    NoCertificate(String),
    #[error("cannot read the certificate file {0}: {1}")]
    File(String, String),
    #[error("{0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NotPem(String),
    #[error("the certificate from {0} could not be read: {1}")]
    Malformed(String, String),
}

/// Days (with a fraction) from `now` until the certificate at `target`
/// expires; negative once it has. A target with a `/`, or naming a file
/// that exists, is a file; otherwise `host:port` (port 443 if left out).
pub async fn days_left(target: &str, now: SystemTime, timeout: Duration) -> Result<f64, TlsError> {
    let der = if target.contains('/') || std::path::Path::new(target).is_file() {
        from_file(target).await?
    } else {
        presented(target, timeout).await?
    };
    let expires = not_after(&der).map_err(|why| TlsError::Malformed(target.into(), why))?;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok((expires - now) as f64 / 86_400.0)
}

async fn from_file(path: &str) -> Result<Vec<u8>, TlsError> {
    // A certificate file is a few KiB; a megabyte is plenty. A pipe or a
    // device is refused, and the reading cannot stall the run (`files`).
    let owned = std::path::PathBuf::from(path);
    let text = super::files::off_thread(move || {
        use std::io::Read;
        let mut text = Vec::new();
        super::files::open_plain(&owned)?
            .take(1 << 20)
            .read_to_end(&mut text)?;
        Ok(text)
    })
    .await
    .map_err(|e| TlsError::File(path.into(), crate::error::io_reason(&e)))?;
    // The first CERTIFICATE section; a key or anything else beside it is
    // passed over.
    CertificateDer::from_pem_slice(&text)
        .map(|der| der.to_vec())
        .map_err(|_| TlsError::NotPem(path.into()))
}

async fn presented(target: &str, timeout: Duration) -> Result<Vec<u8>, TlsError> {
    let (host, port) = match target.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && !h.is_empty() => (h, p),
        _ => (target, "443"),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let shown = format!("{host}:{port}");
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| TlsError::Connect(shown.clone(), "not a host name".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Handshake(shown.clone(), e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(format!("{host}:{port}"))
            .await
            .map_err(|e| TlsError::Connect(shown.clone(), connect_reason(&e)))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| TlsError::Handshake(shown.clone(), e.to_string()))?;
        let (_, session) = tls.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.as_ref().to_vec())
            .ok_or_else(|| TlsError::NoCertificate(shown.clone()))
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| TlsError::Connect(shown.clone(), "no answer in time".into()))?
}

fn connect_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ if e.to_string().contains("failed to lookup address") => {
            "the host name could not be resolved (DNS)".into()
        }
        _ => crate::error::io_reason(e),
    }
}

/// Accepts any certificate: this check reads the expiry and sends nothing.
/// Signatures are still checked, so the handshake itself is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `notAfter` of an X.509 certificate, in seconds since 1970, read by
/// x509-cert's DER decoder. The `Raw` profile: a certificate RFC 5280 would
/// frown at (a serial number longer than 20 bytes, say) still has an
/// expiry worth reporting.
pub fn not_after(der: &[u8]) -> Result<i64, String> {
    use x509_cert::certificate::{CertificateInner, Raw};
    use x509_cert::der::Decode;
    let certificate = CertificateInner::<Raw>::from_der(der)
        .map_err(|e| format!("not a DER certificate: {e}"))?;
    let after = certificate.tbs_certificate.validity.not_after;
    i64::try_from(after.to_unix_duration().as_secs())
        .map_err(|_| format!("notAfter {after} is beyond any date runbook can compute"))
}

#[cfg(test)]
mod tests;
