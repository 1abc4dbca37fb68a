//! The seed's "Database Connection Pool Exhausted" response, from
//! `workflows/db_pool_exhausted.runbook`, run end to end by the real binary:
//! its diagnostic queries and the kill of idle connections against the
//! machine's real PostgreSQL, the restart against kubesim (a simulated
//! Kubernetes API server) and against the real control plane of
//! `tests/k8s/` (see `real_cluster`), two approvals from another process.

use crate::common::{
    approve_when_asked, postgres_here, psql, root, scratch, stderr, stdout, TestDb,
};
use crate::real_cluster::RealCluster;
use kubesim::{Sim, SimConfig};
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn runbook(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
    c.env("RUNBOOK_ALLOW_AS", "1");
    c.arg("--state")
        .arg(state)
        .current_dir(root())
        .env("NO_COLOR", "1");
    c
}

/// A client that connects and then sits idle until it is killed or its
/// backend is terminated.
fn idle_client(db: &str) -> Child {
    Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-X", "-q", "-d", db])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql starts")
}

#[test]
fn idle_connections_are_counted_terminated_after_approval_and_the_service_restarted() {
    if !postgres_here("db_pool_exhausted") {
        return;
    }
    let sim = Sim::start(SimConfig {
        tick: Duration::from_millis(30),
        seconds_per_tick: 5,
        token: None,
    });
    sim.add_deployment("neo-production", "orders", 2, &[("orders", "orders:7")]);
    let dir = scratch("seed-pool");
    let kubeconfig = dir.join("kubeconfig");
    sim.kubeconfig(&kubeconfig, "default")
        .expect("writes the kubeconfig");
    pool_exhausted(&dir, &kubeconfig, "neo-production");
    let d = sim
        .deployment("neo-production", "orders")
        .expect("the deployment");
    assert!(
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{d}"
    );
    assert_eq!(
        sim.rollout("neo-production", "orders"),
        kubesim::Rollout::Complete
    );
}

/// The same, with the restart done by the real control plane's controllers.
#[test]
fn the_pool_response_restarts_the_service_on_a_real_cluster() {
    if !postgres_here("db_pool_exhausted (real cluster)") {
        return;
    }
    let Some(mut k8s) = RealCluster::here("real_seed_pool") else {
        return;
    };
    let ns = k8s.namespace("pool");
    k8s.deployment(&ns, "orders", 2, "registry.invalid/orders:7", json!({}));
    pool_exhausted(&scratch("real-seed-pool"), &k8s.kubeconfig, &ns);
    k8s.assert_restarted(&ns, "orders");
}

/// Runs the seed with three idle clients of a new database of the
/// machine's PostgreSQL and deployment `orders` of `namespace` in the API
/// server of `kubeconfig`; approves both steps as `dba`, and checks what
/// the run did to PostgreSQL.
fn pool_exhausted(dir: &Path, kubeconfig: &Path, namespace: &str) {
    // The two tests run side by side: a database named for the test too.
    let label = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .replace('-', "_");
    let db = TestDb::create(&format!("runbook_t_pool_{}_{label}", std::process::id()))
        .expect("a database");
    let mut idle: Vec<Child> = (0..3).map(|_| idle_client(&db.0)).collect();
    let waited = Instant::now();
    while psql(&db.0, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle'") != "3" {
        assert!(waited.elapsed() < Duration::from_secs(10), "the idle clients did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = dir.join("state");
    let mut child = runbook(&state)
        .arg("run")
        .arg(root().join("workflows/db_pool_exhausted.runbook"))
        .args(["-p", "service=orders", "-p", "idle_minutes=0"])
        .args(["-p", &format!("namespace={namespace}")])
        .env("DATABASE_URL", db.url())
        .env("KUBECONFIG", kubeconfig)
        .env("ALERT_WEBHOOK_URL", "http://127.0.0.1:9/unused")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the runbook binary starts");
    approve_when_asked(&state, &mut child, "kill_ok", "dba");
    approve_when_asked(&state, &mut child, "pool_raised", "dba");
    let out = child.wait_with_output().expect("the run ends");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    let text = stdout(&out);
    // The approver was told how many were idle (the three, and perhaps a
    // connection of runbook's own between two queries), and the three went.
    let told: u32 = text
        .split(" connections idle > 0 min;")
        .next()
        .and_then(|before| before.rsplit('"').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the prompt shows the count: {text}"));
    assert!(told >= 3, "{text}");
    let logs = runbook(&state)
        .args(["logs", "1", "kill_idle"])
        .output()
        .expect("runs");
    assert!(stdout(&logs).contains("3 row(s)"), "{}", stdout(&logs));
    // Their backends are gone (psql itself notices only at its next command).
    let others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
    assert_eq!(psql(&db.0, others), "0");
    for client in &mut idle {
        let _ = client.kill();
        let _ = client.wait();
    }
}
