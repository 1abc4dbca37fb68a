//! A URL written with interpolations (`"${base}/api/${service}?q=${term}"`):
//! a value that lands in the path, the query or the fragment is
//! percent-encoded as one piece of that part, so a `/`, `?`, `#`, `&` or
//! `=` in it cannot change which resource is asked for or which
//! parameters are sent. A value before the path (`${base}`, a whole URL or
//! a host) goes in as it is: it is meant to be URL syntax.

use super::eval::{eval_in, Bindings, Sealed, StepFields, Value};
use crate::syntax::ast::{ExprKind, StrPart};

/// Where in a URL the text so far ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Scheme, user info, host and port: values go in as they are.
    Head,
    Path,
    Query,
    Fragment,
}

fn part_after(url: &str) -> Part {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return Part::Head;
    };
    let rest = &url[start..];
    if rest.contains('#') {
        Part::Fragment
    } else if rest.contains('?') {
        Part::Query
    } else if rest.contains('/') {
        Part::Path
    } else {
        Part::Head
    }
}

/// Every byte but the unreserved ones (RFC 3986: letters, digits, `-._~`)
/// as `%XX`.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Evaluates `e` as a URL: as `eval_in`, but interpolated values in the
/// path, query or fragment are percent-encoded.
pub fn url_in(
    e: &crate::syntax::ast::Expr,
    b: &Bindings,
    env: &dyn Fn(&str) -> Option<String>,
    steps: &StepFields,
) -> Value {
    let ExprKind::Str(s) = &e.kind else {
        return eval_in(e, b, env, steps);
    };
    let mut out = String::new();
    let mut sealed = false;
    for part in &s.parts {
        let value = match part {
            StrPart::Text(t) => {
                out.push_str(t);
                continue;
            }
            StrPart::Interp(inner) => match eval_in(inner, b, env, steps) {
                Value::Str(t) => t,
                Value::Sealed(t) => {
                    sealed = true;
                    t.expose().to_string()
                }
                Value::Secret(_) | Value::Later(_) => return eval_in(e, b, env, steps),
                other => other.to_string(),
            },
        };
        match part_after(&out) {
            Part::Head => out.push_str(&value),
            _ => out.push_str(&encode(&value)),
        }
    }
    if sealed {
        Value::Sealed(Sealed::new(out))
    } else {
        Value::Str(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(src: &str, params: &[(&str, &str)]) -> String {
        let text =
            format!("runbook r {{\n  param base: string\n  param v: string\n  let u = {src}\n}}\n");
        let plan = crate::compile::check(&text).expect("checks");
        let given: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let b = super::super::eval::bind(&plan, &given, &|_| None).expect("binds");
        let expr = &plan.lets.iter().find(|l| l.name == "u").expect("u").value;
        match url_in(expr, &b, &|_| None, &|_| None) {
            Value::Str(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_in_the_path_and_query_are_encoded_and_a_base_is_not() {
        let p = [
            ("base", "https://api.example:8443"),
            ("v", "a b/../x?y=1&z#f"),
        ];
        assert_eq!(
            url("\"${base}/api/${v}/health\"", &p),
            "https://api.example:8443/api/a%20b%2F..%2Fx%3Fy%3D1%26z%23f/health"
        );
        assert_eq!(
            url("\"${base}/search?q=${v}&n=1\"", &p),
            "https://api.example:8443/search?q=a%20b%2F..%2Fx%3Fy%3D1%26z%23f&n=1"
        );
        assert_eq!(
            url("\"${base}/x#${v}\"", &p),
            "https://api.example:8443/x#a%20b%2F..%2Fx%3Fy%3D1%26z%23f"
        );
        assert_eq!(
            url("\"https://${v}\"", &[("base", "x"), ("v", "host:80")]),
            "https://host:80"
        );
        assert_eq!(
            url("\"${base}/plain-name\"", &p),
            "https://api.example:8443/plain-name"
        );
    }
}
