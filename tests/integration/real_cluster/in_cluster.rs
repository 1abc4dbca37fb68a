//! runbook inside a pod: no kubeconfig, the ServiceAccount's files at
//! `/var/run/secrets/kubernetes.io/serviceaccount/` and
//! `KUBERNETES_SERVICE_HOST`/`_PORT`, as the kubelet gives them. The files
//! are put there in a private mount namespace of the runbook process
//! (`unshare --mount`, a tmpfs over `/run`), so the machine's own `/run` is
//! left alone; that needs root, as CI has.

use super::access::{grant, port, service_account_token};
use super::{image_of, report, runbook_file, RealCluster};
use crate::common::root;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `runbook --state STATE ARGS` as a pod of the ServiceAccount whose
/// files are in `account` would: nothing of the test's kubeconfig visible.
fn in_a_pod(k8s: &RealCluster, account: &Path, state: &Path, args: &[&str]) -> Output {
    let home = account.join("home");
    std::fs::create_dir_all(&home).unwrap();
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs /run && d=/run/secrets/kubernetes.io/serviceaccount && mkdir -p $d \
             && cp \"$1\"/token \"$1\"/ca.crt \"$1\"/namespace $d/ && shift && exec \"$@\"",
        )
        .arg("sh")
        .arg(account)
        .arg(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(state)
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", &home)
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", port(k8s).to_string())
        .env("NO_COLOR", "1")
        .current_dir(root())
        .output()
        .expect("unshare starts")
}

/// The files a pod of ServiceAccount `name` of `ns` gets, in `dir`.
fn account_files(k8s: &RealCluster, dir: &Path, ns: &str, name: &str) -> std::path::PathBuf {
    let token = service_account_token(k8s, ns, name);
    let account = dir.join(format!("account-{name}"));
    std::fs::create_dir_all(&account).unwrap();
    std::fs::write(account.join("token"), token).unwrap();
    std::fs::write(account.join("namespace"), ns).unwrap();
    let kubeconfig = std::fs::read_to_string(&k8s.kubeconfig).unwrap();
    let ca = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority: "))
        .expect("the test kubeconfig names its CA file");
    std::fs::copy(ca.trim(), account.join("ca.crt")).unwrap();
    account
}

fn root_here(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs as root ({test})"
        );
        eprintln!("SKIPPED: {test} needs root (a mount namespace for the pod's files)");
    }
    root
}

#[test]
fn in_a_pod_the_service_accounts_token_namespace_and_ca_are_used() {
    if !root_here("real_in_cluster") {
        return;
    }
    let Some(mut k8s) = RealCluster::here("real_in_cluster") else {
        return;
    };
    let ns = k8s.namespace("in-cluster");
    let before = k8s.deployment(&ns, "api", 2, "registry.invalid/api:v1", json!({}));
    // No namespace in the runbook: the pod's own, from its files.
    let (dir, file) = runbook_file(
        "in-cluster",
        "runbook from_a_pod {\n  deploy ship {\n    deployment \"api\"\n    image \"registry.invalid/api:v2\"\n    timeout 2m\n  }\n\n  undo back after ship {\n    deploy ship\n  }\n}\n",
    );
    let account = account_files(&k8s, &dir, &ns, "runbook");

    // The account may do nothing yet: the server knows who it is.
    let refused = in_a_pod(
        &k8s,
        &account,
        &dir.join("state0"),
        &["run", file.to_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", report(&refused));
    assert!(
        report(&refused).contains(&format!(
            "accepted the credentials of context in-cluster, but user \"system:serviceaccount:{ns}:runbook\" may not get deployments.apps in namespace {ns}"
        )),
        "{}",
        report(&refused)
    );

    grant(
        &k8s,
        &ns,
        "runbook",
        &["get", "list", "watch", "patch", "update"],
    );
    let out = in_a_pod(
        &k8s,
        &account,
        &dir.join("state"),
        &["run", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));
    assert!(
        report(&out).contains(&format!(
            "deployment {ns}/api, container api: registry.invalid/api:v1"
        )),
        "{}",
        report(&out)
    );
    let after = k8s.get(&ns, "api");
    assert_eq!(after["spec"]["template"], before["spec"]["template"]);
    assert_eq!(image_of(&after), "registry.invalid/api:v1");
    assert_eq!(
        after["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3",
        "v2 was revision 2; the undo made v1's ReplicaSet revision 3"
    );
}
