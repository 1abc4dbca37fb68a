//! Types of expressions, name resolution inside them, and the steps they refer to.

use super::names::did_you_mean;
use super::plan::{StepId, Type};
use super::schema::{CheckName, Kind};
use crate::diagnostic::{Code, Diagnostic, Span};
use crate::syntax::ast::{BinaryOp, Expr, ExprKind, StrPart};
use std::collections::HashMap;

pub const STEP_STATES: &[&str] = &["succeeded", "failed", "skipped", "output"];
pub const FUNCTIONS: &[&str] = &["env"];

/// What names mean where an expression appears.
pub struct Scope<'a> {
    /// Parameters and `let` bindings visible here.
    pub values: &'a HashMap<String, Type>,
    /// Steps, when expressions here may refer to them.
    pub steps: Option<&'a HashMap<String, (StepId, &'static Kind)>>,
    /// Names an `expect` may use (`status`, `value`, ...).
    pub check: &'a [(&'static str, CheckName)],
}

/// Types expressions within one scope, collecting diagnostics and step references.
pub struct Typer<'a, 'd> {
    pub scope: Scope<'a>,
    pub diagnostics: &'d mut Vec<Diagnostic>,
    pub step_refs: Vec<(StepId, Span)>,
    /// Inside an `expect`: the check's names (`status`, `value`) are visible.
    pub in_check: bool,
}

fn numeric(t: Type) -> bool {
    matches!(t, Type::Int | Type::Float | Type::Percent | Type::Dynamic)
}

fn textual(t: Type) -> bool {
    matches!(t, Type::Str | Type::Path | Type::Secret | Type::Dynamic)
}

/// Whether values of the two types can be compared with `op`.
fn comparable(op: BinaryOp, l: Type, r: Type) -> bool {
    if l == Type::Dynamic || r == Type::Dynamic {
        return true;
    }
    match op {
        BinaryOp::Contains => matches!(l, Type::Str | Type::Path | Type::List) && textual(r),
        BinaryOp::Eq | BinaryOp::Ne => {
            (numeric(l) && numeric(r)) || (textual(l) && textual(r)) || l == r
        }
        _ => (numeric(l) && numeric(r)) || (l == Type::Duration && r == Type::Duration),
    }
}

impl Typer<'_, '_> {
    fn error(&mut self, d: Diagnostic) -> Type {
        self.diagnostics.push(d);
        Type::Dynamic
    }

    pub fn expect_bool(&mut self, e: &Expr, what: &str) {
        let t = self.type_of(e);
        if !matches!(t, Type::Bool | Type::Dynamic) {
            self.diagnostics.push(
                Diagnostic::new(
                    Code::TypeMismatch,
                    format!("{what} must be a condition, found {}", t.describe()),
                )
                .label(e.span, format!("this is {}", t.describe()))
                .help("compare it, for example `status == 200` or `deploy.failed`"),
            );
        }
    }

    pub fn type_of(&mut self, e: &Expr) -> Type {
        match &e.kind {
            ExprKind::Str(s) => {
                let mut ty = Type::Str;
                for part in &s.parts {
                    if let StrPart::Interp(inner) = part {
                        match self.type_of(inner) {
                            Type::Secret => ty = Type::Secret,
                            Type::List => {
                                self.error(
                                    Diagnostic::new(
                                        Code::TypeMismatch,
                                        "a list cannot be interpolated into a string",
                                    )
                                    .label(inner.span, "this is a list"),
                                );
                            }
                            _ => {}
                        }
                    }
                }
                ty
            }
            ExprKind::Int { value, raw } => {
                if value.is_none() {
                    return self.error(
                        Diagnostic::new(Code::InvalidValue, format!("`{raw}` is too large"))
                            .label(e.span, "does not fit in 64 bits")
                            .help("use a number below 9223372036854775808"),
                    );
                }
                Type::Int
            }
            ExprKind::Float { .. } => Type::Float,
            ExprKind::Duration { millis, raw } => {
                if millis.is_none() {
                    return self.error(
                        Diagnostic::new(Code::InvalidValue, format!("`{raw}` is too long"))
                            .label(e.span, "this duration overflows")
                            .help("durations are counted in milliseconds and must fit in 64 bits"),
                    );
                }
                Type::Duration
            }
            ExprKind::Percent { .. } => Type::Percent,
            ExprKind::Bool(_) => Type::Bool,
            ExprKind::List(items) => {
                for item in items {
                    if self.type_of(item) == Type::List {
                        self.error(
                            Diagnostic::new(Code::TypeMismatch, "lists cannot be nested")
                                .label(item.span, "a list inside a list")
                                .help("write the items into one list"),
                        );
                    }
                }
                Type::List
            }
            ExprKind::Call { name, args } => self.call(e, &name.name, name.span, args),
            ExprKind::Path(parts) => self.path(e, parts),
            ExprKind::Not(inner) => {
                self.expect_bool(inner, "the operand of `not`");
                Type::Bool
            }
            ExprKind::Binary { op, lhs, rhs } => {
                if !op.is_comparison() {
                    self.expect_bool(lhs, &format!("each side of `{}`", op.as_str()));
                    self.expect_bool(rhs, &format!("each side of `{}`", op.as_str()));
                    return Type::Bool;
                }
                if let ExprKind::Binary { op: inner, .. } = &lhs.kind {
                    if inner.is_comparison() {
                        return self.error(
                            Diagnostic::new(Code::TypeMismatch, "comparisons do not chain")
                                .label(e.span, "two comparisons in a row")
                                .help("join them with `and`: `a < b and b < c`"),
                        );
                    }
                }
                let (l, r) = (self.type_of(lhs), self.type_of(rhs));
                if !comparable(*op, l, r) {
                    self.diagnostics.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            format!(
                                "cannot compare {} with {} using `{}`",
                                l.describe(),
                                r.describe(),
                                op.as_str()
                            ),
                        )
                        .label(lhs.span, l.describe())
                        .label(rhs.span, r.describe())
                        .help("compare numbers with numbers, durations with durations, text with text; `contains` looks for text in text or a list"),
                    );
                }
                Type::Bool
            }
        }
    }

    fn call(&mut self, e: &Expr, name: &str, span: Span, args: &[Expr]) -> Type {
        if name != "env" {
            return self.error(
                Diagnostic::new(Code::UnknownFunction, format!("unknown function `{name}`"))
                    .label(span, "not a function")
                    .help(did_you_mean(name, FUNCTIONS.iter().copied(), || {
                        "the only function is `env(\"NAME\")`".into()
                    })),
            );
        }
        if args.is_empty() || args.len() > 2 {
            return self.error(
                Diagnostic::new(
                    Code::WrongArguments,
                    "`env` takes a variable name and an optional default",
                )
                .label(e.span, format!("{} arguments here", args.len()))
                .help("write `env(\"NAME\")` or `env(\"NAME\", \"default\")`"),
            );
        }
        for arg in args {
            let t = self.type_of(arg);
            if !matches!(t, Type::Str | Type::Dynamic) {
                self.error(
                    Diagnostic::new(Code::TypeMismatch, "the arguments of `env` must be strings")
                        .label(arg.span, format!("this is {}", t.describe()))
                        .help("write `env(\"NAME\")` or `env(\"NAME\", \"default\")`"),
                );
            }
        }
        Type::Str
    }

    fn path(&mut self, e: &Expr, parts: &[crate::syntax::ast::Ident]) -> Type {
        let Some(head) = parts.first() else {
            return Type::Dynamic;
        };
        let name = head.name.as_str();
        let check = if self.in_check { self.scope.check } else { &[] };
        if let Some((_, ty)) = check.iter().find(|(n, _)| *n == name) {
            return match ty {
                CheckName::Dynamic => Type::Dynamic,
                _ if parts.len() > 1 => self.error(
                    Diagnostic::new(Code::UnknownField, format!("`{name}` has no fields"))
                        .label(parts[1].span, "no such field")
                        .help("only `json` has fields, e.g. `json.status`"),
                ),
                CheckName::Int => Type::Int,
                CheckName::Number => Type::Dynamic,
                CheckName::Text => Type::Str,
                CheckName::Bool => Type::Bool,
            };
        }
        if let Some(ty) = self.scope.values.get(name).copied() {
            if parts.len() > 1 {
                return self.error(
                    Diagnostic::new(
                        Code::UnknownField,
                        format!("`{name}` is a value and has no fields"),
                    )
                    .label(parts[1].span, "no such field")
                    .help(
                        "parameters and `let` values have no fields; step states do: `STEP.failed`",
                    ),
                );
            }
            return ty;
        }
        if let Some((id, kind)) = self.scope.steps.and_then(|s| s.get(name)).copied() {
            self.step_refs.push((id, head.span));
            return self.step_field(e, name, kind, &parts[1..]);
        }
        self.unknown_name(head, parts.len() > 1)
    }

    fn step_field(
        &mut self,
        e: &Expr,
        step: &str,
        kind: &Kind,
        fields: &[crate::syntax::ast::Ident],
    ) -> Type {
        let Some(field) = fields.first() else {
            return self.error(
                Diagnostic::new(Code::TypeMismatch, format!("`{step}` is a step, not a value"))
                    .label(e.span, "a step")
                    .help(format!("use `{step}.succeeded`, `{step}.failed`, `{step}.skipped` or `{step}.output.NAME`")),
            );
        };
        match field.name.as_str() {
            "succeeded" | "failed" | "skipped" if fields.len() == 1 => Type::Bool,
            "succeeded" | "failed" | "skipped" => self.error(
                Diagnostic::new(
                    Code::UnknownField,
                    format!("`{step}.{}` is a boolean and has no fields", field.name),
                )
                .label(fields[1].span, "no such field")
                .help(format!("use it as it is: `when {step}.{}`", field.name)),
            ),
            "output" => {
                let Some(output) = fields.get(1) else {
                    return self.error(
                        Diagnostic::new(Code::UnknownField, "`output` needs the name of an output")
                            .label(field.span, "which output?")
                            .help(outputs_help(kind)),
                    );
                };
                if kind.outputs.contains(&output.name.as_str()) && fields.len() > 2 {
                    return self.error(
                        Diagnostic::new(
                            Code::UnknownField,
                            format!(
                                "`{step}.output.{}` is a value and has no fields",
                                output.name
                            ),
                        )
                        .label(fields[2].span, "no such field")
                        .help("outputs are single values; compare or interpolate them as they are"),
                    );
                }
                if !kind.outputs.contains(&output.name.as_str()) {
                    let at = output;
                    return self.error(
                        Diagnostic::new(
                            Code::UnknownField,
                            format!("{} has no output `{}`", kind.a_step(), at.name),
                        )
                        .label(at.span, "unknown output")
                        .help(did_you_mean(
                            &output.name,
                            kind.outputs.iter().copied(),
                            || outputs_help(kind),
                        )),
                    );
                }
                Type::Dynamic
            }
            other => self.error(
                Diagnostic::new(Code::UnknownField, format!("a step has no field `{other}`"))
                    .label(field.span, "unknown field")
                    .help(did_you_mean(other, STEP_STATES.iter().copied(), || {
                        "a step has `succeeded`, `failed`, `skipped` and `output.NAME`".into()
                    })),
            ),
        }
    }

    fn unknown_name(&mut self, head: &crate::syntax::ast::Ident, has_fields: bool) -> Type {
        let name = head.name.as_str();
        let steps: Vec<&str> = self
            .scope
            .steps
            .map(|s| s.keys().map(String::as_str).collect())
            .unwrap_or_default();
        if has_fields && (self.scope.steps.is_some()) {
            let help = did_you_mean(name, steps.iter().copied(), || {
                "steps are named by the word after their kind, e.g. `deploy production`".into()
            });
            return self.error(
                Diagnostic::new(Code::UnknownStep, format!("unknown step `{name}`"))
                    .label(head.span, "no step has this name")
                    .help(help),
            );
        }
        let values = self.scope.values.keys().map(String::as_str);
        let check = if self.in_check { self.scope.check } else { &[] };
        let checks = check.iter().map(|(n, _)| *n);
        let candidates: Vec<&str> = values.chain(checks).chain(steps.iter().copied()).collect();
        let check_names: Vec<&str> = check.iter().map(|(n, _)| *n).collect();
        let in_check = self.in_check;
        if FUNCTIONS.contains(&name) {
            return self.error(
                Diagnostic::new(Code::UndefinedName, format!("`{name}` is a function"))
                    .label(head.span, "a function name without its arguments")
                    .help(format!(
                        "write `{name}(\"NAME\")`, with no space before `(`"
                    )),
            );
        }
        let help = did_you_mean(name, candidates.iter().copied(), || {
            // Only an option word (`catch-up`) has a hyphen; no name can.
            if name.contains('-') {
                format!("names cannot contain `-`; if this is text, quote it: \"{name}\"")
            } else if in_check && !check_names.is_empty() {
                format!("in `expect`, this check offers: {}", check_names.join(", "))
            } else if self.scope.steps.is_none() {
                format!("declare it with `param {name}: string`; steps cannot be used here")
            } else {
                format!("declare it with `param {name}: string` or `let {name} = ...`")
            }
        });
        self.error(
            Diagnostic::new(Code::UndefinedName, format!("undefined name `{name}`"))
                .label(head.span, "not a parameter, `let` or step")
                .help(help),
        )
    }
}

fn outputs_help(kind: &Kind) -> String {
    if kind.outputs.is_empty() {
        format!("{} has no outputs", kind.a_step())
    } else {
        format!("{} has outputs: {}", kind.a_step(), kind.outputs.join(", "))
    }
}
