//! The step runner for what runs on this machine: `run`, `verify` with a
//! command, `wait`, `notify` to a webhook. It evaluates a step's properties
//! (secrets reach programs only through argv and the environment, never a
//! shell's text unless the step is a `shell` script), runs the action, and
//! scrubs secret values out of everything printed or kept.

use super::log::Log;
use super::program::run_step;
use super::scope::{Env, Scope, Sink, LOG_CAP};
use crate::actions::groups::GroupNotes;
use crate::actions::notify::{deliver, Channel, Notice, Tries, PAGERDUTY_EVENTS};
use crate::actions::output_file::OutputDir;
use crate::actions::step::StepError;
use crate::actions::step::{StepCall, StepResult, StepRunner};
use crate::compile::action::{self, Action, Input, Notify, Restore, RestoreTarget};
use crate::compile::eval::{eval_in, Bindings};
use crate::compile::{Plan, Step};
use crate::syntax::ast::Ident;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub struct LocalRunner {
    bindings: Bindings,
    env: Env,
    sink: Sink,
    /// Where each running program's process group is noted, so that a
    /// resume after a crash can see a program still running.
    groups: Option<Arc<GroupNotes>>,
    output: Option<OutputDir>,
    /// Every secret value the run can reach, for scrubbing any step's
    /// output: programs inherit the environment, so a step may print what
    /// another step reads with `env()`.
    secrets: Arc<Vec<String>>,
    /// Made on first use: building a TLS client costs milliseconds that a
    /// run without a `notify` should not pay.
    http: Arc<std::sync::OnceLock<reqwest::Client>>,
    notify_tries: Tries,
    kube_defaults: crate::actions::kube::Target,
    /// The runbook's name, for PagerDuty's dedup key.
    runbook: Arc<str>,
    /// Where the run was started from, when not from this process.
    from: super::scope::StartedFrom,
}

impl LocalRunner {
    pub fn new(bindings: Bindings, env: Env, sink: Sink) -> Self {
        LocalRunner {
            bindings,
            env,
            sink,
            groups: None,
            output: None,
            secrets: Arc::default(),
            http: Arc::default(),
            notify_tries: Tries::default(),
            kube_defaults: crate::actions::kube::Target::default(),
            runbook: Arc::from(""),
            from: super::scope::StartedFrom::default(),
        }
    }
}

impl LocalRunner {
    /// Scrubs, from every step's output, every secret value the plan can
    /// reach: bound secrets, and whatever any step's properties or
    /// conditions read with `env()`.
    pub fn scrubbing(mut self, plan: &Plan) -> Self {
        let mut found = self.bindings.sealed_values();
        let env = |name: &str| (self.env)(name);
        let none = |_: &[Ident]| None;
        for step in &plan.steps {
            let exprs = step
                .properties
                .iter()
                .flat_map(|p| &p.args)
                .chain(&step.when);
            for e in exprs {
                eval_in(e, &self.bindings, &env, &none).collect_sealed(&mut found);
            }
        }
        found.sort();
        found.dedup();
        self.secrets = Arc::new(found);
        self
    }

    /// What the runner takes from the plan itself: its name, and its own
    /// `namespace` and `context` settings for the Kubernetes steps that
    /// name none.
    pub fn for_plan(mut self, plan: &Plan) -> Self {
        self.runbook = Arc::from(plan.name.as_str());
        self.kube_defaults = crate::actions::kube::Target {
            namespace: plan.settings.namespace.clone(),
            context: plan.settings.context.clone(),
        };
        self
    }

    /// How a `notify` tries again while its receiver is down or busy.
    pub fn notify_tries(mut self, tries: Tries) -> Self {
        self.notify_tries = tries;
        self
    }

    /// Notes the process group of every program a step runs in `dir`, and
    /// contains each in a cgroup of its own below `cgroups`, if given.
    pub fn noting_groups(
        mut self,
        dir: std::path::PathBuf,
        cgroups: Option<crate::actions::contain::Cgroups>,
    ) -> Self {
        self.groups = Some(Arc::new(GroupNotes::new(dir).containing(cgroups)));
        self
    }

    /// A run submitted from another terminal: its programs start from that
    /// terminal's environment (`env`) in its working directory, where
    /// relative paths are read from too.
    pub fn started_from(
        mut self,
        env: Arc<crate::actions::spawn::Environment>,
        dir: &std::path::Path,
    ) -> Self {
        self.from = super::scope::StartedFrom {
            env: Some(env),
            dir: Some(Arc::from(dir)),
        };
        self
    }

    /// Keeps what each attempt prints on disk as it comes, besides the
    /// journal's copy made when the attempt ends.
    pub fn keeping_output(mut self, dir: OutputDir) -> Self {
        self.output = Some(dir);
        self
    }
}

/// Why each step of the plan cannot run with this build, if any cannot.
pub fn unsupported(plan: &Plan) -> Vec<(&Step, String)> {
    plan.steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Restore(Restore {
                target: RestoreTarget::Files(_),
                ..
            }) => Some((
                s,
                "only `restore` into `postgres` or `redis` runs so far".to_string(),
            )),
            _ => None,
        })
        .collect()
}

impl StepRunner for LocalRunner {
    fn run(&self, call: StepCall) -> Pin<Box<dyn Future<Output = StepResult> + Send>> {
        let scope = Scope {
            run_secrets: Arc::clone(&self.secrets),
            bindings: self.bindings.clone(),
            env: Arc::clone(&self.env),
            inputs: call.inputs.clone(),
            kube_defaults: self.kube_defaults.clone(),
            runbook: Arc::clone(&self.runbook),
            from: self.from.clone(),
        };
        let sink = Arc::clone(&self.sink);
        let http = Arc::clone(&self.http);
        let tries = self.notify_tries;
        let groups = self.groups.clone();
        let output = self
            .output
            .as_ref()
            .map(|o| o.attempt(call.run, call.step.id.0, call.attempt, LOG_CAP));
        Box::pin(async move {
            let mut log = Log::new(&scope, &call.step, call.log, sink);
            log.groups = groups.map(|g| (g, call.run));
            log.output = output;
            let step = &call.step;
            let result = match &step.action {
                Action::Run(program) => run_step(program, &scope, &log).await,
                Action::Verify(verify) => {
                    let http = http.get_or_init(reqwest::Client::new);
                    super::verify::verify_step(verify, step, &scope, &log, http).await
                }
                Action::Wait { duration } => wait_step(duration, &scope, call.elapsed).await,
                Action::Sql(sql) => super::sql::sql_step(sql, step, &scope, &log).await,
                Action::Backup(backup) => super::sql::backup_step(backup, &scope, &log).await,
                Action::Restore(restore) => super::sql::restore_step(restore, &scope, &log).await,
                Action::Deploy(deploy) => {
                    super::kube::deploy_step(deploy, &scope, &log, call.notes).await
                }
                Action::Restart(restart) => {
                    super::kube::restart_step(restart, &scope, &log, call.attempt, call.notes).await
                }
                Action::Scale(scale) => {
                    super::kube::scale_step(scale, &scope, &log, call.notes).await
                }
                Action::Undo { .. } => {
                    super::kube::undo(&call.undone, &log, &|name| scope.env_var(name))
                        .await
                        .map(|()| BTreeMap::new())
                }
                Action::RollbackIf(rollback) => {
                    super::kube::rollback_step(
                        rollback,
                        &scope,
                        &log,
                        call.attempt,
                        call.notes,
                        &call.undone,
                    )
                    .await
                }
                Action::Notify(notify) => {
                    let http = http.get_or_init(reqwest::Client::new);
                    notify_step(notify, &step.name, &scope, http, call.run, tries).await
                }
                // Approvals are answered by the driver, never run.
                Action::Approve(_) => {
                    Err("an approval is not run; it waits for `runbook approve`".into())
                }
            };
            log.end_of_output();
            // A failure is one line wherever it is shown (`status`, the
            // live view): a line break in what a server said cannot add a
            // line that looks like runbook's own.
            result.map_err(|mut e| {
                e.message = log.scrub(&e.message).trim_end().replace('\n', "\\n");
                // Where no place was named, the failure concerns what the
                // step acts on.
                match step.action.subject() {
                    Some(subject) => e.at(subject.expr.span),
                    None => e,
                }
            })
        })
    }
}

async fn wait_step(
    duration: &Input,
    scope: &Scope,
    elapsed: Duration,
) -> Result<BTreeMap<String, String>, StepError> {
    let left = Duration::from_millis(scope.millis(duration)?).saturating_sub(elapsed);
    // tokio's timer ticks in milliseconds: even a zero sleep waits for a tick.
    if !left.is_zero() {
        tokio::time::sleep(left).await;
    }
    Ok(BTreeMap::new())
}

/// This machine's name, for telling its runs from another machine's.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A webhook POST or a PagerDuty alert, tried again while the receiver is
/// down or busy.
async fn notify_step(
    notify: &Notify,
    step: &str,
    scope: &Scope,
    http: &reqwest::Client,
    run: crate::engine::RunId,
    tries: Tries,
) -> Result<BTreeMap<String, String>, StepError> {
    let channel = match &notify.channel {
        action::Channel::Webhook(url) => Channel::Webhook(scope.text(url)?),
        action::Channel::PagerDuty(key) => Channel::PagerDuty {
            routing_key: scope.text(key)?,
            url: scope
                .env_var("PAGERDUTY_EVENTS_URL")
                .unwrap_or_else(|| PAGERDUTY_EVENTS.to_string()),
        },
    };
    let message = scope.text(&notify.message)?;
    let severity = notify.severity.as_str();
    let notice = Notice {
        runbook: &scope.runbook,
        host: &host_name(),
        message: &message,
        severity,
        run: run.0,
        step,
    };
    let status = deliver(http, &channel, &notice, tries).await?;
    Ok(BTreeMap::from([("status".into(), status.to_string())]))
}

#[cfg(test)]
mod tests;
