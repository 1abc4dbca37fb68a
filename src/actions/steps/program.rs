//! `run` and `shell`: a step's program, started with its argv (or the
//! `shell` script with every value quoted), its environment and the
//! variables it must not inherit; its outputs.

use super::log::Log;
use super::scope::{Scope, OUTPUT_CAP};
use crate::actions::command::{self, CommandSpec, Ended, Stream};
use crate::compile::Step;
use std::collections::BTreeMap;

pub(super) fn command_spec(step: &Step, scope: &Scope) -> Result<CommandSpec, String> {
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

pub(super) async fn run_step(
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
