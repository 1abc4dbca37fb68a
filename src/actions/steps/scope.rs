//! What every step adapter shares: what a step's expressions can see
//! (`Scope`: the run's bindings, the settled steps before it, runbook's
//! environment), and where what a step prints goes.

use crate::actions::step::{FailureKind, StepError};
use crate::compile::action::{Input, Pair};
use crate::compile::eval::{eval_in, parse_value, Bindings, Value};
use crate::compile::plan::Type;
use crate::compile::Step;
use crate::engine::field_of;
use crate::syntax::ast::{Expr, Ident};
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// What a step's expressions can see.
pub(super) struct Scope {
    pub(super) run_secrets: Arc<Vec<String>>,
    pub(super) bindings: Bindings,
    pub(super) env: Env,
    pub(super) inputs: Vec<(String, crate::engine::StepState, BTreeMap<String, String>)>,
    /// The runbook's `namespace` and `context`, for Kubernetes steps that
    /// name none of their own.
    pub(super) kube_defaults: crate::actions::kube::Target,
    pub(super) runbook: Arc<str>,
    pub(super) from: StartedFrom,
}

/// Where a run was started from, when not from the process that drives it
/// (a run submitted through the state directory's socket): the terminal's
/// environment and working directory. Empty: this process's own.
#[derive(Clone, Default)]
pub struct StartedFrom {
    pub env: Option<Arc<crate::actions::spawn::Environment>>,
    pub dir: Option<Arc<std::path::Path>>,
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
                return json_field(json, &keys);
            }
            let (_, state, outputs) = self.inputs.iter().find(|(n, _, _)| *n == head.name)?;
            field_of(state, outputs, &path[1..])
        };
        let env = |name: &str| (self.env)(name);
        eval_in(e, bindings, &env, &fields)
    }

    /// A path a step names, relative ones read from where the run was
    /// started.
    pub(super) fn path(&self, text: String) -> std::path::PathBuf {
        match &self.from.dir {
            Some(dir) => dir.join(text),
            None => text.into(),
        }
    }

    /// The working directory of a program that names none.
    pub(super) fn workdir(&self) -> Option<std::path::PathBuf> {
        self.from.dir.as_deref().map(std::path::Path::to_path_buf)
    }

    /// The environment programs start from, when not this process's.
    pub(super) fn inherit(&self) -> Option<Arc<crate::actions::spawn::Environment>> {
        self.from.env.clone()
    }

    pub(super) fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// A variable of runbook's own environment, for defaults such as
    /// `PROMETHEUS_URL`.
    pub(super) fn env_var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// A value that is a URL: values interpolated into its path, query or
    /// fragment are percent-encoded (`compile::url`). With it, whether it
    /// holds a secret (then only its origin is shown).
    pub(super) fn url(&self, input: &Input) -> Result<(String, bool), StepError> {
        let fields = |path: &[Ident]| {
            let head = path.first()?;
            let (_, state, outputs) = self.inputs.iter().find(|(n, _, _)| *n == head.name)?;
            field_of(state, outputs, &path[1..])
        };
        let env = |name: &str| (self.env)(name);
        let value = crate::compile::url::url_in(&input.expr, &self.bindings, &env, &fields);
        let secret = matches!(value, Value::Sealed(_));
        value
            .expose()
            .map(|url| (url, secret))
            .ok_or_else(|| unusable(input, unknown(input.prop, &value)))
    }

    /// A value as text a program receives.
    pub(super) fn text(&self, input: &Input) -> Result<String, StepError> {
        let value = self.eval(&input.expr);
        value
            .expose()
            .ok_or_else(|| unusable(input, unknown(input.prop, &value)))
    }

    /// An optional value as text.
    pub(super) fn text_of(&self, input: Option<&Input>) -> Result<Option<String>, StepError> {
        input.map(|i| self.text(i)).transpose()
    }

    /// `env NAME VALUE` and `header NAME VALUE`, worked out.
    pub(super) fn pairs(&self, pairs: &[Pair]) -> Result<Vec<(String, String)>, StepError> {
        pairs
            .iter()
            .map(|p| {
                let name = self.eval(&p.name.expr).expose();
                let value = self.eval(&p.value.expr).expose();
                let failed = |at: &Input| {
                    let article = if at.prop.starts_with('e') { "an" } else { "a" };
                    unusable(
                        at,
                        format!("{article} `{}` value could not be worked out", at.prop),
                    )
                };
                match (name, value) {
                    (Some(n), Some(v)) => Ok((n, v)),
                    (None, _) => Err(failed(&p.name)),
                    (Some(_), None) => Err(failed(&p.value)),
                }
            })
            .collect()
    }

    /// A whole number (`replicas`, `jobs`).
    pub(super) fn int(&self, input: &Input) -> Result<i64, StepError> {
        match self.eval(&input.expr) {
            Value::Int(n) => Ok(n),
            // A step's output is text (`${count.output.stdout}`).
            Value::Str(text) => text.trim().parse::<i64>().map_err(|_| {
                unusable(
                    input,
                    format!("`{}` is not a whole number: {text:?}", input.prop),
                )
            }),
            other => Err(unusable(
                input,
                format!("`{}` is not a whole number: {other}", input.prop),
            )),
        }
    }

    /// A duration in milliseconds (`duration`, `keep`, `hold`).
    pub(super) fn millis(&self, input: &Input) -> Result<u64, StepError> {
        match self.eval(&input.expr) {
            Value::Duration(ms) => Ok(ms),
            // A step's output is text (`30s`), read as a duration is written.
            Value::Str(text) => match parse_value(Type::Duration, text.trim()) {
                Ok(Value::Duration(ms)) => Ok(ms),
                _ => Err(unusable(
                    input,
                    format!("`{}` is not a duration: {text:?}", input.prop),
                )),
            },
            other => Err(unusable(
                input,
                format!("`{}` is not a duration: {other}", input.prop),
            )),
        }
    }

    pub(super) fn list(&self, input: Option<&Input>) -> Result<Vec<String>, StepError> {
        let Some(input) = input else {
            return Ok(Vec::new());
        };
        let prop = input.prop;
        let items = match self.eval(&input.expr) {
            Value::List(items) => items,
            other => return Err(unusable(input, format!("`{prop}` is not a list: {other}"))),
        };
        items
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
            .collect::<Result<_, String>>()
            .map_err(|why| unusable(input, why))
    }

    /// The variables the run's secrets were read from, which programs do
    /// not inherit.
    pub(super) fn secret_vars(&self) -> Vec<String> {
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

/// A value of the step that cannot be used, pointing at where it is written.
pub(super) fn unusable(input: &Input, why: String) -> StepError {
    StepError::new(FailureKind::Value, why).at(input.expr.span)
}

/// Why a property has no value a program can take.
pub(super) fn unknown(prop: &str, value: &Value) -> String {
    match value {
        Value::Later(expr) => format!(
            "`{prop}` uses `{expr}`, which has no value in this run (a step recorded as done by hand has no outputs)"
        ),
        other => format!("`{prop}` has no value a program can take: {other}"),
    }
}

/// A JSON value as the language sees it: `json.a.b`.
pub(super) fn json_field(json: &serde_json::Value, path: &[&str]) -> Option<Value> {
    let mut here = json;
    for key in path {
        here = match here {
            serde_json::Value::Object(map) => map.get(*key)?,
            serde_json::Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(match here {
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        serde_json::Value::Null => return None,
        other => Value::Str(other.to_string()),
    })
}
