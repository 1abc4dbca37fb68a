//! The seed's certificate renewal, from
//! `workflows/certificate_renewal.runbook`, run end to end by the real
//! binary: the expiry of the renewed file and of the certificate a TLS
//! listener on loopback presents, the gateway restarted on kubesim (a
//! simulated Kubernetes API server, with `kubectl` a stand-in) and on the
//! real control plane of `tests/k8s/` (with the real `kubectl`). Stand-ins:
//! `certbot` on PATH (it records its arguments), the webhook.

use crate::standin;

use crate::common::{root, scratch, stderr, stdout, write};
use crate::real_cluster::RealCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kubesim::{Sim, SimConfig};
use serde_json::json;
use standin::Standin;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A self-signed certificate for `127.0.0.1` that expires `days` from now:
/// (certificate PEM, key PEM, certificate DER, key DER).
fn certificate(days: i64) -> (String, String, Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let end = chrono::Utc::now() + chrono::Duration::days(days);
    use chrono::Datelike;
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(end.year(), end.month() as u8, end.day() as u8);
    let cert = params.self_signed(&key).expect("signs");
    (
        cert.pem(),
        key.serialize_pem(),
        cert.der().to_vec(),
        key.serialize_der(),
    )
}

/// A TLS listener on a free loopback port presenting `cert`; its port.
fn tls_listener(cert: Vec<u8>, key: Vec<u8>) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls::pki_types::CertificateDer::from(cert)],
        rustls::pki_types::PrivateKeyDer::try_from(key).expect("a key"),
    )
    .expect("a config");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let port = listener.local_addr().expect("an address").port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            listener.set_nonblocking(true).expect("non-blocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio");
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
    });
    port
}

fn recorder(bin: &Path, name: &str, log: &Path, extra: &str) {
    let path = write(
        bin,
        name,
        format!(
            "#!/bin/sh\necho \"{name} $*\" >> \"{}\"\n{extra}",
            log.display()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn a_renewal_checks_the_file_and_what_the_server_presents_and_restarts_the_gateway() {
    let dir = scratch("seed-certificate");
    let sim = Sim::start(SimConfig {
        tick: Duration::from_millis(30),
        seconds_per_tick: 5,
        token: None,
    });
    sim.add_deployment(
        "neo-production",
        "api-gateway",
        2,
        &[("gateway", "gateway:3")],
    );
    let kubeconfig = dir.join("kubeconfig");
    sim.kubeconfig(&kubeconfig, "default")
        .expect("writes the kubeconfig");
    // kubesim serves deployments only: `kubectl` is a stand-in too.
    // `kubectl create ... -o yaml` prints the secret; `kubectl apply -f -` reads it.
    let kubectl =
        "case \"$1\" in create) echo 'kind: Secret' ;; apply) cat >> \"$0.stdin\" ;; esac\n";
    let renewal = renew(&dir, Some(kubectl), &kubeconfig, "neo-production");

    let calls = std::fs::read_to_string(&renewal.calls).expect("the stand-ins ran");
    assert!(
        calls.contains("kubectl create secret tls neo-service-tls --namespace neo-production"),
        "{calls}"
    );
    assert!(calls.contains("kubectl apply -f -"), "{calls}");
    let d = sim
        .deployment("neo-production", "api-gateway")
        .expect("the deployment");
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );
}

/// The same against the real control plane, with the real `kubectl`: the
/// secret is made from the renewed files, and the gateway restarted by the
/// real controllers.
#[test]
fn a_renewal_puts_the_certificate_in_a_real_secret_and_restarts_the_gateway() {
    let Some(mut k8s) = RealCluster::here("real_seed_certificate") else {
        return;
    };
    let ns = k8s.namespace("certificate");
    k8s.deployment(
        &ns,
        "api-gateway",
        2,
        "registry.invalid/gateway:3",
        json!({}),
    );
    let dir = scratch("real-seed-certificate");
    let renewal = renew(&dir, None, &k8s.kubeconfig, &ns);
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), &ns);
    let secret = k8s
        .block_on(secrets.get("neo-service-tls"))
        .expect("the secret was made");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.expect("the secret holds data");
    assert_eq!(
        data.get("tls.crt").map(|b| b.0.as_slice()),
        Some(renewal.fullchain.as_bytes()),
        "the renewed certificate"
    );
    assert_eq!(
        data.get("tls.key").map(|b| b.0.as_slice()),
        Some(renewal.privkey.as_bytes())
    );
    k8s.assert_restarted(&ns, "api-gateway");
}

struct Renewal {
    /// The commands the stand-ins were called with, one per line.
    calls: std::path::PathBuf,
    fullchain: String,
    privkey: String,
}

/// Runs the seed with a `certbot` stand-in (renewed files with 60 days
/// left), a TLS listener presenting a certificate with 80, the Kubernetes
/// API server of `kubeconfig` and, when given, a `kubectl` stand-in of that
/// script; checks the run's exit and notice.
fn renew(dir: &Path, kubectl: Option<&str>, kubeconfig: &Path, namespace: &str) -> Renewal {
    let calls = dir.join("calls.log");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("a directory");
    recorder(&bin, "certbot", &calls, "");
    if let Some(script) = kubectl {
        recorder(&bin, "kubectl", &calls, script);
    }
    let live = dir.join("letsencrypt/live/neo-service");
    std::fs::create_dir_all(&live).expect("a directory");
    let (fullchain, privkey, _, _) = certificate(60);
    std::fs::write(live.join("fullchain.pem"), &fullchain).expect("writes");
    std::fs::write(live.join("privkey.pem"), &privkey).expect("writes");
    let (_, _, served, served_key) = certificate(80);
    let port = tls_listener(served, served_key);
    let hooks = Standin::start(|_, _| (200, String::new()));

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("run")
        .arg(root().join("workflows/certificate_renewal.runbook"))
        .args(["-p", "host=127.0.0.1", "-p", &format!("port={port}")])
        .args(["-p", &format!("namespace={namespace}")])
        .args([
            "-p",
            &format!("letsencrypt={}", dir.join("letsencrypt").display()),
        ])
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .env("ALERT_WEBHOOK_URL", format!("{}/hook", hooks.url))
        .env("NO_COLOR", "1")
        .current_dir(root())
        .output()
        .expect("the runbook binary starts");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let recorded = std::fs::read_to_string(&calls).expect("the stand-ins ran");
    assert!(
        recorded.contains("certbot renew --cert-name neo-service --webroot"),
        "{recorded}"
    );
    let notice = hooks
        .seen()
        .into_iter()
        .find(|s| s.target == "/hook")
        .expect("a notice");
    // The listener's certificate: 79 or 80 days, as the time of day goes.
    assert!(
        notice.body.contains("now presents a certificate with 79.")
            || notice.body.contains("now presents a certificate with 80"),
        "{}",
        notice.body
    );
    Renewal {
        calls,
        fullchain,
        privkey,
    }
}
