//! `run` and `shell`: a step's program, started with its argv (or the
//! `shell` script with every value quoted), its environment and the
//! variables it must not inherit; its outputs.

use super::log::Log;
use super::scope::{Scope, OUTPUT_CAP};
use crate::actions::command::{self, CommandSpec, Ended, Stream};
use crate::actions::step::{FailureKind, StepError};
use crate::compile::action::{Launch, Program};
use std::collections::BTreeMap;

pub(super) fn command_spec(program: &Program, scope: &Scope) -> Result<CommandSpec, StepError> {
    let (text, args, shell) = match &program.launch {
        Launch::Shell(script) => (super::shell::script(script, scope)?, Vec::new(), true),
        Launch::Command { program, args } => {
            (scope.text(program)?, scope.list(args.as_ref())?, false)
        }
    };
    Ok(CommandSpec {
        program: text,
        args,
        shell,
        env: scope.pairs(&program.env)?,
        cwd: match scope.text_of(program.cwd.as_ref())? {
            Some(dir) => Some(scope.path(dir)),
            None => scope.workdir(),
        },
        notes: None,
        withheld: scope.secret_vars(),
        inherit: scope.inherit(),
    })
}

/// Runs the step's program; the result, or why it could not start.
pub(super) async fn execute(
    program: &Program,
    scope: &Scope,
    log: &Log,
) -> Result<command::CommandResult, StepError> {
    let mut spec = command_spec(program, scope)?;
    spec.notes = log.step_notes();
    command::run(&spec, None, OUTPUT_CAP, |stream, line| {
        log.line(stream == Stream::Stderr, line)
    })
    .await
    .map_err(|e| StepError::from(e).at(program.launch.input().expr.span))
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
    program: &Program,
    scope: &Scope,
    log: &Log,
) -> Result<BTreeMap<String, String>, StepError> {
    let result = execute(program, scope, log).await?;
    let (kind, why) = match result.ended {
        Ended::Exited(0) => return Ok(outputs(&result, log)),
        Ended::Exited(code) => (FailureKind::Exited, format!("exited with code {code}")),
        Ended::Signalled(signal) => (FailureKind::Exited, format!("killed by signal {signal}")),
        Ended::TimedOut => (FailureKind::TimedOut, "timed out".to_string()),
    };
    Err(StepError::new(kind, why).at(program.launch.input().expr.span))
}
