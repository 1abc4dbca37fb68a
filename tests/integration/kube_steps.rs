//! The Kubernetes steps through the real binary, against kubesim (a
//! simulated API server): the runbook's own `namespace` for steps that name
//! none, `scale`, `restart` and `verify rollout`, and an unreachable cluster.

use crate::common;
use crate::common::{root, scratch, stderr, stdout, write};
use kubesim::{Sim, SimConfig};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn run(state: &Path, file: &Path, kubeconfig: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(state)
        .arg("run")
        .arg(file)
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .current_dir(root())
        .output()
        .expect("the runbook binary starts")
}

#[test]
fn steps_without_a_namespace_use_the_runbooks_and_scale_restart_and_verify() {
    let sim = Sim::start(SimConfig {
        tick: Duration::from_millis(30),
        seconds_per_tick: 5,
        token: None,
    });
    sim.add_deployment("neo-staging", "api", 2, &[("api", "api:1")]);
    let dir = scratch("kube-steps-namespace");
    let kubeconfig = dir.join("kubeconfig");
    // The context's own namespace is `default`, where there is no `api`.
    sim.kubeconfig(&kubeconfig, "default")
        .expect("writes the kubeconfig");
    let file = write(
        &dir,
        "ops.runbook",
        "runbook ops {\n  namespace \"neo-staging\"\n\n  scale more {\n    deployment \"api\"\n    replicas 4\n  }\n\n  restart fresh after more {\n    deployment \"api\"\n  }\n\n  verify rolled_out after fresh {\n    rollout \"api\"\n    expect ready\n  }\n}\n",
    );
    let out = run(&dir.join("state"), &file, &kubeconfig);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let d = sim
        .deployment("neo-staging", "api")
        .expect("the deployment");
    assert_eq!(d["spec"]["replicas"], 4);
    let restarted =
        &d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"];
    assert!(restarted.is_string(), "{d}");
    let logs = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(dir.join("state"))
        .args(["logs", "1", "more"])
        .output()
        .expect("runs");
    assert!(
        stdout(&logs).contains("deployment neo-staging/api: 2 -> 4 replicas"),
        "{}",
        stdout(&logs)
    );
}

#[test]
fn an_unreachable_cluster_fails_the_step_in_one_sentence() {
    let port = common::free_port();
    let dir = scratch("kube-steps-unreachable");
    let kubeconfig = write(
        &dir,
        "kubeconfig",
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: me\n  user:\n    token: s3cret-t0ken\ncontexts:\n- name: gone\n  context:\n    cluster: gone\n    user: me\ncurrent-context: gone\n"
        ),
    );
    let file = write(
        &dir,
        "deploy.runbook",
        "runbook d {\n  deploy api {\n    deployment \"api\"\n    image \"api:2\"\n    namespace \"neo-production\"\n  }\n}\n",
    );
    let out = run(&dir.join("state"), &file, &kubeconfig);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(
        text.contains("api failed in")
            && text.contains(&format!(
                "cannot reach the Kubernetes API server at http://127.0.0.1:{port}"
            )),
        "{text}"
    );
    assert!(!text.contains("s3cret-t0ken"), "{text}");
}

#[test]
fn a_scale_tried_again_still_says_how_many_replicas_there_were_before_the_run() {
    let sim = Sim::start(SimConfig {
        tick: Duration::from_millis(30),
        seconds_per_tick: 5,
        token: None,
    });
    sim.add_deployment("neo-production", "api", 2, &[("api", "api:1")]);
    // New pods never become ready: the first attempt times out after it
    // has scaled to 5; the second finds 5 and must still report 2.
    sim.set_never_ready("api:1", true);
    let dir = scratch("kube-steps-scale-again");
    let kubeconfig = dir.join("kubeconfig");
    sim.kubeconfig(&kubeconfig, "neo-production")
        .expect("writes the kubeconfig");
    let file = write(
        &dir,
        "scale.runbook",
        "runbook s {\n  scale more {\n    deployment \"api\"\n    replicas 5\n    timeout 1s\n    retry 1 every 1s\n  }\n\n  run said after more {\n    command \"echo\"\n    args [\"before: ${more.output.previous_replicas}\"]\n  }\n}\n",
    );
    let state = dir.join("state");
    let child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--state")
        .arg(&state)
        .arg("run")
        .arg(&file)
        .env("KUBECONFIG", &kubeconfig)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the runbook binary starts");
    // The first attempt's timeout passes; then pods may become ready.
    std::thread::sleep(Duration::from_millis(1300));
    sim.set_never_ready("api:1", false);
    let out = child.wait_with_output().expect("the run ends");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("more failed in"),
        "the first attempt timed out: {text}"
    );
    assert!(text.contains("said | before: 2"), "{text}");
}
