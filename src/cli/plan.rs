use super::{load, EXIT_DIAGNOSTICS, EXIT_OK};
use crate::compile::eval::{bind, eval, format_duration, Bindings, Value};
use crate::compile::plan::Overlap;
use crate::compile::schema::{Arg, Prop};
use crate::compile::{Interrupt, Phase, Plan, Settings, Step, StepId};
use crate::error::Error;
use crate::syntax::format;
use chrono::{DateTime, Utc};
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
    let _ = writeln!(out, "  {}", limits.join(", "));
    write_schedule(&mut out, s, chrono::Utc::now());
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
    if spec.is_some_and(|s| s.shape.args.contains(&Arg::Condition)) {
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

/// How many coming fires the plan shows.
const NEXT_FIRES: usize = 3;

/// The schedule with its next fires, the blackouts and the locks: what the
/// scheduler reads. `now` is a parameter so that tests can fix it.
fn write_schedule(out: &mut String, s: &Settings, now: DateTime<Utc>) {
    if s.schedule.is_none() && s.blackouts.is_empty() && s.locks.is_empty() {
        return;
    }
    out.push_str("\nschedule:\n");
    let duration = |d: std::time::Duration| format_duration(d.as_millis() as u64);
    match &s.schedule {
        None => out.push_str("  none: only started by hand\n"),
        Some(sched) => {
            let _ = write!(out, "  \"{}\" in {}", sched.cron, sched.timezone);
            if !sched.description.is_empty() {
                let _ = write!(out, " ({})", sched.description);
            }
            out.push('\n');
            let mut options = Vec::new();
            if let Some(w) = sched.window {
                options.push(format!("window {}", duration(w)));
            }
            options.push(format!("overlap {}", overlap(sched.overlap)));
            options.push(match sched.catch_up {
                Some(c) => format!("catch-up {}", duration(c)),
                None => "no catch-up".into(),
            });
            let _ = writeln!(out, "  {}", options.join(", "));
            let zone = crate::compile::schedule::check_timezone(&sched.timezone).ok();
            let mut at = now;
            for i in 0..NEXT_FIRES {
                let Some(next) = sched.next_fire(at) else {
                    break;
                };
                let label = if i == 0 { "next:" } else { "" };
                let _ = write!(out, "  {label:5} {}", next.format("%Y-%m-%d %H:%M UTC"));
                if let Some(tz) = zone.filter(|tz| tz.name() != "UTC") {
                    let local = next.with_timezone(&tz);
                    let _ = write!(out, " ({})", local.format("%Y-%m-%d %H:%M %Z"));
                }
                if let Some(b) = s.blackouts.iter().find(|b| b.covers(next)) {
                    let _ = write!(out, "  in the blackout {}", b.text);
                }
                out.push('\n');
                at = next;
            }
        }
    }
    for b in &s.blackouts {
        let _ = write!(out, "  blackout {}", b.text);
        // The zone it took from the schedule or the default, if it names none.
        if !b.text.contains(" timezone ") {
            let _ = write!(out, " (in {})", b.timezone);
        }
        out.push('\n');
    }
    for lock in &s.locks {
        let _ = writeln!(out, "  lock {lock:?}");
    }
}

fn overlap(o: Overlap) -> &'static str {
    match o {
        Overlap::Skip => "skip",
        Overlap::Queue => "queue",
        Overlap::Cancel => "cancel",
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_shows_its_next_fires_blackouts_and_locks() {
        let source = r#"runbook r {
  schedule "0 2 * * *" timezone "Europe/Amsterdam" window 2h catch-up 6h
  blackout "2026-03-30"
  blackout "0 17 * * FRI" for 63h timezone "UTC"
  lock "neo-db"
}
"#;
        let plan = crate::compile::check(source).expect("compiles");
        let now = "2026-03-28T12:00:00Z".parse().expect("an instant");
        let mut out = String::new();
        write_schedule(&mut out, &plan.settings, now);
        assert_eq!(
            out,
            r#"
schedule:
  "0 2 * * *" in Europe/Amsterdam (At 02:00)
  window 2h, overlap skip, catch-up 6h
  next: 2026-03-29 01:00 UTC (2026-03-29 03:00 CEST)  in the blackout "0 17 * * FRI" for 63h timezone "UTC"
        2026-03-30 00:00 UTC (2026-03-30 02:00 CEST)  in the blackout "2026-03-30"
        2026-03-31 00:00 UTC (2026-03-31 02:00 CEST)
  blackout "2026-03-30" (in Europe/Amsterdam)
  blackout "0 17 * * FRI" for 63h timezone "UTC"
  lock "neo-db"
"#
        );
    }

    #[test]
    fn a_runbook_without_scheduler_settings_shows_none() {
        let plan = crate::compile::check("runbook r {}\n").expect("compiles");
        let mut out = String::new();
        write_schedule(&mut out, &plan.settings, Utc::now());
        assert_eq!(out, "");
    }
}
