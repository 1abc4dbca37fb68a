//! The seed's disaster recovery, from `workflows/disaster_recovery.runbook`,
//! run end to end by the real binary: a pg_dump of a seeded database is
//! restored into a fresh one, a Redis snapshot into a password-protected
//! Redis, the row counts are verified, two people approve, and the watch
//! after the switch passes. Stand-ins: the DR gateway's health endpoints,
//! Prometheus, the webhook and PagerDuty (one HTTP server on loopback),
//! `kubectl` (a script on PATH that records its arguments; the real one
//! against the real control plane of `tests/k8s/` in a second test), and the
//! reference's two scripts (`scripts/data-validation.sh` counts the rows,
//! `scripts/switch-dns.sh` records the switch).

use crate::common;
use crate::standin;

use crate::common::{
    approve_when_asked, postgres_here, psql, root, scratch, stderr, stdout, write, Redis, TestDb,
};
use crate::real_cluster::RealCluster;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use standin::{prometheus_value, Standin};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn runbook(state: &Path, cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runbook"));
    c.env("RUNBOOK_ALLOW_AS", "1");
    c.arg("--state")
        .arg(state)
        .current_dir(cwd)
        .env("NO_COLOR", "1");
    c
}

#[test]
fn disaster_recovery_restores_both_stores_verifies_and_switches_after_two_approvals() {
    if !postgres_here("disaster_recovery") || !common::redis_here("disaster_recovery") {
        return;
    }
    let dir = scratch("seed-dr");
    let calls = recover(&dir, Redeploy::Recorded, "neo-production");
    assert!(
        calls.contains("kubectl apply -f k8s/services --namespace neo-production --context neo-dr"),
        "{calls}"
    );
}

/// The same with the redeploy done by the real `kubectl` against the real
/// control plane, through a kubeconfig whose context is the seed's
/// `neo-dr`: the manifests' objects are made and the deployment rolls out.
#[test]
fn disaster_recovery_redeploys_the_manifests_on_a_real_cluster() {
    if !postgres_here("disaster_recovery (real cluster)")
        || !common::redis_here("disaster_recovery (real cluster)")
    {
        return;
    }
    let Some(mut k8s) = RealCluster::here("real_seed_dr") else {
        return;
    };
    let ns = k8s.namespace("dr");
    let dir = scratch("real-seed-dr");
    let services = dir.join("k8s/services");
    std::fs::create_dir_all(&services).expect("a directory");
    write(
        &services,
        "api.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n      - name: api\n        image: registry.invalid/api:dr\n",
    );
    write(
        &services,
        "api-config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: api-config\ndata:\n  SITE: dr\n",
    );
    let kubeconfig = k8s.kubeconfig_for(&dir, &k8s.admin_token(), "neo-dr");
    recover(&dir, Redeploy::Real(&kubeconfig), &ns);
    k8s.wait_complete(&ns, "api");
    assert_eq!(
        crate::real_cluster::image_of(&k8s.get(&ns, "api")),
        "registry.invalid/api:dr"
    );
    let configs: Api<ConfigMap> = Api::namespaced(k8s.client(), &ns);
    let config = k8s
        .block_on(configs.get("api-config"))
        .expect("the configmap was applied");
    assert_eq!(
        config.data.and_then(|d| d.get("SITE").cloned()).as_deref(),
        Some("dr")
    );
}

/// Who redeploys: a `kubectl` stand-in that records its arguments, or the
/// real one with this kubeconfig.
enum Redeploy<'a> {
    Recorded,
    Real(&'a Path),
}

/// Runs the seed end to end in `dir` (its working directory), `namespace`
/// as the DR namespace; checks the restores, the approvals, the watch and
/// the notices, and returns what the stand-ins recorded.
fn recover(dir: &Path, redeploy: Redeploy, namespace: &str) -> String {
    // The two tests run side by side: databases named for the test too.
    let pid = format!(
        "{}_{}",
        std::process::id(),
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .replace('-', "_")
    );
    // The primary's last backup: a seeded database, dumped in custom format.
    let primary = TestDb::create(&format!("runbook_t_dr_primary_{pid}")).expect("a database");
    psql(
        &primary.0,
        "CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL);
         INSERT INTO accounts (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, 1234) g;
         CREATE TABLE orders (id serial PRIMARY KEY, account int REFERENCES accounts);
         INSERT INTO orders (account) SELECT 1 + g % 1234 FROM generate_series(1, 5000) g;",
    );
    let dump = dir.join("neo_service_layer.dump");
    let dumped = Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-Fc", "-f"])
        .arg(&dump)
        .arg(&primary.0)
        .output()
        .expect("pg_dump runs");
    assert!(dumped.status.success(), "{}", stderr(&dumped));
    let dr = TestDb::create(&format!("runbook_t_dr_site_{pid}")).expect("a database");
    // The cache's last snapshot, and the empty DR Redis (with a password).
    let cache = Redis::start(&dir.join("redis-primary"), None);
    cache.cli(None, &["SET", "session:42", "alice"]);
    cache.cli(None, &["HSET", "rates", "EUR", "1.08"]);
    cache.cli(None, &["SAVE"]);
    let snapshot = cache.dir.join("dump.rdb");
    let dr_cache = Redis::start(&dir.join("redis-dr"), Some("dr-pa55"));

    // Stand-ins: the DR site answers healthy, Prometheus says 0.1 % errors.
    let site = Standin::start(|seen, _| {
        if seen.target.starts_with("/api/v1/query") {
            (200, prometheus_value(0.001))
        } else if seen.target == "/pagerduty" {
            (202, r#"{"status":"success"}"#.into())
        } else {
            (200, r#"{"status":"Healthy"}"#.into())
        }
    });
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("a directory");
    let record = |name: &str, what: &str| {
        let path = write(
            &bin,
            name,
            format!(
                "#!/bin/sh\necho \"{what} $*\" >> \"{}\"\n",
                dir.join("calls.log").display()
            ),
        );
        make_executable(&path);
    };
    if let Redeploy::Recorded = redeploy {
        record("kubectl", "kubectl");
    }
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).expect("a directory");
    let validation = write(
        &scripts,
        "data-validation.sh",
        "#!/bin/sh\n# The row counts of the restored database, as the reference's script checks them.\nset -e\naccounts=$(psql \"$DATABASE_URL\" -X -tAc 'SELECT count(*) FROM accounts')\norders=$(psql \"$DATABASE_URL\" -X -tAc 'SELECT count(*) FROM orders')\necho \"accounts=$accounts orders=$orders\"\n[ \"$accounts\" = 1234 ] && [ \"$orders\" = 5000 ]\n",
    );
    make_executable(&validation);
    let switch = write(
        &scripts,
        "switch-dns.sh",
        format!(
            "#!/bin/sh\necho \"switch-dns $* by $APPROVED_BY\" >> \"{}\"\n",
            dir.join("calls.log").display()
        ),
    );
    make_executable(&switch);

    let state = dir.join("state");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = runbook(&state, dir);
    if let Redeploy::Real(kubeconfig) = redeploy {
        command.env("KUBECONFIG", kubeconfig);
    }
    let mut child = command
        .arg("run")
        .arg(root().join("workflows/disaster_recovery.runbook"))
        .args(["-p", &format!("backup={}", dump.display())])
        .args(["-p", &format!("redis_backup={}", snapshot.display())])
        .args(["-p", &format!("dr_url={}", site.url)])
        .args(["-p", &format!("public_url={}/public", site.url)])
        .args(["-p", &format!("dr_prometheus_url={}", site.url)])
        .args(["-p", &format!("namespace={namespace}")])
        .args([
            "-p",
            "dns_ttl=200ms",
            "-p",
            "watch=1s",
            "-p",
            "watch_every=300ms",
        ])
        .env("PATH", path)
        .env("DR_DATABASE_URL", dr.url())
        .env(
            "DR_REDIS_URL",
            format!("redis://:dr-pa55@127.0.0.1:{}/0", dr_cache.port),
        )
        .env("PAGERDUTY_ROUTING_KEY", "R0UTING")
        .env("PAGERDUTY_EVENTS_URL", format!("{}/pagerduty", site.url))
        .env("ALERT_WEBHOOK_URL", format!("{}/hook", site.url))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the runbook binary starts");
    approve_when_asked(&state, &mut child, "activate", "alice");
    approve_when_asked(&state, &mut child, "switch", "bob");
    let out: Output = child.wait_with_output().expect("the run ends");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    assert_eq!(psql(&dr.0, "SELECT count(*) FROM accounts"), "1234");
    assert_eq!(psql(&dr.0, "SELECT count(*) FROM orders"), "5000");
    assert_eq!(
        dr_cache.cli(Some("dr-pa55"), &["GET", "session:42"]),
        "alice"
    );
    assert_eq!(
        dr_cache.cli(Some("dr-pa55"), &["HGET", "rates", "EUR"]),
        "1.08"
    );
    let calls = std::fs::read_to_string(dir.join("calls.log")).expect("the stand-ins were called");
    assert!(calls.contains("switch-dns dr by bob"), "{calls}");
    let logs = runbook(&state, dir)
        .args(["logs", "1", "data_validation"])
        .output()
        .expect("runs");
    assert!(
        stdout(&logs).contains("accounts=1234 orders=5000"),
        "{}",
        stdout(&logs)
    );
    assert_eq!(site.count("/pagerduty"), 0, "no page: nothing failed");
    assert!(site.count("/hook") >= 3, "started, switched, recovered");
    calls
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
