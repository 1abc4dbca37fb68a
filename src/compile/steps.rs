//! Checking steps: kinds, names, `after`, `when`, properties; collecting edges.

use super::names::did_you_mean;
use super::plan::{Edge, Interrupt, Phase, Property, Retry, Step, StepId};

use super::props;
use super::schema::{self, CheckName, Kind, StepKind};
use super::Compiler;
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::ast::{self, ExprKind, Item};
use std::time::Duration;

/// Moves each step's condition and properties from the syntax tree into the
/// compiled steps, in the order `Compiler::steps` numbered them.
pub(super) fn take_bodies(runbook: ast::Runbook, steps: &mut [Step<()>]) {
    let mut ast_steps = Vec::with_capacity(steps.len());
    for item in runbook.items {
        match item {
            Item::Step(s) => ast_steps.push(s),
            Item::OnFailure(on) => ast_steps.extend(on.steps),
            _ => {}
        }
    }
    for (compiled, step) in steps.iter_mut().zip(ast_steps) {
        compiled.when = step.when;
        compiled.properties = step
            .body
            .into_iter()
            .map(|p| Property {
                name: p.name.name,
                args: p.args,
                span: p.span,
            })
            .collect();
    }
}

/// Each checked step with its typed action. Lowering fails only where the
/// checker let a mistake through; that is reported, never run.
pub(super) fn lower(steps: Vec<Step<()>>) -> Result<Vec<Step>, Vec<Diagnostic>> {
    let mut lowered = Vec::with_capacity(steps.len());
    let mut diagnostics = Vec::new();
    for step in steps {
        match super::action::lower(step.kind.id, &step.properties) {
            Ok(action) => lowered.push(step.with_action(action)),
            Err(why) => diagnostics.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    format!("the step `{}` cannot run: {why}", step.name),
                )
                .label(step.name_span, "this step")
                .help("this is a mistake in runbook's checker; please report it with the runbook"),
            ),
        }
    }
    if diagnostics.is_empty() {
        Ok(lowered)
    } else {
        Err(diagnostics)
    }
}

impl Compiler {
    pub(super) fn steps(&mut self, runbook: &ast::Runbook) -> Vec<Step<()>> {
        let mut all: Vec<(&ast::Step, Phase)> = Vec::new();
        let mut on_failure: Option<crate::diagnostic::Span> = None;
        for item in &runbook.items {
            match item {
                Item::Step(s) => all.push((s, Phase::Main)),
                Item::OnFailure(on) => {
                    if let Some(first) = on_failure {
                        self.diagnostics.push(
                            Diagnostic::new(Code::DuplicateProperty, "`on failure` is given twice")
                                .label(on.span.with_end(on.span.start + 2), "given again here")
                                .label(first.with_end(first.start + 2), "first given here")
                                .help("put all the failure steps in one `on failure { ... }`"),
                        );
                    }
                    on_failure.get_or_insert(on.span);
                    all.extend(on.steps.iter().map(|s| (s, Phase::OnFailure)));
                }
                _ => {}
            }
        }
        let mut kinds = Vec::new();
        for (i, (step, _)) in all.iter().enumerate() {
            let kind = self.kind(step);
            kinds.push(kind);
            // Only this loop names steps: one named before is a duplicate.
            if let Some((first, _)) = self.steps.get(&step.name.name) {
                let first = all[first.0].0.name.span;
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::DuplicateStep,
                        format!("two steps are named `{}`", step.name.name),
                    )
                    .label(step.name.span, "second step with this name")
                    .label(first, "first step with this name")
                    .help("step names must be unique: status, logs and `retry --from` use them"),
                );
                continue;
            }
            if let Some(value) = self.declared.get(&step.name.name) {
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::DuplicateName,
                        format!(
                            "`{}` is both a step and a parameter or `let`",
                            step.name.name
                        ),
                    )
                    .label(step.name.span, "the step")
                    .label(*value, "the value")
                    .help("rename one of them: expressions could not tell them apart"),
                );
            }
            // Unknown kinds still get a name, so references to them resolve.
            let k = kind.unwrap_or(&schema::KINDS[0]);
            self.steps.insert(step.name.name.clone(), (StepId(i), k));
        }
        let mut steps = Vec::new();
        for (i, ((step, phase), kind)) in all.iter().zip(kinds).enumerate() {
            steps.push(self.step(StepId(i), step, *phase, kind));
        }
        steps
    }

    fn kind(&mut self, step: &ast::Step) -> Option<&'static Kind> {
        let found = schema::kind(&step.kind.name);
        if found.is_none() {
            let help = did_you_mean(
                &step.kind.name,
                schema::KINDS.iter().map(|k| k.name),
                || {
                    let names: Vec<&str> = schema::KINDS.iter().map(|k| k.name).collect();
                    format!("the step kinds are {}", names.join(", "))
                },
            );
            self.diagnostics.push(
                Diagnostic::new(
                    Code::UnknownKind,
                    format!("unknown step kind `{}`", step.kind.name),
                )
                .label(step.kind.span, "not a step kind")
                .help(help),
            );
        }
        found
    }

    fn step(
        &mut self,
        id: StepId,
        step: &ast::Step,
        phase: Phase,
        kind: Option<&'static Kind>,
    ) -> Step<()> {
        for dep in &step.after {
            match self.steps.get(&dep.name) {
                Some((from, _)) => self.edges.push((*from, id, Edge::Succeeded)),
                None => {
                    let help =
                        did_you_mean(&dep.name, self.steps.keys().map(String::as_str), || {
                            "`after` names steps of this runbook".into()
                        });
                    self.diagnostics.push(
                        Diagnostic::new(Code::UnknownStep, format!("unknown step `{}`", dep.name))
                            .label(dep.span, "no step has this name")
                            .help(help),
                    );
                }
            }
        }
        self.condition(id, step, kind);
        let k = kind.unwrap_or(&schema::KINDS[0]);
        let mut compiled = Step {
            id,
            name: step.name.name.clone(),
            kind: k,
            phase,
            // Moved in from the syntax tree once checking is done (`take_bodies`).
            when: None,
            properties: Vec::new(),
            timeout: None,
            retry: None,
            on_interrupt: if k.rerun_safe {
                Interrupt::Rerun
            } else {
                Interrupt::Ask
            },
            undoes: Vec::new(),
            span: step.span,
            name_span: step.name.span,
            action: (),
        };
        if let Some(kind) = kind {
            self.properties(&mut compiled, step, kind);
        }
        compiled
    }

    fn condition(&mut self, id: StepId, step: &ast::Step, kind: Option<&'static Kind>) {
        let is_rollback = kind.is_some_and(|k| k.id == StepKind::RollbackIf);
        let Some(when) = &step.when else {
            if is_rollback {
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::RollbackWithoutWhen,
                        format!("the rollback-if `{}` has no condition", step.name.name),
                    )
                    .label(step.name.span, "needs `when`")
                    .help(format!(
                        "write `rollback-if {} when DEPLOY.failed or CHECK.failed {{ ... }}`",
                        step.name.name
                    )),
                );
            }
            return;
        };
        let mut diagnostics = Vec::new();
        let mut typer = self.typer(&mut diagnostics, &[], true);
        typer.expect_bool(when, "`when`");
        let refs = std::mem::take(&mut typer.step_refs);
        self.diagnostics.append(&mut diagnostics);
        if is_rollback && refs.is_empty() {
            self.diagnostics.push(
                Diagnostic::new(Code::RollbackNamesNoStep, "the condition of a rollback-if names no step")
                    .label(when.span, "no step here")
                    .help("say which steps it watches, e.g. `when production.failed or error_rate.failed`"),
            );
        }
        for (from, _) in refs {
            self.edges.push((from, id, Edge::Settled));
        }
    }

    fn properties(&mut self, compiled: &mut Step<()>, step: &ast::Step, kind: &'static Kind) {
        let lookup = |n: &str| kind.prop(n);
        let table = props::Table {
            owner: kind.a_step(),
            lookup: &lookup,
            names: kind.prop_names().collect(),
            groups: kind.groups,
            unknown_code: Code::UnknownProperty,
        };
        let check = check_names(kind, step);
        let mut diagnostics = Vec::new();
        let mut typer = self.typer(&mut diagnostics, &check, true);
        let step_args = props::check(&step.body, &table, step.name.span, &mut typer, &self.steps);
        let refs = std::mem::take(&mut typer.step_refs);
        self.diagnostics.append(&mut diagnostics);
        for (from, _) in refs {
            self.edges.push((from, compiled.id, Edge::Succeeded));
        }
        self.expectation_required(step, kind);
        for id in step_args {
            // An undo must run even when the deploy it undoes failed.
            self.edges.push((id, compiled.id, Edge::Settled));
            compiled.undoes.push(id);
        }
        for p in &step.body {
            let first = p.args.first();
            match p.name.name.as_str() {
                "timeout" => compiled.timeout = self.literal_duration(first, "timeout"),
                "retry" => compiled.retry = self.retry(p),
                "on-interrupt" => {
                    if let Some(word) = first.and_then(|a| a.as_name()) {
                        compiled.on_interrupt = if word.name == "rerun" {
                            Interrupt::Rerun
                        } else {
                            Interrupt::Ask
                        };
                    }
                }
                "hold" => self.hold(p),
                "scale" => {
                    if let Some(replicas) = p.args.get(2) {
                        if matches!(replicas.kind, ExprKind::Int { .. }) {
                            self.literal_int(Some(replicas), p, 0, 10_000);
                        }
                    }
                }
                "replicas" | "jobs" => {
                    let min = if p.name.name == "jobs" { 1 } else { 0 };
                    if matches!(first.map(|a| &a.kind), Some(ExprKind::Int { .. })) {
                        self.literal_int(first, p, min, 10_000);
                    }
                }
                _ => {}
            }
        }
    }

    /// A query's answer means nothing without a rule for it: sql and
    /// prometheus checks must say what they expect.
    fn expectation_required(&mut self, step: &ast::Step, kind: &Kind) {
        if kind.id != StepKind::Verify || step.body.iter().any(|p| p.name.name == "expect") {
            return;
        }
        if let Some(check) = step
            .body
            .iter()
            .find(|p| matches!(p.name.name.as_str(), "sql" | "prometheus"))
        {
            self.diagnostics.push(
                Diagnostic::new(
                    Code::MissingProperty,
                    format!("a `{}` check needs `expect`", check.name.name),
                )
                .label(check.name.span, "what result passes?")
                .help("add for example `expect value > 0` or `expect value < 1%`"),
            );
        }
    }

    fn retry(&mut self, p: &ast::Property) -> Option<Retry> {
        let attempts = self.literal_int(p.args.first(), p, 0, 1000);
        let mut retry = Retry {
            attempts: attempts.unwrap_or(0) as u32,
            every: Duration::from_secs(1),
            backoff: 1.0,
        };
        let mut complete = attempts.is_some();
        for pair in p.args.get(1..).unwrap_or_default().chunks(2) {
            let (Some(word), Some(value)) = (pair[0].as_name(), pair.get(1)) else {
                continue;
            };
            match word.name.as_str() {
                "every" => match self.literal_duration(Some(value), "every") {
                    Some(every) => retry.every = every,
                    None => complete = false,
                },
                "backoff" => match self.backoff(value) {
                    Some(factor) => retry.backoff = factor,
                    None => complete = false,
                },
                _ => {}
            }
        }
        complete.then_some(retry)
    }

    fn backoff(&mut self, value: &ast::Expr) -> Option<f64> {
        let factor = match &value.kind {
            ExprKind::Int { value: Some(n), .. } => *n as f64,
            ExprKind::Float { value, .. } => *value,
            _ => {
                self.not_literal(value, "backoff");
                return None;
            }
        };
        if !(1.0..=10.0).contains(&factor) {
            self.diagnostics.push(
                Diagnostic::new(Code::InvalidValue, "`backoff` must be between 1 and 10")
                    .label(value.span, "out of range")
                    .help("the wait is multiplied by this factor after each attempt; 2 doubles it"),
            );
            return None;
        }
        Some(factor)
    }

    fn hold(&mut self, p: &ast::Property) {
        let (Some(total), Some(every)) = (p.args.first(), p.args.get(2)) else {
            return;
        };
        if let (
            ExprKind::Duration {
                millis: Some(t), ..
            },
            ExprKind::Duration {
                millis: Some(e), ..
            },
        ) = (&total.kind, &every.kind)
        {
            if *e == 0 || e > t {
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::InvalidValue,
                        "the sampling interval of `hold` must be between zero and its duration",
                    )
                    .label(every.span, "interval")
                    .label(total.span, "duration")
                    .help("for example `hold 10m every 30s`"),
                );
            }
        }
    }
}

/// The names an `expect` of this step may use, narrowed to its check.
fn check_names(kind: &Kind, step: &ast::Step) -> Vec<(&'static str, CheckName)> {
    let check = step.body.iter().map(|p| p.name.name.as_str()).find(|n| {
        matches!(
            *n,
            "http" | "sql" | "prometheus" | "command" | "rollout" | "certificate"
        )
    });
    let allowed: &[&str] = match (kind.id, check) {
        (StepKind::Verify, Some("http")) => &["status", "body", "json"],
        (StepKind::Verify, Some("sql")) | (StepKind::Sql, _) => &["value", "rows"],
        (StepKind::Verify, Some("prometheus")) => &["value"],
        (StepKind::Verify, Some("command")) => &["exit_code", "stdout", "stderr"],
        (StepKind::Verify, Some("rollout")) => &["ready"],
        (StepKind::Verify, Some("certificate")) => &["days_left"],
        _ => &[],
    };
    kind.check_names
        .iter()
        .filter(|(n, _)| allowed.contains(n))
        .copied()
        .collect()
}
