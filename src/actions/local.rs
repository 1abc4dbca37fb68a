//! The step runner for what runs on this machine: `run`, `verify` with a
//! command, `wait`, `notify` to a webhook. It evaluates a step's properties
//! (secrets reach programs only through argv and the environment, never a
//! shell's text unless the step is a `shell` script), runs the action, and
//! scrubs secret values out of everything printed or kept.

use super::command::{self, CommandSpec, Ended, Stream};
use super::groups::GroupNotes;
pub(super) use super::log::Log;
use super::notify::{deliver, Channel, Notice, Tries, PAGERDUTY_EVENTS};
use super::output_file::OutputDir;
use super::step::{StepCall, StepResult, StepRunner};
use crate::compile::eval::{eval_in, Bindings, Value};
use crate::compile::{Plan, Step};
use crate::engine::field_of;
use crate::syntax::ast::{Expr, Ident};
use crate::syntax::format;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A line a step printed, as it comes, for the terminal.
pub struct Line<'a> {
    pub step: &'a str,
    pub err: bool,
    pub text: &'a str,
}

pub type Sink = Arc<dyn Fn(Line) + Send + Sync>;
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What a step's log keeps per attempt; beyond it, bytes are counted.
pub const LOG_CAP: usize = 1 << 20;
/// What an output (`stdout`, `stderr`) keeps.
pub const OUTPUT_CAP: usize = 8 << 10;

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
    kube_defaults: super::kube::Target,
    /// The runbook's name, for PagerDuty's dedup key.
    runbook: Arc<str>,
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
            kube_defaults: super::kube::Target::default(),
            runbook: Arc::from(""),
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
        self.kube_defaults = super::kube::Target {
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
        cgroups: Option<super::contain::Cgroups>,
    ) -> Self {
        self.groups = Some(Arc::new(GroupNotes::new(dir).containing(cgroups)));
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
        .filter_map(|s| {
            let why = match s.kind.name {
                "run" | "wait" | "approve" | "notify" | "sql" | "backup" => return None,
                "deploy" | "undo" | "restart" | "scale" | "rollback-if" => return None,
                "restore" if s.property("files").is_none() => return None,
                "restore" => "only `restore` into `postgres` or `redis` runs so far".to_string(),
                "verify"
                    if [
                        "command",
                        "http",
                        "prometheus",
                        "certificate",
                        "sql",
                        "rollout",
                    ]
                    .iter()
                    .any(|check| s.property(check).is_some()) =>
                {
                    return None
                }
                other => format!("`{other}` steps do not run yet"),
            };
            Some((s, why))
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
            let result = match call.step.kind.name {
                "run" => run_step(&call.step, &scope, &log).await,
                "verify" => {
                    let http = http.get_or_init(reqwest::Client::new);
                    super::verify::verify_step(&call.step, &scope, &log, http).await
                }
                "wait" => wait_step(&call.step, &scope, call.elapsed).await,
                "sql" => super::data::sql_step(&call.step, &scope, &log).await,
                "backup" => super::data::backup_step(&call.step, &scope, &log).await,
                "restore" => super::data::restore_step(&call.step, &scope, &log).await,
                "deploy" => super::cluster::deploy_step(&call.step, &scope, &log, call.notes).await,
                "restart" => {
                    super::cluster::restart_step(&call.step, &scope, &log, call.attempt, call.notes)
                        .await
                }
                "scale" => super::cluster::scale_step(&call.step, &scope, &log, call.notes).await,
                "undo" => super::cluster::undo(&call.undone, &log, &|name| scope.env_var(name))
                    .await
                    .map(|()| BTreeMap::new()),
                "rollback-if" => {
                    super::cluster::rollback_step(
                        &call.step,
                        &scope,
                        &log,
                        call.attempt,
                        call.notes,
                        &call.undone,
                    )
                    .await
                }
                "notify" => {
                    let http = http.get_or_init(reqwest::Client::new);
                    notify_step(&call.step, &scope, http, call.run, tries).await
                }
                other => Err(format!("`{other}` steps do not run yet")),
            };
            log.end_of_output();
            // A failure is one line wherever it is shown (`status`, the
            // live view): a line break in what a server said cannot add a
            // line that looks like runbook's own.
            result.map_err(|e| log.scrub(&e).trim_end().replace('\n', "\\n"))
        })
    }
}

/// What a step's expressions can see.
pub(super) struct Scope {
    run_secrets: Arc<Vec<String>>,
    bindings: Bindings,
    env: Env,
    inputs: Vec<(String, crate::engine::StepState, BTreeMap<String, String>)>,
    /// The runbook's `namespace` and `context`, for Kubernetes steps that
    /// name none of their own.
    pub(super) kube_defaults: super::kube::Target,
    pub(super) runbook: Arc<str>,
}

impl Scope {
    pub(super) fn eval(&self, e: &Expr) -> Value {
        self.eval_with(e, &self.bindings)
    }

    fn eval_with(&self, e: &Expr, bindings: &Bindings) -> Value {
        self.eval_check(e, bindings, None)
    }

    /// An expression of a check: the check's names bound, and `json.a.b`
    /// read from the answer when there is one.
    pub(super) fn eval_check(
        &self,
        e: &Expr,
        bindings: &Bindings,
        json: Option<&serde_json::Value>,
    ) -> Value {
        let fields = |path: &[Ident]| {
            let head = path.first()?;
            if let (Some(json), "json") = (json, head.name.as_str()) {
                let keys: Vec<&str> = path[1..].iter().map(|i| i.name.as_str()).collect();
                return super::verify::json_field(json, &keys);
            }
            let (_, state, outputs) = self.inputs.iter().find(|(n, _, _)| *n == head.name)?;
            field_of(state, outputs, &path[1..])
        };
        let env = |name: &str| (self.env)(name);
        eval_in(e, bindings, &env, &fields)
    }

    pub(super) fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// A variable of runbook's own environment, for defaults such as
    /// `PROMETHEUS_URL`.
    pub(super) fn env_var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// A property's argument that is a URL: values interpolated into its
    /// path, query or fragment are percent-encoded (`compile::url`).
    /// With it, whether it holds a secret (then only its origin is shown).
    pub(super) fn url(
        &self,
        step: &Step,
        prop: &str,
        index: usize,
    ) -> Result<Option<(String, bool)>, String> {
        let Some(arg) = step.property(prop).and_then(|p| p.args.get(index)) else {
            return Ok(None);
        };
        let fields = |path: &[Ident]| {
            let head = path.first()?;
            let (_, state, outputs) = self.inputs.iter().find(|(n, _, _)| *n == head.name)?;
            field_of(state, outputs, &path[1..])
        };
        let env = |name: &str| (self.env)(name);
        let value = crate::compile::url::url_in(arg, &self.bindings, &env, &fields);
        let secret = matches!(value, Value::Sealed(_));
        value
            .expose()
            .map(|url| Some((url, secret)))
            .ok_or_else(|| unknown(prop, &value))
    }

    /// A property's argument as text a program receives.
    pub(super) fn text(
        &self,
        step: &Step,
        prop: &str,
        index: usize,
    ) -> Result<Option<String>, String> {
        let Some(arg) = step.property(prop).and_then(|p| p.args.get(index)) else {
            return Ok(None);
        };
        let value = self.eval(arg);
        value
            .expose()
            .map(Some)
            .ok_or_else(|| unknown(prop, &value))
    }

    pub(super) fn list(&self, step: &Step, prop: &str) -> Result<Vec<String>, String> {
        let Some(arg) = step.property(prop).and_then(|p| p.args.first()) else {
            return Ok(Vec::new());
        };
        match self.eval(arg) {
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    // Any user of the machine can read a program's arguments;
                    // a query's parameters are shown in its log. (`check`
                    // refuses both; this is the guard for values known only
                    // at run time.)
                    Value::Sealed(_) if prop == "params" => Err(
                        "`params` holds a secret; a query's parameters are shown in its log, so a secret belongs in the connection string".to_string()
                    ),
                    Value::Sealed(_) => Err(format!(
                        "`{prop}` holds a secret; pass secrets to a program with `env NAME VALUE`, never as an argument"
                    )),
                    v => v.expose().ok_or_else(|| unknown(prop, v)),
                })
                .collect(),
            other => Err(format!("`{prop}` is not a list: {other}")),
        }
    }

    /// The variables the run's secrets were read from, which programs do
    /// not inherit.
    fn secret_vars(&self) -> Vec<String> {
        self.bindings.secret_vars.clone()
    }

    /// Every secret value in reach of the step, for scrubbing: the run's
    /// secrets, and what its own properties read with `env()`.
    pub(super) fn secrets(&self, step: &Step) -> Vec<String> {
        let mut found = self.bindings.sealed_values();
        found.extend(self.run_secrets.iter().cloned());
        for arg in step.properties.iter().flat_map(|p| &p.args) {
            self.eval(arg).collect_sealed(&mut found);
        }
        found
    }
}

/// Why a property has no value a program can take.
fn unknown(prop: &str, value: &Value) -> String {
    match value {
        Value::Later(expr) => format!(
            "`{prop}` uses `{expr}`, which has no value in this run (a step recorded as done by hand has no outputs)"
        ),
        other => format!("`{prop}` has no value a program can take: {other}"),
    }
}

fn command_spec(step: &Step, scope: &Scope) -> Result<CommandSpec, String> {
    let (program, shell) = match super::shell::script(step, scope)? {
        Some(script) => (script, true),
        None => (scope.text(step, "command", 0)?.unwrap_or_default(), false),
    };
    let mut env = Vec::new();
    for p in step.properties.iter().filter(|p| p.name == "env") {
        let name = p
            .args
            .first()
            .map(|a| scope.eval(a))
            .and_then(|v| v.expose());
        let value = p
            .args
            .get(1)
            .map(|a| scope.eval(a))
            .and_then(|v| v.expose());
        match (name, value) {
            (Some(n), Some(v)) => env.push((n, v)),
            _ => return Err("an `env` value could not be worked out".into()),
        }
    }
    Ok(CommandSpec {
        program,
        args: scope.list(step, "args")?,
        shell,
        env,
        cwd: scope.text(step, "cwd", 0)?.map(Into::into),
        notes: None,
        withheld: scope.secret_vars(),
    })
}

/// Runs the step's program; the result, or why it could not start.
pub(super) async fn execute(
    step: &Step,
    scope: &Scope,
    log: &Log,
) -> Result<command::CommandResult, String> {
    let mut spec = command_spec(step, scope)?;
    spec.notes = log.step_notes();
    command::run(&spec, None, OUTPUT_CAP, |stream, line| {
        log.line(stream == Stream::Stderr, line)
    })
    .await
    .map_err(|e| e.to_string())
}

pub(super) fn outputs(result: &command::CommandResult, log: &Log) -> BTreeMap<String, String> {
    let code = match result.ended {
        Ended::Exited(code) => code,
        _ => -1,
    };
    let kept = |c: &command::Captured| {
        if c.dropped_bytes > 0 {
            log.scrub_cut(&c.text)
        } else {
            log.scrub(c.text.trim_end())
        }
    };
    BTreeMap::from([
        ("exit_code".to_string(), code.to_string()),
        ("stdout".to_string(), kept(&result.stdout)),
        ("stderr".to_string(), kept(&result.stderr)),
    ])
}

async fn run_step(
    step: &Step,
    scope: &Scope,
    log: &Log,
) -> Result<BTreeMap<String, String>, String> {
    let result = execute(step, scope, log).await?;
    match result.ended {
        Ended::Exited(0) => Ok(outputs(&result, log)),
        Ended::Exited(code) => Err(format!("exited with code {code}")),
        Ended::Signalled(signal) => Err(format!("killed by signal {signal}")),
        Ended::TimedOut => Err("timed out".into()),
    }
}

async fn wait_step(
    step: &Step,
    scope: &Scope,
    elapsed: Duration,
) -> Result<BTreeMap<String, String>, String> {
    let arg = step.property("duration").and_then(|p| p.args.first());
    let Some(Value::Duration(ms)) = arg.map(|a| scope.eval(a)) else {
        return Err("the duration could not be worked out".into());
    };
    let left = Duration::from_millis(ms).saturating_sub(elapsed);
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
    step: &Step,
    scope: &Scope,
    http: &reqwest::Client,
    run: crate::engine::RunId,
    tries: Tries,
) -> Result<BTreeMap<String, String>, String> {
    let channel = if let Some(url) = scope.text(step, "webhook", 0)? {
        Channel::Webhook(url)
    } else {
        let routing_key = scope
            .text(step, "pagerduty", 0)?
            .ok_or("the notify step has neither a webhook nor a PagerDuty key")?;
        let url = scope
            .env_var("PAGERDUTY_EVENTS_URL")
            .unwrap_or_else(|| PAGERDUTY_EVENTS.to_string());
        Channel::PagerDuty { routing_key, url }
    };
    let message = scope.text(step, "message", 0)?.unwrap_or_default();
    let severity = step
        .property("severity")
        .and_then(|p| p.args.first())
        .map(format::expr)
        .unwrap_or_else(|| "info".into());
    let notice = Notice {
        runbook: &scope.runbook,
        host: &host_name(),
        message: &message,
        severity: &severity,
        run: run.0,
        step: &step.name,
    };
    let status = deliver(http, &channel, &notice, tries).await?;
    Ok(BTreeMap::from([("status".into(), status.to_string())]))
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
