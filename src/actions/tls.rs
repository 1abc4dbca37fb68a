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
    let text = super::files::read_at_most(std::path::Path::new(path), 1 << 20)
        .await
        .map_err(|e| TlsError::File(path.into(), crate::error::io_reason(&e)))?;
    // The first CERTIFICATE section that decodes, found by its marker, so
    // that what comes before it (a byte-order mark, comments, a key in a
    // form the PEM reader refuses) does not hide it; decoded by rustls's
    // pki-types.
    let begin = b"-----BEGIN CERTIFICATE-----";
    (0..text.len())
        .filter(|at| text[*at..].starts_with(begin))
        .find_map(|at| CertificateDer::from_pem_slice(&text[at..]).ok())
        .map(|der| der.to_vec())
        .ok_or_else(|| TlsError::NotPem(path.into()))
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

/// `notAfter` of an X.509 certificate, in seconds since 1970. A walk of
/// the DER structure down to `tbsCertificate.validity`; nothing else of the
/// certificate is interpreted, so a certificate a strict decoder refuses
/// (x509-cert, tried: a `notBefore` before 1970, a serial number with a
/// needless leading byte, a BOOLEAN that is not 0 or 0xFF, bytes after it)
/// still has its expiry read. It reads bytes from servers runbook does not
/// control: proptest feeds it any bytes and damaged certificates.
pub fn not_after(der: &[u8]) -> Result<i64, String> {
    let (certificate, _) = element(der, 0x30).ok_or("not a DER certificate")?;
    let (mut tbs, _) = element(certificate, 0x30).ok_or("no tbsCertificate")?;
    if tbs.first() == Some(&0xa0) {
        tbs = skip(tbs).ok_or("a broken version field")?;
    }
    // serialNumber, signature, issuer; then validity.
    for _ in 0..3 {
        tbs = skip(tbs).ok_or("a broken field before the validity")?;
    }
    let (validity, _) = element(tbs, 0x30).ok_or("no validity")?;
    let after = skip(validity).ok_or("no notBefore")?;
    let (tag, value) = (after.first().copied(), after);
    let (time, _) = match tag {
        Some(0x17) => element(value, 0x17),
        Some(0x18) => element(value, 0x18),
        _ => None,
    }
    .ok_or("no notAfter")?;
    let text = std::str::from_utf8(time).map_err(|_| "notAfter is not text")?;
    seconds(text, tag == Some(0x17)).ok_or_else(|| format!("notAfter `{text}` is not a time"))
}

/// The content of the element at the start of `der`, if it has `tag`, and what follows it.
fn element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *der.first()? != tag {
        return None;
    }
    let (len, header) = match *der.get(1)? {
        n if n < 0x80 => (n as usize, 2),
        0x81 => (*der.get(2)? as usize, 3),
        0x82 => ((*der.get(2)? as usize) << 8 | *der.get(3)? as usize, 4),
        0x83 => {
            let b = der.get(2..5)?;
            (
                (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize,
                5,
            )
        }
        _ => return None,
    };
    let body = der.get(header..header + len)?;
    Some((body, &der[header + len..]))
}

fn skip(der: &[u8]) -> Option<&[u8]> {
    element(der, *der.first()?).map(|(_, rest)| rest)
}

/// `YYMMDDHHMMSSZ` (UTCTime, 1950–2049) or `YYYYMMDDHHMMSSZ` (GeneralizedTime).
fn seconds(text: &str, utc_time: bool) -> Option<i64> {
    let digits = text.strip_suffix('Z')?;
    let (year, rest) = if utc_time {
        let yy: i64 = digits.get(..2)?.parse().ok()?;
        (
            if yy < 50 { 2000 + yy } else { 1900 + yy },
            digits.get(2..)?,
        )
    } else {
        (digits.get(..4)?.parse().ok()?, digits.get(4..)?)
    };
    let field = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)?;
    let time = date.and_hms_opt(hour as u32, minute as u32, second as u32)?;
    Some(time.and_utc().timestamp())
}

#[cfg(test)]
mod tests;
