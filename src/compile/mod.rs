//! The compile layer: names resolved, properties and expressions type-checked,
//! a DAG of steps built, every mistake reported at once.

pub mod action;
mod blackouts;
pub mod eval;
mod graph;
pub mod names;
pub mod plan;
mod props;
pub mod schedule;
pub mod schema;
pub mod types;
pub mod url;

pub use blackouts::{check_lock_name, directory_blackouts};
pub use plan::{
    Edge, Interrupt, Overlap, Phase, Plan, Retry, Schedule, Settings, Step, StepId, Type,
};

use crate::diagnostic::{Code, Diagnostic, Span};
use crate::syntax::ast::{self, Expr, ExprKind, Item};
use names::did_you_mean;
use plan::{LetDef, ParamDef};
use schema::{CheckName, Kind};
use std::collections::HashMap;
use std::time::Duration;
use types::{Scope, Typer};

/// Parses and compiles source text.
pub fn check(source: &str) -> Result<Plan, Vec<Diagnostic>> {
    let parsed = crate::syntax::parse(source)?;
    compile(parsed.runbook)
}

/// Compiles a syntax tree into a plan, or every diagnostic found, in source order.
pub fn compile(runbook: ast::Runbook) -> Result<Plan, Vec<Diagnostic>> {
    let mut c = Compiler::default();
    c.declarations(&runbook);
    let settings = c.settings(&runbook);
    let mut steps = c.steps(&runbook);
    let name = runbook.name.name.clone();
    steps::take_bodies(runbook, &mut steps);
    let graph = graph::build(&steps, &c.edges, &mut c.diagnostics);
    // Needs an acyclic graph; toposort fails (and it returns) otherwise.
    graph::unreachable(&steps, &graph, &mut c.diagnostics);
    if !c.diagnostics.is_empty() {
        let mut diagnostics = c.diagnostics;
        diagnostics.sort_by_key(|d| d.offset());
        diagnostics.dedup();
        return Err(diagnostics);
    }
    let steps = steps::lower(steps)?;
    Ok(Plan::new(name, settings, c.params, c.lets, steps, graph))
}

#[derive(Default)]
struct Compiler {
    diagnostics: Vec<Diagnostic>,
    params: Vec<ParamDef>,
    lets: Vec<LetDef>,
    /// Types of parameters and lets by name.
    values: HashMap<String, Type>,
    /// Where each value was declared, for duplicate reports.
    declared: HashMap<String, Span>,
    steps: HashMap<String, (StepId, &'static Kind)>,
    /// (from, to, why), collected while checking steps.
    edges: Vec<(StepId, StepId, Edge)>,
}

impl Compiler {
    fn declare(&mut self, name: &ast::Ident) -> bool {
        if let Some(first) = self.declared.get(&name.name) {
            self.diagnostics.push(
                Diagnostic::new(
                    Code::DuplicateName,
                    format!("`{}` is declared twice", name.name),
                )
                .label(name.span, "declared again here")
                .label(*first, "first declared here")
                .help("rename one of them"),
            );
            return false;
        }
        self.declared.insert(name.name.clone(), name.span);
        true
    }

    fn typer<'a>(
        &'a self,
        diagnostics: &'a mut Vec<Diagnostic>,
        check: &'a [(&'static str, CheckName)],
        steps: bool,
    ) -> Typer<'a, 'a> {
        Typer {
            scope: Scope {
                values: &self.values,
                steps: steps.then_some(&self.steps),
                check,
            },
            diagnostics,
            step_refs: Vec::new(),
            in_check: false,
        }
    }

    /// Parameters and lets, in order: a `let` sees what is declared before it.
    fn declarations(&mut self, runbook: &ast::Runbook) {
        for item in &runbook.items {
            match item {
                Item::Param(p) => self.param(p),
                Item::Let(l) => {
                    let mut diagnostics = Vec::new();
                    let ty = self.typer(&mut diagnostics, &[], false).type_of(&l.value);
                    self.diagnostics.append(&mut diagnostics);
                    if self.declare(&l.name) {
                        self.values.insert(l.name.name.clone(), ty);
                        self.lets.push(LetDef {
                            name: l.name.name.clone(),
                            ty,
                            value: l.value.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
    }

    fn param(&mut self, p: &ast::Param) {
        let Some(ty) = Type::from_name(&p.ty.name) else {
            let help = did_you_mean(&p.ty.name, schema::TYPES.iter().copied(), || {
                format!("the types are {}", schema::TYPES.join(", "))
            });
            self.diagnostics.push(
                Diagnostic::new(Code::UnknownType, format!("unknown type `{}`", p.ty.name))
                    .label(p.ty.span, "not a type")
                    .help(help),
            );
            self.declare(&p.name);
            self.values.insert(p.name.name.clone(), Type::Dynamic);
            return;
        };
        if let Some(default) = &p.default {
            self.param_default(&p.name.name, ty, default);
        }
        if self.declare(&p.name) {
            self.values.insert(p.name.name.clone(), ty);
            self.params.push(ParamDef {
                name: p.name.name.clone(),
                ty,
                default: p.default.clone(),
                span: p.span,
            });
        }
    }

    fn param_default(&mut self, name: &str, ty: Type, default: &Expr) {
        let mut diagnostics = Vec::new();
        let found = self.typer(&mut diagnostics, &[], false).type_of(default);
        self.diagnostics.append(&mut diagnostics);
        if ty == Type::Secret {
            let env_only = match &default.kind {
                ExprKind::Call { name, args } => name.name != "env" || args.len() == 1,
                _ => false,
            };
            if !env_only {
                self.diagnostics.push(
                    Diagnostic::new(Code::SecretLiteral, format!("the secret `{name}` has a value written in the runbook"))
                        .label(default.span, "a secret must not be in the source")
                        .help("read it from the environment: `= env(\"NAME\")`, or pass it with -p at run time"),
                );
            }
            return;
        }
        let fits = match ty {
            Type::Str | Type::Path => matches!(found, Type::Str | Type::Path),
            other => found == other,
        } || found == Type::Dynamic;
        if !fits {
            self.diagnostics.push(
                Diagnostic::new(
                    Code::TypeMismatch,
                    format!(
                        "the default of `{name}` is {}, but `{name}` is {}",
                        found.describe(),
                        ty.describe()
                    ),
                )
                .label(default.span, format!("this is {}", found.describe()))
                .help(format!(
                    "write {} here, or change the type of `{name}`",
                    ty.describe()
                )),
            );
        }
    }

    fn settings(&mut self, runbook: &ast::Runbook) -> Settings {
        let props: Vec<ast::Property> = runbook
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Setting(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        for p in &props {
            if p.name.name == "param" || p.name.name == "let" {
                self.diagnostics.push(
                    Diagnostic::new(Code::Syntax, format!("malformed `{}`", p.name.name))
                        .label(p.span, "cannot read this")
                        .help(if p.name.name == "param" {
                            "write `param NAME: TYPE` or `param NAME: TYPE = DEFAULT`"
                        } else {
                            "write `let NAME = VALUE`"
                        }),
                );
            }
        }
        let props: Vec<ast::Property> = props
            .into_iter()
            .filter(|p| p.name.name != "param" && p.name.name != "let")
            .collect();
        let lookup = |n: &str| schema::SETTINGS.iter().find(|p| p.name == n);
        let table = props::Table {
            owner: "a runbook".into(),
            lookup: &lookup,
            names: schema::SETTINGS.iter().map(|p| p.name).collect(),
            groups: &[],
            unknown_code: Code::UnknownSetting,
        };
        let mut diagnostics = Vec::new();
        let empty = HashMap::new();
        let mut typer = self.typer(&mut diagnostics, &[], false);
        props::check(&props, &table, runbook.name.span, &mut typer, &empty);
        self.diagnostics.append(&mut diagnostics);
        let mut settings = Settings::default();
        let mut blackouts = Vec::new();
        for p in &props {
            let first = p.args.first();
            match p.name.name.as_str() {
                "about" => settings.about = first.and_then(|e| self.text_literal(e, "about")),
                "concurrency" => {
                    if let Some(n) = self.literal_int(first, p, 1, 10_000) {
                        settings.concurrency = n as usize;
                    }
                }
                "timeout" => settings.timeout = self.literal_duration(first, "timeout"),
                "schedule" => settings.schedule = self.schedule(p),
                "namespace" => {
                    settings.namespace = first.and_then(|e| self.text_literal(e, "namespace"))
                }
                "context" => settings.context = first.and_then(|e| self.text_literal(e, "context")),
                // After the loop: their time zone defaults to the schedule's.
                "blackout" => blackouts.push(p),
                "lock" => settings.locks.extend(self.lock(p)),
                _ => {}
            }
        }
        let zone = settings
            .schedule
            .as_ref()
            .map_or("UTC".to_string(), |s| s.timezone.clone());
        for p in blackouts {
            settings.blackouts.extend(self.blackout(p, &zone));
        }
        settings.locks.sort();
        settings.locks.dedup();
        settings
    }

    fn schedule(&mut self, p: &ast::Property) -> Option<Schedule> {
        let cron_expr = p.args.first()?;
        let cron = self.text_literal(cron_expr, "schedule")?;
        let description = match schedule::check_cron(&cron) {
            Ok(parsed) => parsed.describe().trim_end_matches('.').to_string(),
            Err(why) => {
                self.diagnostics.push(
                    Diagnostic::new(Code::InvalidValue, format!("`{cron}` {why}"))
                        .label(cron_expr.span, "this schedule")
                        .help("write five fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\" for 02:00 every day"),
                );
                String::new()
            }
        };
        let mut schedule = Schedule {
            cron,
            description,
            timezone: "UTC".into(),
            window: None,
            overlap: Overlap::Skip,
            catch_up: None,
        };
        let mut window_at = None;
        // The shape (each option once, with a value) is checked by `props`.
        for pair in p.args[1..].chunks_exact(2) {
            let value = &pair[1];
            match pair[0].as_name().map(|n| n.name.as_str()) {
                Some("timezone") => {
                    if let Some(tz) = self.timezone(value) {
                        schedule.timezone = tz;
                    }
                }
                Some("window") => {
                    schedule.window = self.literal_duration(Some(value), "window");
                    window_at = Some(value.span);
                }
                Some("overlap") => {
                    schedule.overlap = match value.as_name().map(|n| n.name.as_str()) {
                        Some("queue") => Overlap::Queue,
                        Some("cancel") => Overlap::Cancel,
                        _ => Overlap::Skip,
                    }
                }
                Some("catch-up") => {
                    schedule.catch_up = self.literal_duration(Some(value), "catch-up")
                }
                _ => {}
            }
        }
        if let (Some(window), Some(at)) = (schedule.window, window_at) {
            self.window_fits(&schedule, window, at);
        }
        Some(schedule)
    }

    /// A run must be over before the next fire: otherwise `overlap` would
    /// decide every time, and a run stopped at the end of its window could
    /// still be running when the next one is due.
    fn window_fits(&mut self, schedule: &Schedule, window: Duration, at: Span) {
        let Some(gap) = schedule::shortest_gap(&schedule.cron, &schedule.timezone) else {
            return;
        };
        if window <= gap {
            return;
        }
        let show = |d: Duration| eval::format_duration(d.as_millis() as u64);
        self.diagnostics.push(
            Diagnostic::new(
                Code::InvalidValue,
                format!(
                    "the window ({}) is longer than the shortest time between two fires ({}), so a run could still be going when the next one is due",
                    show(window),
                    show(gap)
                ),
            )
            .label(at, format!("longer than {}", show(gap)))
            .help(format!(
                "give a window of {} or less, or a schedule that fires less often",
                show(gap)
            )),
        );
    }

    /// A time zone written out and known; anything else is reported.
    fn timezone(&mut self, e: &Expr) -> Option<String> {
        let tz = self.text_literal(e, "timezone")?;
        if let Err(help) = schedule::check_timezone(&tz) {
            self.diagnostics.push(
                Diagnostic::new(Code::InvalidValue, format!("unknown time zone `{tz}`"))
                    .label(e.span, "not a time zone")
                    .help(help),
            );
            return None;
        }
        Some(tz)
    }

    fn literal_int(
        &mut self,
        e: Option<&Expr>,
        p: &ast::Property,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let e = e?;
        match &e.kind {
            ExprKind::Int { value: Some(n), .. } if (min..=max).contains(n) => Some(*n),
            ExprKind::Int { value: Some(_), .. } => {
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::InvalidValue,
                        format!("`{}` must be between {min} and {max}", p.name.name),
                    )
                    .label(e.span, "out of range")
                    .help(format!("write a number from {min} to {max}")),
                );
                None
            }
            ExprKind::Int { .. } => None,
            _ => {
                self.not_literal(e, &p.name.name);
                None
            }
        }
    }

    /// A duration written out, longer than zero; `what` names it in messages.
    fn literal_duration(&mut self, e: Option<&Expr>, what: &str) -> Option<Duration> {
        let e = e?;
        match &e.kind {
            ExprKind::Duration {
                millis: Some(0), ..
            } => {
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::InvalidValue,
                        format!("`{what}` must be longer than zero"),
                    )
                    .label(e.span, "zero")
                    .help(format!("give `{what}` a duration such as `30s` or `10m`")),
                );
                None
            }
            ExprKind::Duration {
                millis: Some(ms), ..
            } => Some(Duration::from_millis(*ms)),
            ExprKind::Duration { .. } => None,
            _ => {
                self.not_literal(e, what);
                None
            }
        }
    }

    /// The text of a string written out in full; anything else is reported.
    fn text_literal(&mut self, e: &Expr, what: &str) -> Option<String> {
        let text = literal_text(e);
        if text.is_none() {
            self.diagnostics.push(
                Diagnostic::new(Code::InvalidValue, format!("`{what}` must be written out"))
                    .label(e.span, "not plain text")
                    .help("the scheduler and the plan read this before any parameter is known: write the text without `${...}` or names"),
            );
        }
        text
    }

    fn not_literal(&mut self, e: &Expr, what: &str) {
        if matches!(e.kind, ExprKind::Path(_) | ExprKind::Call { .. }) {
            self.diagnostics.push(
                Diagnostic::new(Code::InvalidValue, format!("`{what}` must be written as a literal"))
                    .label(e.span, "not a literal")
                    .help("the engine needs this value before the run starts; write it out, e.g. `10m` or `3`"),
            );
        }
    }
}

/// The text of a string literal without interpolations.
fn literal_text(e: &Expr) -> Option<String> {
    match &e.kind {
        ExprKind::Str(s) => {
            let mut out = String::new();
            for part in &s.parts {
                match part {
                    ast::StrPart::Text(t) => out.push_str(t),
                    ast::StrPart::Interp(_) => return None,
                }
            }
            Some(out)
        }
        _ => None,
    }
}

mod steps;
