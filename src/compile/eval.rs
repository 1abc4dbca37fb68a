//! Evaluating expressions before a run: parameters from the command line and
//! the environment, `let` bindings, interpolation. What only a run can know
//! (step states and outputs) stays symbolic. Secret values are never held
//! here: a secret evaluates to a marker saying where it comes from.

use super::plan::{Plan, Type};
use crate::syntax::ast::{BinaryOp, Expr, ExprKind, StrPart};
use crate::syntax::format;
use std::collections::HashMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Milliseconds.
    Duration(u64),
    Percent(f64),
    List(Vec<Value>),
    /// A secret, with where it comes from; the value itself is not kept.
    Secret(String),
    /// A secret's value, during a run only: it prints as `***`.
    Sealed(Sealed),
    /// Known only at run time; holds the expression as written.
    Later(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Duration(ms) => f.write_str(&format_duration(*ms)),
            Value::Percent(p) => write!(f, "{p}%"),
            Value::List(items) => {
                let items: Vec<String> = items.iter().map(|v| v.to_string()).collect();
                write!(f, "[{}]", items.join(", "))
            }
            Value::Secret(_) | Value::Sealed(_) => f.write_str("***"),
            Value::Later(text) => write!(f, "<at run time: {text}>"),
        }
    }
}

/// A secret's value. It never prints: `Display` and `Debug` show `***`, and
/// only `expose` gives the text, where a step hands it to a program.
#[derive(Clone, PartialEq)]
pub struct Sealed(String);

impl Sealed {
    pub fn new(value: String) -> Self {
        Sealed(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Value {
    /// Every secret value in this value (lists included), for scrubbing.
    pub fn collect_sealed(&self, into: &mut Vec<String>) {
        match self {
            Value::Sealed(s) if !s.expose().is_empty() => into.push(s.expose().to_string()),
            Value::List(items) => items.iter().for_each(|v| v.collect_sealed(into)),
            _ => {}
        }
    }

    /// The text a step uses: a secret's value too. Never for printing.
    pub fn expose(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Sealed(s) => Some(s.expose().to_string()),
            Value::Secret(_) | Value::Later(_) | Value::List(_) => None,
            other => Some(other.to_string()),
        }
    }
}

/// `5400000` → `1h30m`.
pub fn format_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// Parameter and `let` values for one run.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    pub values: HashMap<String, Value>,
    /// Names given on the command line (the rest came from defaults).
    pub given: Vec<String>,
    /// Secrets whose environment variable is not set: a plan can still be
    /// shown, but a run cannot start.
    pub unset_secrets: Vec<(String, String)>,
    /// The environment variables secrets are read from: step programs do
    /// not inherit them (a step that needs one maps it with `env`).
    pub secret_vars: Vec<String>,
    /// For a run: secrets and `env()` evaluate to their values, sealed.
    /// Otherwise (plan, check) to a marker saying where they come from.
    pub reveal: bool,
}

impl Bindings {
    /// Every secret value bound, so that output can be scrubbed of them.
    pub fn sealed_values(&self) -> Vec<String> {
        let mut found = Vec::new();
        for v in self.values.values() {
            v.collect_sealed(&mut found);
        }
        found
    }
}

/// Why the parameters cannot be resolved: one plain sentence each.
pub type ParamErrors = Vec<String>;

/// Resolves parameters from `name=value` pairs, defaults and the environment.
pub fn bind(
    plan: &Plan,
    given: &[(String, String)],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Bindings, ParamErrors> {
    bind_with(plan, given, env, Bindings::default())
}

/// Binds for a run: secret values are read (and sealed), and a secret whose
/// variable is not set is an error rather than a warning.
pub fn bind_for_run(
    plan: &Plan,
    given: &[(String, String)],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Bindings, ParamErrors> {
    let start = Bindings {
        reveal: true,
        ..Bindings::default()
    };
    let bindings = bind_with(plan, given, env, start)?;
    let unset: Vec<String> = bindings
        .unset_secrets
        .iter()
        .map(|(name, var)| {
            format!(
                "the secret `{name}` is read from ${var}, which is not set; set it and try again"
            )
        })
        .collect();
    if unset.is_empty() {
        Ok(bindings)
    } else {
        Err(unset)
    }
}

fn bind_with(
    plan: &Plan,
    given: &[(String, String)],
    env: &dyn Fn(&str) -> Option<String>,
    start: Bindings,
) -> Result<Bindings, ParamErrors> {
    let mut errors = Vec::new();
    let mut bindings = start;
    for (name, _) in given {
        if !plan.params.iter().any(|p| &p.name == name) {
            let names = plan.params.iter().map(|p| p.name.as_str());
            let hint = super::names::closest(name, names)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            errors.push(format!("`{}` has no parameter `{name}`{hint}", plan.name));
        }
    }
    for param in &plan.params {
        let value = match given.iter().rev().find(|(n, _)| n == &param.name) {
            Some((_, text)) => {
                bindings.given.push(param.name.clone());
                if bindings.reveal && param.ty == Type::Secret {
                    Ok(Value::Sealed(Sealed::new(text.clone())))
                } else {
                    parse_value(param.ty, text).map_err(|why| format!("-p {}: {why}", param.name))
                }
            }
            None => match &param.default {
                Some(default) => default_value(&param.name, param.ty, default, &mut bindings, env),
                None => Err(format!(
                    "the parameter `{}` has no default; pass it with -p {}=VALUE",
                    param.name, param.name
                )),
            },
        };
        match value {
            Ok(v) => {
                bindings.values.insert(param.name.clone(), v);
            }
            Err(e) => errors.push(e),
        }
    }
    for binding in &plan.lets {
        let v = eval(&binding.value, &bindings, env);
        bindings.values.insert(binding.name.clone(), v);
    }
    if errors.is_empty() {
        Ok(bindings)
    } else {
        Err(errors)
    }
}

fn default_value(
    name: &str,
    ty: Type,
    default: &Expr,
    b: &mut Bindings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, String> {
    if ty != Type::Secret {
        return Ok(eval(default, b, env));
    }
    // A secret's default is `env("NAME")`: report where it comes from, not what it is.
    if let ExprKind::Call { args, .. } = &default.kind {
        if let Some(Value::Str(var)) = args.first().map(|a| eval(a, b, env)) {
            b.secret_vars.push(var.clone());
            return Ok(match env(&var) {
                Some(value) if b.reveal => Value::Sealed(Sealed::new(value)),
                Some(_) => Value::Secret(format!("from ${var}")),
                None if args.len() > 1 && b.reveal => seal(eval(&args[1], b, env)),
                None if args.len() > 1 => Value::Secret("default".into()),
                None => {
                    b.unset_secrets.push((name.to_string(), var.clone()));
                    Value::Secret(format!("from ${var}, which is NOT SET"))
                }
            });
        }
    }
    Ok(if b.reveal {
        seal(eval(default, b, env))
    } else {
        Value::Secret("default".into())
    })
}

fn seal(v: Value) -> Value {
    match v.expose() {
        Some(text) => Value::Sealed(Sealed::new(text)),
        None => v,
    }
}

/// Reads a command-line value as a parameter of type `ty`.
pub fn parse_value(ty: Type, text: &str) -> Result<Value, String> {
    match ty {
        Type::Int => text
            .parse()
            .map(Value::Int)
            .map_err(|_| format!("`{text}` is not an integer")),
        Type::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("`{text}` is not `true` or `false`")),
        },
        Type::Duration => crate::syntax::parse_duration(text)
            .filter(|_| !text.is_empty() && text.ends_with(|c: char| c.is_ascii_alphabetic()))
            .map(Value::Duration)
            .ok_or_else(|| format!("`{text}` is not a duration such as 30s, 10m or 1h30m")),
        Type::Secret => Ok(Value::Secret("given with -p".into())),
        _ => Ok(Value::Str(text.to_string())),
    }
}

/// Evaluates an expression as far as it can be before the run.
pub fn eval(e: &Expr, b: &Bindings, env: &dyn Fn(&str) -> Option<String>) -> Value {
    eval_in(e, b, env, &|_| None)
}

/// What a step field (`deploy.failed`, `check.output.value`) is, when known.
pub type StepFields<'a> = dyn Fn(&[crate::syntax::ast::Ident]) -> Option<Value> + 'a;

/// Evaluates an expression; `steps` answers for step fields, so that during
/// a run conditions see the states and outputs of settled steps.
pub fn eval_in(
    e: &Expr,
    b: &Bindings,
    env: &dyn Fn(&str) -> Option<String>,
    steps: &StepFields,
) -> Value {
    let eval = |inner: &Expr| eval_in(inner, b, env, steps);
    let later = || Value::Later(format::expr(e));
    match &e.kind {
        ExprKind::Str(s) => {
            let mut out = String::new();
            let mut sealed = false;
            for part in &s.parts {
                match part {
                    StrPart::Text(t) => out.push_str(t),
                    StrPart::Interp(inner) => match eval(inner) {
                        Value::Str(t) => out.push_str(&t),
                        Value::Sealed(t) => {
                            sealed = true;
                            out.push_str(t.expose());
                        }
                        Value::Secret(from) => return Value::Secret(from),
                        Value::Later(_) => return later(),
                        other => out.push_str(&other.to_string()),
                    },
                }
            }
            if sealed {
                Value::Sealed(Sealed::new(out))
            } else {
                Value::Str(out)
            }
        }
        ExprKind::Int { value, .. } => value.map(Value::Int).unwrap_or_else(later),
        ExprKind::Float { value, .. } => Value::Float(*value),
        ExprKind::Duration { millis, .. } => millis.map(Value::Duration).unwrap_or_else(later),
        ExprKind::Percent { value, .. } => Value::Percent(*value),
        ExprKind::Bool(v) => Value::Bool(*v),
        ExprKind::List(items) => Value::List(items.iter().map(eval).collect()),
        ExprKind::Call { args, .. } => {
            let name = args.first().map(eval);
            let fallback = args.get(1).map(eval);
            match name {
                // What the environment holds is often a credential: it is used,
                // never shown. Only the written fallback is shown as it is.
                Some(Value::Str(var)) => match env(&var) {
                    Some(value) if b.reveal => Value::Sealed(Sealed::new(value)),
                    Some(_) => Value::Secret(format!("from ${var}")),
                    None => fallback.unwrap_or(Value::Str(String::new())),
                },
                _ => later(),
            }
        }
        ExprKind::Path(parts) if parts.len() == 1 => {
            b.values.get(&parts[0].name).cloned().unwrap_or_else(later)
        }
        ExprKind::Path(parts) => steps(parts).unwrap_or_else(later),
        ExprKind::Not(inner) => match eval(inner) {
            Value::Bool(v) => Value::Bool(!v),
            _ => later(),
        },
        ExprKind::Binary { op, lhs, rhs } => {
            binary(*op, eval(lhs), eval(rhs)).unwrap_or_else(later)
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(n) => Some(*n as f64),
        Value::Float(x) => Some(*x),
        Value::Percent(p) => Some(p / 100.0),
        Value::Duration(ms) => Some(*ms as f64),
        _ => None,
    }
}

fn binary(op: BinaryOp, l: Value, r: Value) -> Option<Value> {
    let result = match op {
        BinaryOp::And | BinaryOp::Or => match (&l, &r) {
            (Value::Bool(a), Value::Bool(b)) => {
                if op == BinaryOp::And {
                    *a && *b
                } else {
                    *a || *b
                }
            }
            _ => return None,
        },
        BinaryOp::Contains => match (&l, &r) {
            (Value::Str(a), Value::Str(b)) => a.contains(b.as_str()),
            (Value::List(items), b) => items.contains(b),
            _ => return None,
        },
        BinaryOp::Eq | BinaryOp::Ne => {
            let same = match (number(&l), number(&r)) {
                (Some(a), Some(b)) => a == b,
                _ => match (&l, &r) {
                    (Value::Later(_), _)
                    | (_, Value::Later(_))
                    | (Value::Secret(_), _)
                    | (_, Value::Secret(_))
                    | (Value::Sealed(_), _)
                    | (_, Value::Sealed(_)) => return None,
                    _ => l == r,
                },
            };
            same == (op == BinaryOp::Eq)
        }
        _ => {
            let (a, b) = (number(&l)?, number(&r)?);
            match op {
                BinaryOp::Lt => a < b,
                BinaryOp::Le => a <= b,
                BinaryOp::Gt => a > b,
                _ => a >= b,
            }
        }
    };
    Some(Value::Bool(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(src: &str) -> Plan {
        super::super::check(src).expect("checks")
    }

    #[test]
    fn interpolates_parameters_and_keeps_secrets_hidden() {
        let p = plan("runbook r {\n  param service: string\n  param db: secret = env(\"RB_TEST_DB\")\n  let image = \"svc/${service}:1\"\n  let dsn = \"${db}/x\"\n}\n");
        let env =
            |name: &str| (name == "RB_TEST_DB").then(|| "postgres://u:hunter2@db/x".to_string());
        let b = bind(&p, &[("service".into(), "api".into())], &env).expect("binds");
        assert_eq!(b.values["image"], Value::Str("svc/api:1".into()));
        assert_eq!(b.values["dsn"].to_string(), "***");
    }

    #[test]
    fn a_run_reads_secret_values_but_never_prints_them() {
        let p = plan("runbook r {\n  param db: secret = env(\"RB_TEST_DB\")\n  let dsn = \"${db}/x\"\n  let token = env(\"RB_TEST_TOKEN\")\n}\n");
        let env = |name: &str| match name {
            "RB_TEST_DB" => Some("postgres://u:hunter2@db".to_string()),
            "RB_TEST_TOKEN" => Some("tok-123".to_string()),
            _ => None,
        };
        let b = bind_for_run(&p, &[], &env).expect("binds");
        assert_eq!(
            b.values["dsn"].expose().as_deref(),
            Some("postgres://u:hunter2@db/x")
        );
        assert_eq!(b.values["dsn"].to_string(), "***");
        assert_eq!(format!("{:?}", b.values["token"]), "Sealed(***)");
        let mut values = b.sealed_values();
        values.sort();
        assert_eq!(values.len(), 3);
        let unset = bind_for_run(&p, &[], &|_| None).unwrap_err();
        assert_eq!(
            unset[0],
            "the secret `db` is read from $RB_TEST_DB, which is not set; set it and try again"
        );
    }

    #[test]
    fn missing_and_unknown_parameters_are_plain_sentences() {
        let p = plan("runbook r {\n  param service: string\n}\n");
        let errors = bind(&p, &[("servce".into(), "x".into())], &|_| None).unwrap_err();
        assert_eq!(
            errors[0],
            "`r` has no parameter `servce` (did you mean `service`?)"
        );
        assert_eq!(
            errors[1],
            "the parameter `service` has no default; pass it with -p service=VALUE"
        );
    }

    #[test]
    fn durations_print_in_their_largest_units() {
        assert_eq!(format_duration(5_400_000), "1h30m");
        assert_eq!(format_duration(1_500), "1s500ms");
    }
}
