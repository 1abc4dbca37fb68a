use super::*;

/// A self-signed certificate for `localhost` that expires at `not_after`
/// (seconds since 1970), as PEM and DER, with its key.
fn certificate(not_after: (i32, u8, u8)) -> (String, Vec<u8>, rcgen::KeyPair) {
    certificate_with(not_after, |_| {})
}

/// As `certificate`, with `adjust` applied to its parameters before signing.
fn certificate_with(
    not_after: (i32, u8, u8),
    adjust: impl FnOnce(&mut rcgen::CertificateParams),
) -> (String, Vec<u8>, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    adjust(&mut params);
    let cert = params.self_signed(&key).expect("signs");
    (cert.pem(), cert.der().to_vec(), key)
}

/// Midnight UTC of a day, in seconds since 1970.
fn midnight(y: i32, m: u32, d: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("a date")
        .and_utc()
        .timestamp()
}

fn at(y: i32, m: u32, d: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(midnight(y, m, d) as u64)
}

#[test]
fn not_after_is_read_from_the_der() {
    let (_, der, _) = certificate((2031, 6, 15));
    assert_eq!(not_after(&der), Ok(midnight(2031, 6, 15)));
    // GeneralizedTime, from 2050 on.
    let (_, der, _) = certificate((2051, 1, 2));
    assert_eq!(not_after(&der), Ok(midnight(2051, 1, 2)));
}

#[test]
fn garbage_is_not_a_certificate() {
    assert!(not_after(b"").is_err());
    assert!(not_after(&[0x30, 0x82, 0xff]).is_err());
    assert!(not_after(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
}

#[test]
fn a_serial_number_longer_than_rfc_5280_allows_still_has_an_expiry() {
    let (_, der, _) = certificate_with((2031, 6, 15), |params| {
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x11; 24]));
    });
    assert!(not_after(&der).is_ok(), "{:?}", not_after(&der));
}

proptest::proptest! {
    /// The bytes a server presents are anyone's: no input panics, and a
    /// certificate cut short or with a byte changed is an error or a time,
    /// never a crash.
    #[test]
    fn any_bytes_are_an_error_or_a_time(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
        let _ = not_after(&bytes);
    }

    #[test]
    fn a_damaged_certificate_is_an_error_or_a_time(cut in 0usize..2048, at in 0usize..2048, byte in proptest::num::u8::ANY) {
        let (_, der, _) = certificate((2031, 6, 15));
        let mut damaged = der.clone();
        let at = at % damaged.len();
        damaged[at] = byte;
        let _ = not_after(&damaged);
        let _ = not_after(&der[..cut.min(der.len())]);
    }
}

#[tokio::test]
async fn a_certificate_is_found_after_a_bom_and_a_key_the_pem_reader_refuses() {
    let (pem, _, _) = certificate((2030, 1, 31));
    // A legacy encrypted key: its `Proc-Type:` header is not base64.
    let key = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    let path = std::env::temp_dir().join(format!("runbook-tls-bundle-{}.pem", std::process::id()));
    std::fs::write(&path, format!("\u{feff}{key}{pem}")).expect("writes");
    let shown = path.display().to_string();
    let days = days_left(&shown, at(2030, 1, 1), Duration::from_secs(5))
        .await
        .expect("reads");
    assert_eq!(days, 30.0);
    let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    std::fs::write(&path, broken).expect("writes");
    let err = days_left(&shown, at(2030, 1, 1), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err, TlsError::NotPem(shown.clone()));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_certificate_valid_from_before_1970_still_has_its_expiry() {
    let (_, der, _) = certificate_with((2031, 6, 15), |params| {
        params.not_before = rcgen::date_time_ymd(1950, 1, 1);
    });
    assert_eq!(not_after(&der), Ok(midnight(2031, 6, 15)));
}

#[tokio::test]
async fn a_pem_file_gives_days_left() {
    let (pem, _, _) = certificate((2030, 1, 31));
    let path = std::env::temp_dir().join(format!("runbook-tls-{}.pem", std::process::id()));
    std::fs::write(&path, format!("# a comment first\n{pem}")).expect("writes");
    let shown = path.display().to_string();
    let days = days_left(&shown, at(2030, 1, 1), Duration::from_secs(5))
        .await
        .expect("reads");
    assert_eq!(days, 30.0);
    let expired = days_left(&shown, at(2030, 2, 10), Duration::from_secs(5))
        .await
        .expect("reads");
    assert_eq!(expired, -10.0);
    std::fs::write(&path, "not a certificate").expect("writes");
    let err = days_left(&shown, at(2030, 1, 1), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err, TlsError::NotPem(shown.clone()));
    let _ = std::fs::remove_file(&path);
    let err = days_left(&shown, at(2030, 1, 1), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot read the certificate file {shown}: no such file")
    );
}

#[tokio::test]
async fn a_server_presents_its_certificate_even_self_signed() {
    let (_, der, key) = certificate((2029, 3, 1));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(der)],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("a key"),
    )
    .expect("a config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let port = listener.local_addr().expect("address").port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    let days = days_left(
        &format!("localhost:{port}"),
        at(2029, 2, 1),
        Duration::from_secs(5),
    )
    .await
    .expect("the certificate");
    assert_eq!(days, 28.0);
}

#[tokio::test]
async fn a_refused_port_is_one_sentence() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let err = days_left(
        &format!("127.0.0.1:{port}"),
        SystemTime::now(),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot connect to 127.0.0.1:{port}: connection refused")
    );
}
