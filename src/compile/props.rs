//! Checking properties (and runbook settings) against the schema.

use super::names::did_you_mean;
use super::plan::{StepId, Type};
use super::schema::{Arg, Group, Prop, Shape};
use super::types::Typer;
use crate::diagnostic::{Code, Diagnostic, Span};
use crate::syntax::ast::{Expr, ExprKind, Property};
use std::collections::HashMap;

/// What a property list is checked against.
pub struct Table<'a> {
    /// "a `deploy` step" or "a runbook": used in messages.
    pub owner: String,
    pub lookup: &'a dyn Fn(&str) -> Option<&'static Prop>,
    pub names: Vec<&'static str>,
    pub groups: &'a [Group],
    pub unknown_code: Code,
}

/// Checks a list of properties; returns the steps named by step arguments
/// (`undo production`).
pub fn check(
    props: &[Property],
    table: &Table,
    owner_span: Span,
    typer: &mut Typer,
    steps: &HashMap<String, (StepId, &'static super::schema::Kind)>,
) -> Vec<StepId> {
    // A handful of properties per step: a list is quicker than a map.
    let mut seen: Vec<(&str, Span)> = Vec::new();
    let first = |seen: &[(&str, Span)], name: &str| {
        seen.iter().find(|(n, _)| *n == name).map(|(_, span)| *span)
    };
    let mut found = Vec::new();
    // Names that unknown properties were probably meant to be: not also "missing".
    let mut meant: Vec<&str> = Vec::new();
    for p in props {
        let name = p.name.name.as_str();
        let Some(spec) = (table.lookup)(name) else {
            meant.extend(super::names::closest(name, table.names.iter().copied()));
            let help = did_you_mean(name, table.names.iter().copied(), || {
                format!("{} takes: {}", table.owner, table.names.join(", "))
            });
            typer.diagnostics.push(
                Diagnostic::new(
                    table.unknown_code,
                    format!("{} does not take `{name}`", table.owner),
                )
                .label(p.name.span, "unknown here")
                .help(help),
            );
            continue;
        };
        if let Some(first) = first(&seen, spec.name) {
            if !spec.repeatable {
                typer.diagnostics.push(
                    Diagnostic::new(Code::DuplicateProperty, format!("`{name}` is given twice"))
                        .label(p.name.span, "given again here")
                        .label(first, "first given here")
                        .help("keep one of them"),
                );
            }
        } else {
            seen.push((spec.name, p.name.span));
        }
        check_shape(p, spec, typer, steps, &mut found);
    }
    for group in table.groups {
        let members: Vec<(&str, Span)> = props
            .iter()
            .filter_map(|p| {
                let spec = (table.lookup)(&p.name.name)?;
                (spec.group == Some(group.name)).then_some((spec.name, p.name.span))
            })
            .collect();
        if members.is_empty() && group.required {
            typer.diagnostics.push(
                Diagnostic::new(
                    Code::MissingProperty,
                    format!("{} needs {}", table.owner, group.what),
                )
                .label(owner_span, "missing here")
                .help("add one of them"),
            );
        }
        let distinct: Vec<&str> = {
            let mut names: Vec<&str> = members.iter().map(|(n, _)| *n).collect();
            names.sort_unstable();
            names.dedup();
            names
        };
        if !group.many && distinct.len() > 1 {
            let mut d = Diagnostic::new(
                Code::Conflict,
                format!(
                    "{} takes {}; this one has {}",
                    table.owner,
                    group.what,
                    distinct.len()
                ),
            );
            for (n, span) in &members {
                d = d.label(*span, format!("`{n}`"));
            }
            typer
                .diagnostics
                .push(d.help("keep one of them; for more, use one step each"));
        }
    }
    for name in table.names.iter() {
        let Some(spec) = (table.lookup)(name) else {
            continue;
        };
        if spec.required && first(&seen, spec.name).is_none() && !meant.contains(&spec.name) {
            typer.diagnostics.push(
                Diagnostic::new(
                    Code::MissingProperty,
                    format!("{} needs `{}`", table.owner, spec.name),
                )
                .label(owner_span, format!("`{}` missing", spec.name))
                .help(format!("add `{}`", spec.shape.usage)),
            );
        }
        if let Some(span) = first(&seen, spec.name) {
            for needed in spec.requires {
                if first(&seen, needed).is_none() {
                    typer.diagnostics.push(
                        Diagnostic::new(
                            Code::MissingProperty,
                            format!("`{}` is only used together with `{needed}`", spec.name),
                        )
                        .label(span, format!("needs `{needed}`"))
                        .help(format!("add `{needed}` or remove `{}`", spec.name)),
                    );
                }
            }
        }
    }
    found
}

fn check_shape(
    p: &Property,
    spec: &'static Prop,
    typer: &mut Typer,
    steps: &HashMap<String, (StepId, &'static super::schema::Kind)>,
    found: &mut Vec<StepId>,
) {
    let shape: &Shape = &spec.shape;
    let wrong = |at: Span, what: &str| {
        Diagnostic::new(
            Code::WrongArguments,
            format!("wrong arguments for `{}`: {what}", spec.name),
        )
        .label(at, what.to_string())
        .help(format!("write `{}`", shape.usage))
    };
    if p.args.len() < shape.args.len() {
        let at = p.args.last().map(|a| a.span).unwrap_or(p.name.span);
        typer.diagnostics.push(wrong(at, "too few arguments"));
        return;
    }
    for (arg, expr) in shape.args.iter().zip(&p.args) {
        check_arg(spec.name, *arg, expr, typer, steps, found);
    }
    let mut rest = p.args[shape.args.len()..].iter();
    let mut used: Vec<&str> = Vec::new();
    while let Some(word) = rest.next() {
        let option = word
            .as_name()
            .and_then(|n| shape.options.iter().find(|(o, _)| *o == n.name));
        let Some((name, args)) = option else {
            let mut d = wrong(word.span, "unexpected argument");
            if shape.options.is_empty() && word.as_name().is_some() {
                d = d.help(format!(
                    "write `{}`; put each property on its own line, or separate them with `;`",
                    shape.usage
                ));
            }
            typer.diagnostics.push(d);
            return;
        };
        if used.contains(name) {
            typer
                .diagnostics
                .push(wrong(word.span, "option given twice"));
        }
        used.push(name);
        for arg in args.iter() {
            let Some(expr) = rest.next() else {
                typer
                    .diagnostics
                    .push(wrong(word.span, &format!("`{name}` needs a value")));
                return;
            };
            check_arg(spec.name, *arg, expr, typer, steps, found);
        }
    }
}

fn check_arg(
    prop: &'static str,
    arg: Arg,
    expr: &Expr,
    typer: &mut Typer,
    steps: &HashMap<String, (StepId, &'static super::schema::Kind)>,
    found: &mut Vec<StepId>,
) {
    match arg {
        Arg::Word(words) => {
            let ok = expr
                .as_name()
                .is_some_and(|n| words.contains(&n.name.as_str()));
            if !ok {
                let written = expr.as_name().map(|n| n.name.as_str()).unwrap_or("");
                typer.diagnostics.push(
                    Diagnostic::new(
                        Code::WrongArguments,
                        format!("`{prop}` expects {}", one_of(words)),
                    )
                    .label(expr.span, "not one of these")
                    .help(did_you_mean(written, words.iter().copied(), || {
                        format!("write {}", one_of(words))
                    })),
                );
            }
        }
        Arg::Step(kind) => {
            let Some(name) = expr.as_name() else {
                typer.diagnostics.push(
                    Diagnostic::new(
                        Code::WrongArguments,
                        format!("`{prop}` expects the name of a step"),
                    )
                    .label(expr.span, "not a step name"),
                );
                return;
            };
            let Some((id, step_kind)) = steps.get(&name.name).copied() else {
                let help = did_you_mean(&name.name, steps.keys().map(String::as_str), || {
                    "name a step of this runbook".into()
                });
                typer.diagnostics.push(
                    Diagnostic::new(Code::UnknownStep, format!("unknown step `{}`", name.name))
                        .label(name.span, "no step has this name")
                        .help(help),
                );
                return;
            };
            if let Some(k) = kind {
                if step_kind.name != k {
                    typer.diagnostics.push(
                        Diagnostic::new(
                            Code::UndoNotDeploy,
                            format!(
                                "`{}` is {}; only a `{k}` step can be undone",
                                name.name,
                                step_kind.a_step()
                            ),
                        )
                        .label(name.span, step_kind.a_step())
                        .help(
                            "undo a deploy step; to revert other changes, add a step that does it",
                        ),
                    );
                    return;
                }
            }
            found.push(id);
        }
        Arg::Condition => {
            typer.in_check = true;
            typer.expect_bool(expr, &format!("`{prop}`"));
            typer.in_check = false;
        }
        value => {
            let ty = typer.type_of(expr);
            if !accepts(value, ty) {
                let mut d = Diagnostic::new(
                    Code::TypeMismatch,
                    format!(
                        "`{prop}` expects {}, found {}",
                        describe(value),
                        ty.describe()
                    ),
                )
                .label(expr.span, format!("this is {}", ty.describe()));
                if ty == Type::Secret {
                    d = d.help("a secret may only be used where it is not shown: connection strings, URLs, headers and `env` of a run step");
                } else if value == Arg::Duration {
                    d = d.help("write a duration such as `30s`, `10m` or `1h30m`");
                } else if matches!(value, Arg::Text | Arg::SecretText) {
                    d = d.help("write text in double quotes, e.g. \"neo-db\"");
                }
                typer.diagnostics.push(d);
            } else if value == Arg::List {
                check_list_items(prop, expr, typer);
            }
        }
    }
}

fn check_list_items(prop: &str, expr: &Expr, typer: &mut Typer) {
    let (message, help) = match prop {
        "args" => (
            "a secret cannot be a command argument",
            "arguments are visible to every user of the machine (ps); pass the secret with `env NAME VALUE`",
        ),
        "params" => (
            "a secret cannot be a query parameter",
            "a query's parameters are shown in its log; put the secret in the connection string (`postgres`)",
        ),
        _ => return,
    };
    if let ExprKind::List(items) = &expr.kind {
        for item in items {
            if typer.type_of(item) == Type::Secret {
                typer.diagnostics.push(
                    Diagnostic::new(Code::TypeMismatch, message)
                        .label(item.span, "this is a secret")
                        .help(help),
                );
            }
        }
    }
}

fn accepts(arg: Arg, ty: Type) -> bool {
    match arg {
        Arg::Text => matches!(ty, Type::Str | Type::Path | Type::Dynamic),
        Arg::SecretText => matches!(ty, Type::Str | Type::Path | Type::Secret | Type::Dynamic),
        Arg::Int => matches!(ty, Type::Int | Type::Dynamic),
        Arg::Number => matches!(ty, Type::Int | Type::Float | Type::Percent | Type::Dynamic),
        Arg::Duration => matches!(ty, Type::Duration | Type::Dynamic),
        Arg::List => matches!(ty, Type::List | Type::Dynamic),
        Arg::Condition | Arg::Word(_) | Arg::Step(_) => true,
    }
}

fn describe(arg: Arg) -> &'static str {
    match arg {
        Arg::Text | Arg::SecretText => "text",
        Arg::Int => "an integer",
        Arg::Number => "a number",
        Arg::Duration => "a duration",
        Arg::List => "a list",
        Arg::Condition => "a condition",
        Arg::Word(_) => "a word",
        Arg::Step(_) => "a step name",
    }
}

fn one_of(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match quoted.len() {
        1 => quoted[0].clone(),
        _ => format!("one of {}", quoted.join(", ")),
    }
}
