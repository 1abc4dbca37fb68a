//! What each step does, as a typed value: the checker's last word on a
//! step. The runner matches on `Action` and reads its fields; it never looks
//! a property up by name, so what `check` proved (this `verify` has exactly
//! one check, this `backup` has `to`, this word is `plain` or `custom`) is
//! not proved again, as a `Result<_, String>`, when the step runs.
//!
//! Values stay expressions (`Input`) where the language lets them depend on
//! the run: parameters, `env()`, the outputs of earlier steps. Words, step
//! names and the choice between exclusive properties are settled here.

use super::plan::Property;
use super::schema::StepKind;
use crate::syntax::ast::Expr;

/// A property's value as written, worked out when the step runs. `prop`
/// names it in messages ("`database` uses `x.output.y`, which has no value").
#[derive(Debug, Clone, serde::Serialize)]
pub struct Input {
    pub prop: &'static str,
    pub expr: Expr,
}

impl<'de> serde::Deserialize<'de> for Input {
    fn deserialize<D: serde::Deserializer<'de>>(from: D) -> Result<Input, D::Error> {
        #[derive(serde::Deserialize)]
        struct Kept {
            prop: String,
            expr: Expr,
        }
        let kept = Kept::deserialize(from)?;
        Ok(Input {
            prop: interned(kept.prop).map_err(serde::de::Error::custom)?,
            expr: kept.expr,
        })
    }
}

/// A property name read back from a kept plan, as the `&'static str` the
/// lowering gives: each distinct name is allocated once for the process
/// (property names are a few dozen words), never once per step.
fn interned(name: String) -> Result<&'static str, &'static str> {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .map_err(|_| "the property names are unusable")?;
    if let Some(known) = names.get(name.as_str()) {
        return Ok(known);
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.insert(leaked);
    Ok(leaked)
}

/// `env NAME VALUE`, `header NAME VALUE`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pair {
    pub name: Input,
    pub value: Input,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Action {
    Deploy(Deploy),
    Verify(Verify),
    RollbackIf(RollbackIf),
    Restore(Restore),
    Backup(Backup),
    Run(Program),
    Sql(Sql),
    Restart(Restart),
    Scale(Scale),
    /// `undo { deploy STEP }`: puts back what that step recorded (the step
    /// is in `Step::undoes`).
    Undo {
        deploy: String,
    },
    Wait {
        duration: Input,
    },
    Approve(Approve),
    Notify(Notify),
}

/// The Kubernetes namespace and context a step names, if any (the
/// runbook's settings stand in for those it does not).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct KubeTarget {
    pub namespace: Option<Input>,
    pub context: Option<Input>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Deploy {
    pub deployment: Input,
    pub image: Input,
    pub container: Option<Input>,
    pub target: KubeTarget,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Restart {
    pub deployment: Input,
    pub target: KubeTarget,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Scale {
    pub deployment: Input,
    pub replicas: Input,
    pub target: KubeTarget,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RollbackIf {
    /// In the order written.
    pub actions: Vec<Rollback>,
    pub target: KubeTarget,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Rollback {
    /// The name of the `deploy` step to undo.
    Undo(String),
    Restart {
        deployment: Input,
    },
    Scale {
        deployment: Input,
        replicas: Input,
    },
}

/// A program a step starts: `run`, and `verify` with `command`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Program {
    pub launch: Launch,
    pub env: Vec<Pair>,
    pub cwd: Option<Input>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Launch {
    /// Started directly, with `args` as its argv.
    Command { program: Input, args: Option<Input> },
    /// A script for `/bin/sh`, every interpolated value quoted.
    Shell(Input),
}

impl Launch {
    /// What names the program: the `command` or the `shell` script.
    pub fn input(&self) -> &Input {
        match self {
            Launch::Command { program, .. } => program,
            Launch::Shell(script) => script,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Verify {
    pub check: Check,
    /// The condition in the check's context (`status == 200`).
    pub expect: Option<Expr>,
    pub hold: Option<Hold>,
}

/// `hold DURATION every INTERVAL`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Hold {
    pub total: Input,
    pub every: Input,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Check {
    Http(Http),
    Sql {
        connection: Input,
        query: Input,
        params: Option<Input>,
    },
    Prometheus {
        query: Input,
        server: Option<Input>,
    },
    Command(Program),
    Rollout {
        deployment: Input,
        target: KubeTarget,
    },
    Certificate {
        target: Input,
    },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Http {
    pub method: HttpMethod,
    pub url: Input,
    pub headers: Vec<Pair>,
    pub body: Option<Input>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    /// As written in a runbook (`get`), which the schema lists.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "get",
            HttpMethod::Head => "head",
            HttpMethod::Post => "post",
            HttpMethod::Put => "put",
            HttpMethod::Patch => "patch",
            HttpMethod::Delete => "delete",
        }
    }

    fn from_word(word: &str) -> Option<HttpMethod> {
        [
            HttpMethod::Get,
            HttpMethod::Head,
            HttpMethod::Post,
            HttpMethod::Put,
            HttpMethod::Patch,
            HttpMethod::Delete,
        ]
        .into_iter()
        .find(|m| m.as_str() == word)
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sql {
    pub database: Input,
    pub query: Input,
    pub params: Option<Input>,
    pub expect: Option<Expr>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Backup {
    pub postgres: Input,
    pub to: Input,
    pub keep: Option<Input>,
    pub format: DumpFormat,
}

/// `format custom|plain`: pg_dump's archive or plain SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DumpFormat {
    Custom,
    Plain,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Restore {
    pub target: RestoreTarget,
    pub from: Input,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum RestoreTarget {
    Postgres {
        connection: Input,
        jobs: Option<Input>,
    },
    Redis(Input),
    Files(Input),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Approve {
    pub prompt: Input,
    /// The Unix users who may approve.
    pub approvers: Option<Input>,
    /// The Unix groups whose members may approve.
    pub groups: Option<Input>,
    /// How many distinct people must approve (1 when not given).
    pub approvals: Option<Input>,
    /// Whether the person who started the run may approve: `None` when
    /// not said (yes for one approval, no when more are needed).
    pub starter_approves: Option<bool>,
    /// With `on-timeout skip`, no answer within the step's `timeout` skips
    /// it (what follows it is skipped, `when STEP.skipped` runs, the run
    /// does not fail) instead of failing it.
    #[serde(default)]
    pub skip_on_timeout: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Notify {
    pub channel: Channel,
    pub message: Input,
    pub severity: Severity,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Channel {
    Webhook(Input),
    /// The routing key.
    PagerDuty(Input),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl Action {
    /// The kind of step this action belongs to.
    pub fn kind(&self) -> StepKind {
        match self {
            Action::Deploy(_) => StepKind::Deploy,
            Action::Verify(_) => StepKind::Verify,
            Action::RollbackIf(_) => StepKind::RollbackIf,
            Action::Restore(_) => StepKind::Restore,
            Action::Backup(_) => StepKind::Backup,
            Action::Run(_) => StepKind::Run,
            Action::Sql(_) => StepKind::Sql,
            Action::Restart(_) => StepKind::Restart,
            Action::Scale(_) => StepKind::Scale,
            Action::Undo { .. } => StepKind::Undo,
            Action::Wait { .. } => StepKind::Wait,
            Action::Approve(_) => StepKind::Approve,
            Action::Notify(_) => StepKind::Notify,
        }
    }
}

impl Action {
    /// What the step acts on, as written: where a failure that names no
    /// other place points (the deployment, the check's URL or query, the
    /// program, the database). `None` for steps that act on other steps.
    pub fn subject(&self) -> Option<&Input> {
        Some(match self {
            Action::Deploy(d) => &d.deployment,
            Action::Restart(r) => &r.deployment,
            Action::Scale(s) => &s.deployment,
            Action::Verify(v) => match &v.check {
                Check::Http(http) => &http.url,
                Check::Sql { connection, .. } => connection,
                Check::Prometheus { query, .. } => query,
                Check::Command(program) => program.launch.input(),
                Check::Rollout { deployment, .. } => deployment,
                Check::Certificate { target } => target,
            },
            Action::Run(program) => program.launch.input(),
            Action::Sql(sql) => &sql.database,
            Action::Backup(backup) => &backup.postgres,
            Action::Restore(restore) => match &restore.target {
                RestoreTarget::Postgres { connection, .. } => connection,
                RestoreTarget::Redis(url) => url,
                RestoreTarget::Files(dir) => dir,
            },
            Action::Wait { duration } => duration,
            Action::Notify(notify) => match &notify.channel {
                Channel::Webhook(input) | Channel::PagerDuty(input) => input,
            },
            Action::Undo { .. } | Action::RollbackIf(_) | Action::Approve(_) => return None,
        })
    }
}

/// The checked properties of one step, read by name once, here.
struct Props<'a>(&'a [Property]);

impl Props<'_> {
    fn find(&self, name: &str) -> Option<&Property> {
        self.0.iter().find(|p| p.name == name)
    }

    /// The `index`th argument of `name`, if the step has that property.
    fn arg(&self, name: &'static str, index: usize) -> Option<Input> {
        let expr = self.find(name)?.args.get(index)?.clone();
        Some(Input { prop: name, expr })
    }

    fn opt(&self, name: &'static str) -> Option<Input> {
        self.arg(name, 0)
    }

    /// A property `check` made sure of.
    fn one(&self, name: &'static str) -> Result<Input, String> {
        self.opt(name).ok_or_else(|| missing(name))
    }

    fn word(&self, name: &str) -> Option<&str> {
        let arg = self.find(name)?.args.first()?;
        arg.as_name().map(|ident| ident.name.as_str())
    }

    fn pairs(&self, name: &'static str) -> Vec<Pair> {
        self.0
            .iter()
            .filter(|p| p.name == name)
            .filter_map(|p| match p.args.as_slice() {
                [n, v, ..] => Some(Pair {
                    name: Input {
                        prop: name,
                        expr: n.clone(),
                    },
                    value: Input {
                        prop: name,
                        expr: v.clone(),
                    },
                }),
                _ => None,
            })
            .collect()
    }

    fn target(&self) -> KubeTarget {
        KubeTarget {
            namespace: self.opt("namespace"),
            context: self.opt("context"),
        }
    }

    fn program(&self) -> Result<Program, String> {
        let launch = match (self.opt("shell"), self.opt("command")) {
            (Some(script), _) => Launch::Shell(script),
            (None, Some(program)) => Launch::Command {
                program,
                args: self.opt("args"),
            },
            (None, None) => return Err(missing("command")),
        };
        Ok(Program {
            launch,
            env: self.pairs("env"),
            cwd: self.opt("cwd"),
        })
    }
}

/// A property the checker requires was not there: only a checker that let
/// a mistake through gets here.
fn missing(name: &str) -> String {
    format!("the step has no `{name}`, which `check` should have required")
}

/// Lowers one checked step's properties to its action, or says what the
/// checker let through.
pub(super) fn lower(kind: StepKind, properties: &[Property]) -> Result<Action, String> {
    let p = Props(properties);
    Ok(match kind {
        StepKind::Deploy => Action::Deploy(Deploy {
            deployment: p.one("deployment")?,
            image: p.one("image")?,
            container: p.opt("container"),
            target: p.target(),
        }),
        StepKind::Verify => Action::Verify(Verify {
            check: check(&p)?,
            expect: p.find("expect").and_then(|e| e.args.first().cloned()),
            hold: match (p.arg("hold", 0), p.arg("hold", 2)) {
                (Some(total), Some(every)) => Some(Hold { total, every }),
                _ => None,
            },
        }),
        StepKind::RollbackIf => Action::RollbackIf(RollbackIf {
            actions: rollbacks(properties)?,
            target: p.target(),
        }),
        StepKind::Restore => Action::Restore(Restore {
            target: match (p.opt("postgres"), p.opt("redis"), p.opt("files")) {
                (Some(connection), _, _) => RestoreTarget::Postgres {
                    connection,
                    jobs: p.opt("jobs"),
                },
                (None, Some(url), _) => RestoreTarget::Redis(url),
                (None, None, Some(dir)) => RestoreTarget::Files(dir),
                (None, None, None) => return Err(missing("postgres")),
            },
            from: p.one("from")?,
        }),
        StepKind::Backup => Action::Backup(Backup {
            postgres: p.one("postgres")?,
            to: p.one("to")?,
            keep: p.opt("keep"),
            format: match p.word("format") {
                Some("plain") => DumpFormat::Plain,
                _ => DumpFormat::Custom,
            },
        }),
        StepKind::Run => Action::Run(p.program()?),
        StepKind::Sql => Action::Sql(Sql {
            database: p.one("database")?,
            query: p.one("query")?,
            params: p.opt("params"),
            expect: p.find("expect").and_then(|e| e.args.first().cloned()),
        }),
        StepKind::Restart => Action::Restart(Restart {
            deployment: p.one("deployment")?,
            target: p.target(),
        }),
        StepKind::Scale => Action::Scale(Scale {
            deployment: p.one("deployment")?,
            replicas: p.one("replicas")?,
            target: p.target(),
        }),
        StepKind::Undo => Action::Undo {
            deploy: p
                .word("deploy")
                .ok_or_else(|| missing("deploy"))?
                .to_string(),
        },
        StepKind::Wait => Action::Wait {
            duration: p.one("duration")?,
        },
        StepKind::Approve => Action::Approve(Approve {
            prompt: p.one("prompt")?,
            approvers: p.opt("approvers"),
            groups: p.opt("groups"),
            approvals: p.opt("approvals"),
            starter_approves: p.word("starter-approves").map(|w| w == "yes"),
            skip_on_timeout: p.word("on-timeout") == Some("skip"),
        }),
        StepKind::Notify => Action::Notify(Notify {
            channel: match (p.opt("webhook"), p.opt("pagerduty")) {
                (Some(url), _) => Channel::Webhook(url),
                (None, Some(key)) => Channel::PagerDuty(key),
                (None, None) => return Err(missing("webhook")),
            },
            message: p.one("message")?,
            severity: match p.word("severity") {
                Some("warning") => Severity::Warning,
                Some("error") => Severity::Error,
                Some("critical") => Severity::Critical,
                _ => Severity::Info,
            },
        }),
    })
}

/// The one check of a `verify` (the schema's group makes them exclusive).
fn check(p: &Props) -> Result<Check, String> {
    if let Some(url) = p.arg("http", 1) {
        let method = p
            .word("http")
            .and_then(HttpMethod::from_word)
            .ok_or_else(|| missing("http"))?;
        return Ok(Check::Http(Http {
            method,
            url,
            headers: p.pairs("header"),
            body: p.opt("body"),
        }));
    }
    if let (Some(connection), Some(query)) = (p.arg("sql", 0), p.arg("sql", 1)) {
        return Ok(Check::Sql {
            connection,
            query,
            params: p.opt("params"),
        });
    }
    if let Some(query) = p.opt("prometheus") {
        let server = p.opt("server");
        return Ok(Check::Prometheus { query, server });
    }
    if p.find("command").is_some() {
        return p.program().map(Check::Command);
    }
    if let Some(deployment) = p.opt("rollout") {
        let target = p.target();
        return Ok(Check::Rollout { deployment, target });
    }
    if let Some(target) = p.opt("certificate") {
        return Ok(Check::Certificate { target });
    }
    Err(missing("http"))
}

/// A `rollback-if`'s actions in the order written.
fn rollbacks(properties: &[Property]) -> Result<Vec<Rollback>, String> {
    let input = |prop: &'static str, expr: Option<&Expr>| {
        expr.cloned()
            .map(|expr| Input { prop, expr })
            .ok_or_else(|| missing(prop))
    };
    let mut actions = Vec::new();
    for p in properties {
        let first = p.args.first();
        actions.push(match p.name.as_str() {
            "undo" => Rollback::Undo(
                first
                    .and_then(Expr::as_name)
                    .map(|ident| ident.name.clone())
                    .ok_or_else(|| missing("undo"))?,
            ),
            "restart" => Rollback::Restart {
                deployment: input("restart", first)?,
            },
            "scale" => Rollback::Scale {
                deployment: input("scale", first)?,
                replicas: input("scale", p.args.get(2))?,
            },
            _ => continue,
        });
    }
    Ok(actions)
}

#[cfg(test)]
mod tests;
