//! The API server behind an HTTPS proxy, as in many company networks:
//! `https_proxy` (or a kubeconfig's `proxy-url`) sends the Kubernetes
//! steps through an HTTP `CONNECT` tunnel, and `NO_PROXY` keeps the hosts
//! it lists direct. Before kube's `http-proxy` feature was on, any
//! `https_proxy` in the environment failed every Kubernetes step.

use super::{report, runbook_file, RealCluster};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// A `CONNECT` proxy on loopback; the targets it was asked to tunnel to.
struct ConnectProxy {
    url: String,
    tunnels: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds to loopback");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&tunnels);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || tunnel(client, &seen));
            }
        });
        ConnectProxy { url, tunnels }
    }

    fn tunnels(&self) -> Vec<String> {
        self.tunnels.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

fn tunnel(client: TcpStream, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let mut words = request.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        (&client).write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")?;
        return Ok(());
    };
    if let Ok(mut s) = seen.lock() {
        s.push(target.to_string());
    }
    let upstream = TcpStream::connect(target)?;
    (&client).write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let (mut up_read, mut client_write) = (upstream.try_clone()?, client.try_clone()?);
    std::thread::spawn(move || std::io::copy(&mut up_read, &mut client_write));
    // The client sends nothing before the 200, so the reader holds no
    // buffered bytes of the tunnel.
    std::io::copy(&mut reader.into_inner(), &mut &upstream)?;
    Ok(())
}

fn runbook(k8s: &RealCluster, state: &std::path::Path, file: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
    c.env("RUNBOOK_ALLOW_AS", "1")
        .arg("--state")
        .arg(state)
        .arg("run")
        .arg(file)
        .env("KUBECONFIG", &k8s.kubeconfig)
        .env("NO_COLOR", "1");
    for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        c.env_remove(var).env_remove(var.to_uppercase());
    }
    c
}

fn scale_file(test: &str, ns: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    runbook_file(
        test,
        &format!(
            "runbook proxied {{\n  scale more {{\n    deployment \"api\"\n    replicas 2\n    namespace \"{ns}\"\n    timeout 1m\n  }}\n}}\n"
        ),
    )
}

#[test]
fn the_kubernetes_steps_go_through_the_https_proxy_of_the_environment() {
    let Some(mut k8s) = RealCluster::here("real_proxy") else {
        return;
    };
    let ns = k8s.namespace("proxy");
    k8s.deployment(&ns, "api", 1, "registry.invalid/api:v1", json!({}));
    let proxy = ConnectProxy::start();
    let (dir, file) = scale_file("proxy", &ns);
    let out = runbook(&k8s, &dir.join("state"), &file)
        .env("https_proxy", &proxy.url)
        .output()
        .expect("the runbook binary starts");
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    let tunnels = proxy.tunnels();
    let server = k8s.server_address();
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| *t == server),
        "every connection to {server} went through the proxy: {tunnels:?}"
    );
    assert_eq!(k8s.get(&ns, "api")["spec"]["replicas"], 2);
}

#[test]
fn no_proxy_keeps_the_api_server_direct() {
    let Some(mut k8s) = RealCluster::here("real_no_proxy") else {
        return;
    };
    let ns = k8s.namespace("no-proxy");
    k8s.deployment(&ns, "api", 1, "registry.invalid/api:v1", json!({}));
    let proxy = ConnectProxy::start();
    let (dir, file) = scale_file("no-proxy", &ns);
    let out = runbook(&k8s, &dir.join("state"), &file)
        .env("HTTPS_PROXY", &proxy.url)
        .env("NO_PROXY", "localhost,127.0.0.1")
        .output()
        .expect("the runbook binary starts");
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    assert_eq!(proxy.tunnels(), Vec::<String>::new());
    assert_eq!(k8s.get(&ns, "api")["spec"]["replicas"], 2);
}
