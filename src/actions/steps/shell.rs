//! The script of a `shell` step. What the runbook interpolates into it
//! (`${param}`, `${step.output.x}`) reaches `/bin/sh` quoted, as one word,
//! so a value can never become shell syntax: `${file}` holding
//! `x; rm -rf /` stays a file name. Secrets are refused: the script is
//! `/bin/sh`'s argument, which `ps` shows to every user of the machine.

use super::scope::Scope;
use crate::actions::step::{FailureKind, StepError};
use crate::compile::action::Input;
use crate::compile::eval::Value;
use crate::diagnostic::Span;
use crate::syntax::ast::{ExprKind, StrPart};

const SECRET: &str = "the `shell` script would hold a secret, and `ps` shows a script to every user of the machine; pass the secret with `env NAME VALUE` and write \"$NAME\" in the script";

/// The script, with every interpolated value quoted.
pub(super) fn script(script: &Input, scope: &Scope) -> Result<String, StepError> {
    let arg = &script.expr;
    let unusable = |at: Span, why: String| StepError::new(FailureKind::Value, why).at(at);
    let ExprKind::Str(literal) = &arg.kind else {
        // A whole script from a `let` or a parameter is the author's text.
        return match scope.eval(arg) {
            Value::Sealed(_) | Value::Secret(_) => Err(unusable(arg.span, SECRET.into())),
            Value::Str(text) => Ok(text),
            other => Err(unusable(
                arg.span,
                format!("`shell` is not a script: {other}"),
            )),
        };
    };
    let mut out = String::new();
    for part in &literal.parts {
        match part {
            StrPart::Text(text) => out.push_str(text),
            StrPart::Interp(inner) => match scope.eval(inner) {
                Value::Sealed(_) | Value::Secret(_) => {
                    return Err(unusable(inner.span, SECRET.into()))
                }
                Value::Later(expr) => {
                    return Err(unusable(inner.span, format!(
                        "`shell` uses `{expr}`, which has no value in this run (a step recorded as done by hand has no outputs)"
                    )))
                }
                value => match value.expose() {
                    Some(text) => out.push_str(&quote(&text)),
                    None => {
                        return Err(unusable(
                            inner.span,
                            format!("`shell` has no value a script can take: {value}"),
                        ))
                    }
                },
            },
        }
    }
    Ok(out)
}

/// One word for `/bin/sh`: as it is when it holds only characters the shell
/// gives no meaning to, else in single quotes.
pub fn quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn words_the_shell_cannot_misread_stay_as_they_are_others_are_quoted() {
        assert_eq!(
            quote("/etc/letsencrypt/live/neo-service"),
            "/etc/letsencrypt/live/neo-service"
        );
        assert_eq!(quote("neo-production"), "neo-production");
        assert_eq!(quote("x; rm -rf /"), "'x; rm -rf /'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(id)"), "'$(id)'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
    }
}
