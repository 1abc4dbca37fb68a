use super::{load, EXIT_DIAGNOSTICS, EXIT_OK};
use crate::compile::eval::{bind, eval, format_duration, Bindings, Value};
use crate::compile::schema::{Arg, Prop};
use crate::compile::{Interrupt, Phase, Plan, Step, StepId};
use crate::error::Error;
use crate::syntax::format;
use std::fmt::Write;
use std::path::Path;

/// `runbook plan`: what a run would do with these parameters.
pub fn run(path: &Path, params: &[String]) -> Result<u8, Error> {
    let mut given = Vec::new();
    for p in params {
        let Some((name, value)) = p.split_once('=') else {
            return Err(Error::Usage(format!("-p {p}: write NAME=VALUE")));
        };
        given.push((name.trim().to_string(), value.to_string()));
    }
    let Some(plan) = load(path)? else {
        return Ok(EXIT_DIAGNOSTICS);
    };
    let unset = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let env = |name: &str| {
        let value = std::env::var(name).ok();
        if value.is_none() {
            unset.borrow_mut().insert(name.to_string());
        }
        value
    };
    let bindings =
        bind(&plan, &given, &env).map_err(|errors| Error::Usage(errors.join("\n       ")))?;
    print!("{}", render(&plan, &bindings, &env));
    let secrets: Vec<&str> = bindings
        .unset_secrets
        .iter()
        .map(|(_, var)| var.as_str())
        .collect();
    for var in unset
        .borrow()
        .iter()
        .filter(|v| !secrets.contains(&v.as_str()))
    {
        eprintln!("warning: the environment variable {var} is not set; `env(\"{var}\")` gives its default, or an empty string");
    }
    for (name, var) in &bindings.unset_secrets {
        eprintln!("warning: the secret `{name}` comes from ${var}, which is not set; a run needs it (set it, or pass -p {name}=...)");
    }
    Ok(EXIT_OK)
}

/// The plan as text: parameters, steps by stage, approvals and rollbacks.
pub fn render(plan: &Plan, b: &Bindings, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = format!("runbook {}\n", plan.name);
    if let Some(about) = &plan.settings.about {
        let _ = writeln!(out, "  {about}");
    }
    let s = &plan.settings;
    let mut limits = vec![format!("concurrency {}", s.concurrency)];
    if let Some(t) = s.timeout {
        limits.push(format!("timeout {}", format_duration(t.as_millis() as u64)));
    }
    if let Some(sched) = &s.schedule {
        let mut text = format!("schedule \"{}\" {}", sched.cron, sched.timezone);
        if !sched.description.is_empty() {
            let _ = write!(text, " ({})", sched.description);
        }
        if let Some(w) = sched.window {
            let _ = write!(text, ", window {}", format_duration(w.as_millis() as u64));
        }
        limits.push(text);
    }
    let _ = writeln!(out, "  {}", limits.join(", "));
    if !plan.params.is_empty() {
        out.push_str("\nparameters:\n");
        let width = plan.params.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in &plan.params {
            let value = b
                .values
                .get(&p.name)
                .map(|v| v.to_string())
                .unwrap_or_default();
            let source = match b.values.get(&p.name) {
                Some(Value::Secret(from)) if p.ty == crate::compile::Type::Secret => {
                    format!("  (secret, {from})")
                }
                Some(Value::Secret(from)) => {
                    format!("  ({from}: read from the environment, not shown)")
                }
                _ if b.given.contains(&p.name) => String::new(),
                _ => "  (default)".into(),
            };
            let _ = writeln!(out, "  {:width$} = {value}{source}", p.name);
        }
    }
    for (phase, title) in [(Phase::Main, "steps"), (Phase::OnFailure, "on failure")] {
        let stages = plan.stages(phase);
        if stages.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        for (i, stage) in stages.iter().enumerate() {
            let together = if stage.len() > 1 {
                "  (these can run together)"
            } else {
                ""
            };
            let _ = writeln!(out, "  stage {}{together}", i + 1);
            for id in stage {
                write_step(&mut out, plan, &plan.steps[id.0], b, env);
            }
        }
    }
    write_summary(&mut out, plan);
    out
}

fn write_step(
    out: &mut String,
    plan: &Plan,
    step: &Step,
    b: &Bindings,
    env: &dyn Fn(&str) -> Option<String>,
) {
    let mut tags = Vec::new();
    if step.changes_systems() {
        tags.push("changes systems");
    }
    if step.needs_approval() {
        tags.push("needs approval");
    }
    if step.on_interrupt == Interrupt::Ask {
        tags.push("asks before re-running after a crash");
    }
    let tags = if tags.is_empty() {
        String::new()
    } else {
        format!("  [{}]", tags.join(", "))
    };
    let _ = writeln!(out, "    {} {}{tags}", step.kind.name, step.name);
    let deps = super::graph::waits_for(plan, step.id);
    if !deps.is_empty() {
        let _ = writeln!(out, "      waits: {deps}");
    }
    if let Some(when) = &step.when {
        let _ = writeln!(out, "      when {}", format::expr(when));
    }
    for p in &step.properties {
        let mut line = p.name.clone();
        for arg in &p.args {
            line.push(' ');
            line.push_str(&shown(step.kind.prop(&p.name), arg, b, env));
        }
        let _ = writeln!(out, "      {line}");
    }
}

/// One argument as the run would see it: parameters resolved, keywords, step
/// names and conditions as written, secrets masked.
fn shown(
    spec: Option<&Prop>,
    arg: &crate::syntax::ast::Expr,
    b: &Bindings,
    env: &dyn Fn(&str) -> Option<String>,
) -> String {
    if spec.is_some_and(|s| s.name == "expect") {
        return format::expr(arg);
    }
    if let Some(name) = arg.as_name() {
        // A keyword of the property (`get`, `every`, `to`) or a step name wins
        // over a parameter that happens to have the same name.
        if spec.is_some_and(|s| is_keyword(s, &name.name)) || !b.values.contains_key(&name.name) {
            return name.name.clone();
        }
    }
    eval(arg, b, env).to_string()
}

fn is_keyword(spec: &Prop, word: &str) -> bool {
    let in_args = |args: &[Arg]| {
        args.iter().any(|a| match a {
            Arg::Word(words) => words.contains(&word),
            Arg::Step(_) => true,
            _ => false,
        })
    };
    in_args(spec.shape.args)
        || spec
            .shape
            .options
            .iter()
            .any(|(name, args)| *name == word || in_args(args))
}

fn write_summary(out: &mut String, plan: &Plan) {
    let names = |ids: &mut dyn Iterator<Item = &Step>| -> Vec<String> {
        ids.map(|s| s.name.clone()).collect()
    };
    let changing = names(&mut plan.steps.iter().filter(|s| s.changes_systems()));
    let approvals = names(&mut plan.steps.iter().filter(|s| s.needs_approval()));
    out.push_str("\nsummary:\n");
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(out, "  change systems: {}", list(&changing));
    let _ = writeln!(out, "  need approval:  {}", list(&approvals));
    let undo: Vec<String> = plan
        .steps
        .iter()
        .flat_map(|s| {
            s.undoes.iter().map(move |d: &StepId| {
                let cond = s
                    .when
                    .as_ref()
                    .map(|w| format!(" when {}", format::expr(w)))
                    .unwrap_or_default();
                format!("{} undoes {}{cond}", s.name, plan.steps[d.0].name)
            })
        })
        .collect();
    if undo.is_empty() {
        let _ = writeln!(out, "  rollbacks:      none");
    } else {
        let _ = writeln!(out, "  rollbacks:");
        for line in undo {
            let _ = writeln!(out, "    {line}");
        }
    }
}
