//! A check's sample and its judgement: what `expect` sees, what the step
//! outputs, and the sentence a failed judgement gives.

use super::scope::Scope;
use crate::actions::step::{FailureKind, StepError};
use crate::compile::eval::Value;
use crate::syntax::ast::Expr;
use crate::syntax::format;
use std::collections::BTreeMap;

/// One sample: the names `expect` sees, what the step outputs, and how
/// a failed judgement describes it.
pub(super) struct Sample {
    pub(super) names: BTreeMap<String, Value>,
    pub(super) json: Option<serde_json::Value>,
    pub(super) outputs: BTreeMap<String, String>,
    /// Without `expect`: whether the sample passes, and if not, why.
    pub(super) default: Result<(), String>,
}

/// `expect` on the sample, or the check's default without one. A failed
/// `expect` points at itself; a failed default, nowhere (the caller knows
/// the check).
pub(super) fn judge(
    expect: Option<&Expr>,
    scope: &Scope,
    sample: &Sample,
) -> Result<(), StepError> {
    let Some(expect) = expect else {
        return sample
            .default
            .clone()
            .map_err(|why| StepError::new(FailureKind::Expectation, why));
    };
    let failed = |kind, why| Err(StepError::new(kind, why).at(expect.span));
    let mut bindings = scope.bindings().clone();
    bindings.values.extend(sample.names.clone());
    let written = format::expr(expect);
    match scope.eval_check(expect, &bindings, sample.json.as_ref()) {
        Value::Bool(true) => Ok(()),
        Value::Bool(false) => {
            let seen: Vec<String> = sample
                .names
                .iter()
                .filter(|(name, _)| mentions(&written, name))
                .map(|(name, value)| match value {
                    Value::Str(text) => format!("{name} was {:?}", excerpt(text)),
                    other => format!("{name} was {other}"),
                })
                .collect();
            if seen.is_empty() {
                failed(FailureKind::Expectation, format!("expected {written}"))
            } else {
                failed(
                    FailureKind::Expectation,
                    format!("expected {written}, but {}", seen.join(", ")),
                )
            }
        }
        other => failed(
            FailureKind::Value,
            format!("`expect {written}` could not be decided ({other})"),
        ),
    }
}

/// Whether `name` appears in the expression as a word, or as `json.`'s base.
fn mentions(written: &str, name: &str) -> bool {
    written
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| word == name)
}

/// The first 80 characters of a text, for messages.
pub(super) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

pub(super) fn excerpt_bytes(text: &str, cap: usize) -> String {
    if text.len() <= cap {
        return text.to_string();
    }
    let mut cut = cap;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_string()
}
