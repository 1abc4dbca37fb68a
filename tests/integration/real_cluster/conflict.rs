//! Concurrent writers, with a real 409: another person's change lands
//! between runbook's read of a deployment and its write, and the real API
//! server refuses the write for its stale resourceVersion.
//!
//! The moment is made exact by a relay on loopback between runbook and the
//! API server (plain HTTP on runbook's side, TLS with the cluster's CA on
//! the server's). When runbook's write passes through, the relay holds it,
//! makes the other writer's change with a client of its own, waits for the
//! server to accept it, and only then forwards runbook's write. Nothing is
//! answered by the relay itself: every status runbook sees is the server's.

use super::{complete, image_of, report, runbook_file, RealCluster};
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Which request the relay holds (the first that matches), and the merge
/// patch the other writer applies to the same deployment meanwhile.
struct Interference {
    method: &'static str,
    namespace: String,
    name: String,
    other_write: Value,
}

struct Relay {
    /// A kubeconfig that sends runbook through the relay.
    kubeconfig: PathBuf,
    /// How many times the other writer wrote (0 or 1).
    interfered: Arc<AtomicUsize>,
}

impl Relay {
    fn start(k8s: &RealCluster, dir: &Path, interference: Interference) -> Relay {
        let admin = Kubeconfig::read_from(&k8s.kubeconfig).expect("reads");
        let cluster = admin.clusters[0].cluster.clone().expect("a cluster");
        let address = k8s.server_address();
        let ca = std::fs::read(
            cluster
                .certificate_authority
                .expect("the test kubeconfig names its CA file"),
        )
        .expect("reads the CA");
        let token = k8s.admin_token();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds to loopback");
        let port = listener.local_addr().expect("an address").port();
        let kubeconfig = dir.join("kubeconfig-relay");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: relay\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: relay\n  context:\n    cluster: relay\n    user: admin\ncurrent-context: relay\n"
            ),
        )
        .expect("writes the kubeconfig");

        let interfered = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&interfered);
        let admin_path = k8s.kubeconfig.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let config = Config::from_custom_kubeconfig(
                    Kubeconfig::read_from(&admin_path).expect("reads"),
                    &KubeConfigOptions::default(),
                )
                .await
                .expect("usable");
                let other = Client::try_from(config).expect("a client");
                let mut roots = rustls::RootCertStore::empty();
                use rustls::pki_types::pem::PemObject;
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
                    roots.add(cert.expect("a PEM certificate")).expect("a CA");
                }
                let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
                let shared = Arc::new(Shared {
                    address,
                    connector: tokio_rustls::TlsConnector::from(Arc::new(tls)),
                    interference,
                    other,
                    count,
                });
                listener.set_nonblocking(true).expect("non-blocking");
                let listener = TcpListener::from_std(listener).expect("tokio");
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(client, Arc::clone(&shared)));
                }
            });
        });
        Relay {
            kubeconfig,
            interfered,
        }
    }

    fn interfered(&self) -> usize {
        self.interfered.load(Ordering::SeqCst)
    }
}

struct Shared {
    address: String,
    connector: tokio_rustls::TlsConnector,
    interference: Interference,
    other: Client,
    count: Arc<AtomicUsize>,
}

/// One connection of runbook's: responses are copied back as they come
/// (watches stream); requests are read one by one (runbook's client sends
/// each with a Content-Length) so that the one to hold can be held.
async fn relay(client: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let upstream = TcpStream::connect(&shared.address).await?;
    let name = rustls::pki_types::ServerName::try_from(
        shared
            .address
            .rsplit_once(':')
            .map_or(shared.address.as_str(), |(host, _)| host)
            .to_string(),
    )
    .expect("a server name");
    let upstream = shared.connector.connect(name, upstream).await?;
    let (mut from_server, mut to_server) = tokio::io::split(upstream);
    let (from_runbook, mut to_runbook) = client.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_runbook).await;
        let _ = to_runbook.shutdown().await;
    });
    let mut from_runbook = BufReader::new(from_runbook);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if from_runbook.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let lower = head.to_ascii_lowercase();
        assert!(
            !lower.contains("transfer-encoding: chunked"),
            "the relay reads requests by their Content-Length: {head}"
        );
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse::<usize>().expect("a length"));
        let mut body = vec![0; length];
        from_runbook.read_exact(&mut body).await?;
        if shared.holds(&head) {
            shared.interfere().await;
        }
        to_server.write_all(head.as_bytes()).await?;
        to_server.write_all(&body).await?;
    }
}

impl Shared {
    /// The first write of the method chosen to the deployment itself.
    fn holds(&self, head: &str) -> bool {
        let i = &self.interference;
        let path = format!(
            "/apis/apps/v1/namespaces/{}/deployments/{}",
            i.namespace, i.name
        );
        let mut words = head.split_whitespace();
        let (method, target) = (words.next(), words.next().unwrap_or_default());
        method == Some(i.method)
            && target.split('?').next() == Some(path.as_str())
            && self
                .count
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    async fn interfere(&self) {
        let i = &self.interference;
        let api: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(self.other.clone(), &i.namespace);
        api.patch(
            &i.name,
            &PatchParams::default(),
            &Patch::Merge(&i.other_write),
        )
        .await
        .expect("the other writer's change is accepted");
    }
}

#[test]
fn an_undo_that_meets_another_writers_scale_reads_again_and_keeps_it() {
    let Some(mut k8s) = RealCluster::here("real_conflict_undo") else {
        return;
    };
    let ns = k8s.namespace("conflict-undo");
    let before = k8s.deployment(&ns, "api", 2, "registry.invalid/api:v1", json!({}));
    let (dir, file) = runbook_file(
        "conflict-undo",
        &format!(
            "runbook conflict {{\n  namespace \"{ns}\"\n\n  deploy ship {{\n    deployment \"api\"\n    image \"registry.invalid/api:v2\"\n    timeout 2m\n  }}\n\n  undo back after ship {{\n    deploy ship\n  }}\n}}\n"
        ),
    );
    // The deploy writes with a patch that carries no resourceVersion; the
    // undo writes the object as it read it (PUT), and meets a colleague
    // scaling the deployment to 3 in between.
    let relay = Relay::start(
        &k8s,
        &dir,
        Interference {
            method: "PUT",
            namespace: ns.clone(),
            name: "api".into(),
            other_write: json!({"spec": {"replicas": 3}}),
        },
    );
    let state = dir.join("state");
    let out = k8s.runbook_with(&state, &["run", file.to_str().unwrap()], &relay.kubeconfig);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    assert_eq!(relay.interfered(), 1, "the undo's write was held once");
    let logs = k8s.runbook(&state, &["logs", "1", "back"]);
    let text = report(&logs);
    assert!(
        text.contains("deployment api changed between runbook's read and its write (409 Conflict): reading it again (2 of 5)"),
        "{text}"
    );
    k8s.wait_complete(&ns, "api");
    let after = k8s.get(&ns, "api");
    assert_eq!(after["spec"]["template"], before["spec"]["template"]);
    assert_eq!(image_of(&after), "registry.invalid/api:v1");
    assert_eq!(
        after["spec"]["replicas"], 3,
        "the colleague's scale is kept"
    );
    assert!(complete(&after), "{after}");
}

#[test]
fn a_scale_that_meets_another_writers_scale_reads_again_and_logs_what_it_replaced() {
    let Some(mut k8s) = RealCluster::here("real_conflict_scale") else {
        return;
    };
    let ns = k8s.namespace("conflict-scale");
    k8s.deployment(&ns, "api", 2, "registry.invalid/api:v1", json!({}));
    let (dir, file) = runbook_file(
        "conflict-scale",
        &format!(
            "runbook conflict {{\n  namespace \"{ns}\"\n\n  scale more {{\n    deployment \"api\"\n    replicas 5\n    timeout 2m\n  }}\n}}\n"
        ),
    );
    // The scale's patch carries the resourceVersion it read; a colleague
    // scales to 4 in between, so the server refuses it and runbook reads
    // again: what it replaced is the colleague's 4, not the 2 it first saw.
    let relay = Relay::start(
        &k8s,
        &dir,
        Interference {
            method: "PATCH",
            namespace: ns.clone(),
            name: "api".into(),
            other_write: json!({"spec": {"replicas": 4}}),
        },
    );
    let state = dir.join("state");
    let out = k8s.runbook_with(&state, &["run", file.to_str().unwrap()], &relay.kubeconfig);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    assert_eq!(relay.interfered(), 1);
    let logs = report(&k8s.runbook(&state, &["logs", "1", "more"]));
    assert!(
        logs.contains("deployment api changed between runbook's read and its write (409 Conflict): reading it again (2 of 5)"),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("deployment {ns}/api: 4 -> 5 replicas")),
        "{logs}"
    );
    k8s.wait_complete(&ns, "api");
    assert_eq!(k8s.get(&ns, "api")["spec"]["replicas"], 5);
}
