//! The Kubernetes steps: `deploy`, `undo`, `restart`, `scale`, the actions
//! of `rollback-if`, and `verify` with `rollout`. What a step must not lose
//! before it changes the cluster is noted in the journal first (`Notes`):
//! the pod template a deploy replaces, the instant a restart stamps. So an
//! undo puts back exactly what was there, even after a crash mid-rollout,
//! and a restart run again after an interruption stamps the same instant
//! (no second restart).

use super::log::Log;
use super::sample::Sample;
use super::scope::Scope;
use crate::actions::kube::{self, Cluster, Target};
use crate::actions::step::Notes;
use crate::actions::step::StepError;
use crate::compile::action::{Deploy, Input, KubeTarget, Restart, Rollback, RollbackIf, Scale};
use crate::compile::eval::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// How often a rollout is looked at while it is waited for.
const POLL: Duration = Duration::from_secs(1);

type Outputs = BTreeMap<String, String>;

/// What a deploy noted before changing anything: where, and what to put back.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Recorded {
    deployment: String,
    namespace: String,
    context: String,
    container: String,
    template: serde_json::Value,
    revision: Option<String>,
    image: String,
}

async fn connect(target: &KubeTarget, scope: &Scope) -> Result<Cluster, StepError> {
    let target = Target {
        context: scope
            .text_of(target.context.as_ref())?
            .or_else(|| scope.kube_defaults.context.clone()),
        namespace: scope
            .text_of(target.namespace.as_ref())?
            .or_else(|| scope.kube_defaults.namespace.clone()),
    };
    kube::connect(&target, &|name| scope.env_var(name))
        .await
        .map_err(StepError::from)
}

fn where_(cluster: &Cluster, name: &str) -> String {
    format!("{}/{}/{name}", cluster.context, cluster.namespace)
}

/// The context a deploy records when runbook ran in a pod, with its service account.
const IN_CLUSTER: &str = "in-cluster";

async fn wait(cluster: &Cluster, name: &str, log: &Log) -> Result<(), StepError> {
    kube::wait_rollout(cluster, name, POLL, |message| {
        log.line(false, &format!("{message}\n"))
    })
    .await
    .map_err(StepError::from)
}

/// `deploy`: note the pod template, set the image, wait for the rollout.
pub(super) async fn deploy_step(
    deploy: &Deploy,
    scope: &Scope,
    log: &Log,
    mut notes: Notes,
) -> Result<Outputs, StepError> {
    let name = scope.text(&deploy.deployment)?;
    let image = scope.text(&deploy.image)?;
    let container = scope.text_of(deploy.container.as_ref())?;
    let cluster = connect(&deploy.target, scope).await?;
    // An attempt after the first keeps the first one's record: by then the
    // deployment may already hold the new image. The record is per target,
    // so an attempt that addresses another deployment records its own.
    let key = format!("before {}", where_(&cluster, &name));
    let before = match notes.get(&key).map(serde_json::from_str::<Recorded>) {
        Some(Ok(recorded)) => {
            if let Some(asked) = container.as_deref().filter(|c| *c != recorded.container) {
                return Err(format!(
                    "an earlier attempt of this step recorded container `{}` of deployment {}/{name}, and this one names `{asked}`; to deploy another container, write another step",
                    recorded.container, cluster.namespace
                )
                .into());
            }
            recorded
        }
        _ => {
            let read = kube::before_deploy(&cluster, &name, container.as_deref())
                .await
                .map_err(StepError::from)?;
            let recorded = Recorded {
                deployment: name.clone(),
                namespace: cluster.namespace.clone(),
                context: cluster.context.clone(),
                container: read.container,
                template: read.template,
                revision: read.revision,
                image: read.image,
            };
            let text = serde_json::to_string(&recorded).map_err(|e| e.to_string())?;
            notes.keep(&key, &text).await?;
            recorded
        }
    };
    log.line(
        false,
        &format!(
            "deployment {}/{name}, container {}: {} (revision {}) -> {image}\n",
            cluster.namespace,
            before.container,
            before.image,
            before.revision.as_deref().unwrap_or("none")
        ),
    );
    kube::set_image(&cluster, &name, &before.container, &image)
        .await
        .map_err(StepError::from)?;
    wait(&cluster, &name, log).await?;
    let revision = kube::revision(&cluster, &name)
        .await
        .map_err(StepError::from)?
        .unwrap_or_default();
    log.line(false, &format!("rolled out: revision {revision}\n"));
    Ok(BTreeMap::from([
        ("revision".to_string(), revision),
        (
            "previous_revision".to_string(),
            before.revision.unwrap_or_default(),
        ),
        ("previous_image".to_string(), before.image),
    ]))
}

/// `undo` (and `rollback-if`'s `undo` lines): puts back the template each
/// deploy recorded, then waits for that rollout. A deploy that recorded
/// nothing never changed the cluster: there is nothing to put back.
pub(super) async fn undo(
    undone: &[(String, BTreeMap<String, String>)],
    log: &Log,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<(), StepError> {
    for (step, notes) in undone {
        let records: Vec<&String> = notes
            .iter()
            .filter(|(key, _)| key.starts_with("before "))
            .map(|(_, text)| text)
            .collect();
        if records.is_empty() {
            log.line(
                false,
                &format!(
                    "`{step}` changed nothing (it recorded no pod template): nothing to put back\n"
                ),
            );
        }
        for text in records {
            put_back(step, text, log, env).await?;
        }
    }
    Ok(())
}

/// Puts back what one deploy recorded, and waits for that rollout.
async fn put_back(
    step: &str,
    text: &str,
    log: &Log,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<(), StepError> {
    {
        let before: Recorded = serde_json::from_str(text)
            .map_err(|e| format!("`{step}`'s record cannot be read: {e}"))?;
        // A deploy run inside a pod used its service account, not a context.
        let context = Some(before.context.clone()).filter(|c| c != IN_CLUSTER);
        let target = Target {
            context,
            namespace: Some(before.namespace.clone()),
        };
        let cluster = kube::connect(&target, env).await.map_err(StepError::from)?;
        log.line(
            false,
            &format!(
                "deployment {}/{}: putting back the pod template from before `{step}` ({}, revision {})\n",
                before.namespace,
                before.deployment,
                before.image,
                before.revision.as_deref().unwrap_or("none")
            ),
        );
        kube::put_back(&cluster, &before.deployment, &before.template, |m| {
            log.line(false, &format!("{m}\n"))
        })
        .await
        .map_err(StepError::from)?;
        wait(&cluster, &before.deployment, log).await?;
    }
    Ok(())
}

/// A rolling restart, stamped with an instant noted first. The same
/// attempt run again after an interruption stamps the same instant, so the
/// deployment does not restart twice; a new attempt (a `retry`, `retry
/// --from`) restarts anew.
async fn restart(
    cluster: &Cluster,
    name: &str,
    attempt: u32,
    notes: &mut Notes,
    log: &Log,
) -> Result<(), StepError> {
    let key = format!("restarted_at {}", where_(cluster, name));
    let noted = notes
        .get(&key)
        .and_then(|v| v.split_once(' '))
        .filter(|(a, _)| a.parse::<u32>().ok() == Some(attempt))
        .map(|(_, at)| at.to_string());
    let at = match noted {
        Some(at) => at,
        None => {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            notes.keep(&key, &format!("{attempt} {now}")).await?;
            now
        }
    };
    log.line(
        false,
        &format!("deployment {}/{name}: restart at {at}\n", cluster.namespace),
    );
    kube::restart(cluster, name, &at)
        .await
        .map_err(StepError::from)?;
    wait(cluster, name, log).await
}

/// Scales, after noting the count it replaces (the first note wins), so
/// that `previous_replicas` stays what it was before this run, however
/// often the step runs again.
async fn scale(
    cluster: &Cluster,
    name: &str,
    replicas: i64,
    notes: &mut Notes,
    log: &Log,
) -> Result<i32, StepError> {
    let replicas = i32::try_from(replicas)
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| format!("{replicas} is not a number of replicas"))?;
    let key = format!("previous_replicas {}", where_(cluster, name));
    let previous = match notes.get(&key).and_then(|v| v.parse::<i32>().ok()) {
        Some(n) => n,
        None => {
            let now = kube::replicas(cluster, name)
                .await
                .map_err(StepError::from)?;
            notes.keep(&key, &now.to_string()).await?;
            now
        }
    };
    // What the write replaced: after a conflict, someone else's count,
    // which the log must not hide behind the one first read.
    let replaced = kube::scale(cluster, name, replicas, |m| {
        log.line(false, &format!("{m}\n"))
    })
    .await
    .map_err(StepError::from)?;
    log.line(
        false,
        &format!(
            "deployment {}/{name}: {replaced} -> {replicas} replicas\n",
            cluster.namespace
        ),
    );
    wait(cluster, name, log).await?;
    Ok(previous)
}

pub(super) async fn restart_step(
    step: &Restart,
    scope: &Scope,
    log: &Log,
    attempt: u32,
    mut notes: Notes,
) -> Result<Outputs, StepError> {
    let name = scope.text(&step.deployment)?;
    let cluster = connect(&step.target, scope).await?;
    restart(&cluster, &name, attempt, &mut notes, log).await?;
    Ok(Outputs::new())
}

pub(super) async fn scale_step(
    step: &Scale,
    scope: &Scope,
    log: &Log,
    mut notes: Notes,
) -> Result<Outputs, StepError> {
    let name = scope.text(&step.deployment)?;
    let replicas = scope.int(&step.replicas)?;
    let cluster = connect(&step.target, scope).await?;
    let previous = scale(&cluster, &name, replicas, &mut notes, log).await?;
    Ok(BTreeMap::from([(
        "previous_replicas".to_string(),
        previous.to_string(),
    )]))
}

/// `rollback-if`: its actions in the order written.
pub(super) async fn rollback_step(
    step: &RollbackIf,
    scope: &Scope,
    log: &Log,
    attempt: u32,
    mut notes: Notes,
    undone: &[(String, BTreeMap<String, String>)],
) -> Result<Outputs, StepError> {
    let mut cluster = None;
    for action in &step.actions {
        let (deployment, replicas) = match action {
            Rollback::Undo(target) => {
                let these: Vec<_> = undone
                    .iter()
                    .filter(|(n, _)| n == target)
                    .cloned()
                    .collect();
                undo(&these, log, &|name| scope.env_var(name)).await?;
                continue;
            }
            Rollback::Restart { deployment } => (deployment, None),
            Rollback::Scale {
                deployment,
                replicas,
            } => (deployment, Some(scope.int(replicas)?)),
        };
        let name = scope.text(deployment)?;
        if cluster.is_none() {
            cluster = Some(connect(&step.target, scope).await?);
        }
        let Some(c) = cluster.as_ref() else { continue };
        match replicas {
            None => restart(c, &name, attempt, &mut notes, log).await?,
            Some(replicas) => {
                scale(c, &name, replicas, &mut notes, log).await?;
            }
        }
    }
    Ok(Outputs::new())
}

/// `verify` with `rollout`: `ready` when kubectl's rule says complete.
pub(super) async fn rollout_sample(
    deployment: &Input,
    target: &KubeTarget,
    scope: &Scope,
    log: &Log,
) -> Result<Sample, StepError> {
    let name = scope.text(deployment)?;
    let cluster = connect(target, scope).await?;
    let state = kube::rollout_now(&cluster, &name)
        .await
        .map_err(StepError::from)?;
    let (ready, default) = match state {
        kube::Rollout::Complete => (true, Ok(())),
        kube::Rollout::Waiting(why) | kube::Rollout::Failed(why) => (false, Err(why)),
    };
    let said = match &default {
        Ok(()) => "complete".to_string(),
        Err(why) => why.clone(),
    };
    log.line(
        false,
        &format!("deployment {}/{name}: {said}\n", cluster.namespace),
    );
    Ok(Sample {
        names: BTreeMap::from([("ready".to_string(), Value::Bool(ready))]),
        json: None,
        outputs: BTreeMap::from([("ready".to_string(), ready.to_string())]),
        default,
    })
}
