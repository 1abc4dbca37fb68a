//! Every Kubernetes step, run by the real binary, judged by what the real
//! controllers did: ReplicaSets, revisions and `pod-template-hash`.

use super::{complete, image_of, report, runbook_file, RealCluster};
use serde_json::json;

#[test]
fn deploy_scale_restart_verify_and_undo_leave_what_the_controllers_make_of_them() {
    let Some(mut k8s) = RealCluster::here("real_steps") else {
        return;
    };
    let ns = k8s.namespace("steps");
    let before = k8s.deployment(
        &ns,
        "api",
        2,
        "registry.invalid/api:v1",
        json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}}),
    );
    let first = k8s.replica_sets(&ns, "api");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].revision, 1);
    let (dir, file) = runbook_file(
        "steps",
        &format!(
            r#"runbook real_steps {{
  namespace "{ns}"

  deploy ship {{
    deployment "api"
    image "registry.invalid/api:v2"
    timeout 2m
  }}

  scale more after ship {{
    deployment "api"
    replicas 3
    timeout 1m
  }}

  restart fresh after more {{
    deployment "api"
    timeout 2m
  }}

  verify rolled after fresh {{
    rollout "api"
    expect ready
    timeout 2m
  }}

  undo back after rolled {{
    deploy ship
  }}
}}
"#
        ),
    );
    let state = dir.join("state");
    let out = k8s.runbook(&state, &["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", report(&out));

    let after = k8s.get(&ns, "api");
    assert!(complete(&after), "{after}");
    assert_eq!(after["spec"]["replicas"], 3, "the scale stays");
    assert_eq!(
        after["spec"]["template"], before["spec"]["template"],
        "undo put back exactly the template the deploy found (no restart annotation either)"
    );
    // The controller's own bookkeeping: v2 made revision 2, the restart
    // revision 3, and the undo brought back the first ReplicaSet (same
    // pod-template-hash) as the newest revision, 4, holding every replica.
    let sets = k8s.replica_sets(&ns, "api");
    assert_eq!(sets.len(), 3, "{sets:#?}");
    let newest = sets.last().unwrap();
    assert_eq!(newest.revision, 4, "{sets:#?}");
    assert_eq!(newest.hash, first[0].hash, "the old ReplicaSet came back");
    assert_eq!(newest.image, "registry.invalid/api:v1");
    assert_eq!(newest.replicas, 3);
    assert!(
        sets[..2].iter().all(|s| s.replicas == 0),
        "the others scaled down: {sets:#?}"
    );
    assert_eq!(
        after["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "4"
    );
    assert_eq!(image_of(&after), "registry.invalid/api:v1");
    // The real server serves watches: the deploy's wait never fell back.
    let ship = k8s.runbook(&state, &["logs", "1", "ship"]);
    assert!(
        super::stdout(&ship).contains("Waiting for deployment")
            && !super::stdout(&ship).contains("is not possible"),
        "{}",
        report(&ship)
    );
    let logs = k8s.runbook(&state, &["logs", "1", "more"]);
    assert!(
        super::stdout(&logs).contains(&format!("deployment {ns}/api: 2 -> 3 replicas")),
        "{}",
        report(&logs)
    );
}

#[test]
fn an_image_that_never_becomes_ready_fails_at_the_real_progress_deadline_and_is_put_back() {
    let Some(mut k8s) = RealCluster::here("real_deadline") else {
        return;
    };
    let ns = k8s.namespace("deadline");
    let before = k8s.deployment(
        &ns,
        "web",
        2,
        "registry.invalid/web:v1",
        json!({"spec": {"progressDeadlineSeconds": 3}}),
    );
    // The fake kubelet never makes pods of a `:broken` image Ready.
    let (dir, file) = runbook_file(
        "deadline",
        &format!(
            r#"runbook deadline {{
  deploy ship {{
    deployment "web"
    image "registry.invalid/web:broken"
    namespace "{ns}"
    timeout 2m
  }}

  rollback-if revert when ship.failed {{
    undo ship
    timeout 2m
  }}
}}
"#
        ),
    );
    let out = k8s.runbook(&dir.join("state"), &["run", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "rolled back: {}", report(&out));
    let text = format!("{}{}", super::stdout(&out), super::stderr(&out));
    assert!(
        text.contains("deployment \"web\" exceeded its progress deadline"),
        "{text}"
    );
    let after = k8s.get(&ns, "web");
    assert_eq!(after["spec"]["template"], before["spec"]["template"]);
    k8s.wait_complete(&ns, "web");
}
