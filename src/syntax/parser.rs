//! pest pairs to the syntax tree. The grammar lives in `grammar/runbook.pest`.

use super::ast::*;
use crate::diagnostic::{Code, Diagnostic, Span};
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser as _;
use std::cell::Cell;
use std::sync::OnceLock;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/runbook.pest"]
pub(super) struct Grammar;

use super::errors::{empty_file, every_syntax_error};
use super::scan::{first_code_line, scan, MAX_NESTING, MAX_OPERATORS, MAX_SOURCE_BYTES};

/// A parsed file: its tree and the comments, which the formatter keeps.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub runbook: Runbook,
    pub comments: Vec<Comment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

pub fn parse(source: &str) -> Result<Parsed, Vec<Diagnostic>> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(vec![Diagnostic::new(
            Code::Syntax,
            format!(
                "the file is {} bytes; runbooks are limited to {} bytes",
                source.len(),
                MAX_SOURCE_BYTES
            ),
        )
        .label(Span::new(0, 0), "file starts here")
        .help("split the procedure into several runbooks")]);
    }
    let scan = scan(source);
    if let Some(offset) = scan.too_deep {
        return Err(vec![Diagnostic::new(
            Code::Syntax,
            format!("brackets are nested more than {MAX_NESTING} deep"),
        )
        .label(Span::new(offset, offset + 1), "too deep here")
        .help("flatten the expression")]);
    }
    let Some(first) = first_code_line(source) else {
        return Err(vec![empty_file()]);
    };
    if !first.starts_with("runbook") {
        let at = source.len() - source.trim_start().len();
        return Err(vec![Diagnostic::new(
            Code::Syntax,
            "a runbook file starts with `runbook NAME {`",
        )
        .label(Span::new(at, at), "expected `runbook` here")
        .help("write `runbook my_procedure { ... }` around the steps")]);
    }
    let mut pairs =
        Grammar::parse(Rule::file, source).map_err(|e| every_syntax_error(source, e))?;
    let file = pairs.next().ok_or_else(|| vec![empty_file()])?;
    let runbook = children(file)
        .find(|p| p.as_rule() == Rule::runbook)
        .ok_or_else(|| vec![empty_file()])?;
    let builder = Builder::default();
    let runbook = builder.build_runbook(runbook);
    if let Some(at) = builder.too_many_operators.get() {
        return Err(vec![Diagnostic::new(
            Code::Syntax,
            format!("an expression has more than {MAX_OPERATORS} operators"),
        )
        .label(at, "this expression")
        .help("split it with `let` bindings")]);
    }
    Ok(Parsed {
        runbook,
        comments: scan.comments,
    })
}

fn span(pair: &Pair<Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.end())
}

fn children(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner()
}

fn ident(pair: Pair<Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: span(&pair),
    }
}

/// Builds the syntax tree from pest's pairs, and finds the first
/// expression with more operators than allowed on the way: before the
/// operators of an expression are put in a tree, so that no tree is built
/// deeper than the limits allow.
#[derive(Default)]
struct Builder {
    too_many_operators: Cell<Option<Span>>,
}

impl Builder {
    fn build_runbook(&self, pair: Pair<Rule>) -> Runbook {
        let whole = span(&pair);
        let mut inner = children(pair);
        let mut name = None;
        let mut items = Vec::new();
        for p in inner.by_ref() {
            match p.as_rule() {
                Rule::ident => name = Some(ident(p)),
                Rule::items => items = children(p).map(|p| self.build_item(p)).collect(),
                _ => {}
            }
        }
        Runbook {
            name: name.unwrap_or(Ident {
                name: String::new(),
                span: whole,
            }),
            items,
            span: whole,
        }
    }

    fn build_item(&self, pair: Pair<Rule>) -> Item {
        match pair.as_rule() {
            Rule::param => {
                let s = span(&pair);
                let mut it = children(pair);
                let name = it.next().map(ident);
                let ty = it.next().map(ident);
                let default = it.next().map(|p| self.build_expr(p));
                let ty = ty.unwrap_or_else(|| missing(s));
                let end = default.as_ref().map(|d| d.span).unwrap_or(ty.span);
                Item::Param(Param {
                    name: name.unwrap_or_else(|| missing(s)),
                    ty,
                    default,
                    span: s.with_end(end.end),
                })
            }
            Rule::let_binding => {
                let s = span(&pair);
                let mut it = children(pair);
                let name = it.next().map(ident).unwrap_or_else(|| missing(s));
                let value = it.next().map(|p| self.build_expr(p)).unwrap_or(Expr {
                    kind: ExprKind::Bool(false),
                    span: s,
                });
                let span = s.with_end(value.span.end);
                Item::Let(Let { name, value, span })
            }
            Rule::on_failure => {
                let s = span(&pair);
                let steps = children(pair)
                    .filter(|p| p.as_rule() == Rule::steps)
                    .flat_map(children)
                    .map(|p| self.build_step(p))
                    .collect();
                Item::OnFailure(OnFailure { steps, span: s })
            }
            Rule::step => Item::Step(self.build_step(pair)),
            _ => Item::Setting(self.build_property(pair)),
        }
    }

    fn build_step(&self, pair: Pair<Rule>) -> Step {
        let s = span(&pair);
        let mut kind = missing(s);
        let mut name = missing(s);
        let mut after = Vec::new();
        let mut when = None;
        let mut body = Vec::new();
        let mut body_span = s;
        for p in children(pair) {
            match p.as_rule() {
                Rule::kind => kind = ident(p),
                Rule::ident => name = ident(p),
                Rule::after => after = children(p).map(ident).collect(),
                Rule::condition => when = children(p).next().map(|p| self.build_expr(p)),
                Rule::body => {
                    body_span = span(&p);
                    body = children(p).map(|p| self.build_property(p)).collect();
                }
                _ => {}
            }
        }
        Step {
            kind,
            name,
            after,
            when,
            body,
            body_span,
            span: s,
        }
    }

    fn build_property(&self, pair: Pair<Rule>) -> Property {
        let s = span(&pair);
        let mut it = children(pair);
        let name = it.next().map(ident).unwrap_or_else(|| missing(s));
        let args: Vec<Expr> = it.map(|p| self.build_expr(p)).collect();
        // pest's span runs over trailing blanks and comments; end at the last token.
        let end = args.last().map(|a| a.span.end).unwrap_or(name.span.end);
        Property {
            name,
            args,
            span: s.with_end(end),
        }
    }

    fn build_expr(&self, pair: Pair<Rule>) -> Expr {
        let s = span(&pair);
        match pair.as_rule() {
            Rule::expr => self.build_operators(pair),
            Rule::list => Expr {
                kind: ExprKind::List(children(pair).map(|p| self.build_expr(p)).collect()),
                span: s,
            },
            Rule::reference => {
                let mut it = children(pair).peekable();
                let name = it.next().map(ident).unwrap_or_else(|| missing(s));
                if it.peek().is_some_and(|p| p.as_rule() == Rule::call_args) {
                    let args = it.flat_map(children).map(|p| self.build_expr(p)).collect();
                    return Expr {
                        kind: ExprKind::Call { name, args },
                        span: s,
                    };
                }
                let mut parts = vec![name];
                parts.extend(it.map(ident));
                Expr {
                    kind: ExprKind::Path(parts),
                    span: s,
                }
            }
            // An option word such as `catch-up`: a bare name, as `every` is.
            Rule::word => Expr {
                kind: ExprKind::Path(vec![ident(pair)]),
                span: s,
            },
            Rule::duration => Expr {
                kind: ExprKind::Duration {
                    raw: pair.as_str().to_string(),
                    millis: parse_duration(pair.as_str()),
                },
                span: s,
            },
            Rule::percent => Expr {
                kind: ExprKind::Percent {
                    raw: pair.as_str().to_string(),
                    value: pair
                        .as_str()
                        .trim_end_matches('%')
                        .parse()
                        .unwrap_or(f64::NAN),
                },
                span: s,
            },
            Rule::number => {
                let raw = pair.as_str().to_string();
                let kind = if raw.contains('.') {
                    ExprKind::Float {
                        value: raw.parse().unwrap_or(f64::NAN),
                        raw,
                    }
                } else {
                    ExprKind::Int {
                        value: raw.parse().ok(),
                        raw,
                    }
                };
                Expr { kind, span: s }
            }
            Rule::boolean => Expr {
                kind: ExprKind::Bool(pair.as_str() == "true"),
                span: s,
            },
            Rule::string => Expr {
                kind: ExprKind::Str(self.build_string(pair)),
                span: s,
            },
            _ => Expr {
                kind: ExprKind::Bool(false),
                span: s,
            },
        }
    }

    /// Builds the tree of a flat `expr` by operator precedence; one with
    /// too many operators is noted and left out.
    fn build_operators(&self, pair: Pair<Rule>) -> Expr {
        let operators = pair
            .clone()
            .into_inner()
            .filter(|c| {
                matches!(
                    c.as_rule(),
                    Rule::or_op | Rule::and_op | Rule::not_op | Rule::cmp_op
                )
            })
            .count();
        if operators > MAX_OPERATORS {
            let first = self.too_many_operators.get().unwrap_or(span(&pair));
            self.too_many_operators.set(Some(first));
            return Expr {
                kind: ExprKind::Bool(false),
                span: span(&pair),
            };
        }
        pratt()
            .map_primary(|p| self.build_expr(p))
            .map_prefix(|op, operand| Expr {
                span: span(&op).join(operand.span),
                kind: ExprKind::Not(Box::new(operand)),
            })
            .map_infix(|lhs, op, rhs| {
                let op = match op.as_str() {
                    "or" => BinaryOp::Or,
                    "and" => BinaryOp::And,
                    "==" => BinaryOp::Eq,
                    "!=" => BinaryOp::Ne,
                    "<" => BinaryOp::Lt,
                    "<=" => BinaryOp::Le,
                    ">" => BinaryOp::Gt,
                    ">=" => BinaryOp::Ge,
                    _ => BinaryOp::Contains,
                };
                Expr {
                    span: lhs.span.join(rhs.span),
                    kind: ExprKind::Binary {
                        op,
                        lhs: Box::new(lhs),
                        rhs: Box::new(rhs),
                    },
                }
            })
            .parse(children(pair))
    }

    fn build_string(&self, pair: Pair<Rule>) -> StrLit {
        let raw = pair.as_str().to_string();
        let mut parts: Vec<StrPart> = Vec::new();
        let inner = pair.into_inner().next();
        for p in inner.into_iter().flat_map(|p| p.into_inner()) {
            match p.as_rule() {
                Rule::plain_text | Rule::triple_text => push_text(&mut parts, p.as_str()),
                Rule::escape => push_text(
                    &mut parts,
                    match p.as_str() {
                        "\\n" => "\n",
                        "\\t" => "\t",
                        "\\\"" => "\"",
                        "\\$" => "$",
                        _ => "\\",
                    },
                ),
                Rule::interpolation => {
                    if let Some(e) = children(p).next() {
                        parts.push(StrPart::Interp(self.build_expr(e)));
                    }
                }
                _ => {}
            }
        }
        StrLit { raw, parts }
    }
}

fn missing(span: Span) -> Ident {
    Ident {
        name: String::new(),
        span,
    }
}

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        // Loosest first.
        PrattParser::new()
            .op(Op::infix(Rule::or_op, Assoc::Left))
            .op(Op::infix(Rule::and_op, Assoc::Left))
            .op(Op::prefix(Rule::not_op))
            .op(Op::infix(Rule::cmp_op, Assoc::Left))
    })
}

fn push_text(parts: &mut Vec<StrPart>, text: &str) {
    if let Some(StrPart::Text(last)) = parts.last_mut() {
        last.push_str(text);
    } else {
        parts.push(StrPart::Text(text.to_string()));
    }
}

/// `1h30m` to milliseconds; `None` on overflow.
pub fn parse_duration(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_add_their_parts() {
        assert_eq!(parse_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }

    #[test]
    fn a_step_keeps_its_parts() {
        let src = "runbook r {\n  deploy prod after a, b when a.failed {\n    image \"x:${tag}\"\n  }\n}\n";
        let parsed = parse(src).expect("parses");
        let Item::Step(step) = &parsed.runbook.items[0] else {
            panic!("expected a step")
        };
        assert_eq!(step.kind.name, "deploy");
        assert_eq!(step.after.len(), 2);
        assert!(step.when.is_some());
        assert_eq!(step.body[0].name.name, "image");
    }

    #[test]
    fn an_option_word_may_have_hyphens_and_x_minus_1_is_still_two_arguments() {
        let src = "runbook r {\n  schedule \"0 2 * * *\" catch-up 6h\n  wait w {\n    retry x-1\n  }\n}\n";
        let parsed = parse(src).expect("parses");
        let Item::Setting(schedule) = &parsed.runbook.items[0] else {
            panic!("expected a setting")
        };
        assert_eq!(
            schedule.args[1].as_name().map(|n| n.name.as_str()),
            Some("catch-up")
        );
        let Item::Step(step) = &parsed.runbook.items[1] else {
            panic!("expected a step")
        };
        assert_eq!(step.body[0].args.len(), 2, "`x` and `-1`");
    }

    #[test]
    fn the_first_code_line_is_where_the_text_without_comments_starts() {
        use super::super::scan::without_comments;
        for text in [
            "",
            "  \n\t\n",
            "# only\n  # comments\n",
            "# c\n\n  runbook r {}\n",
            "\u{a0} runbook r {}",
            "x # runbook\nrunbook",
            "  #runbook\r\n\r\n runbookish {",
        ] {
            let code = without_comments(text);
            let first = first_code_line(text);
            assert_eq!(first.is_none(), code.trim().is_empty(), "{text:?}");
            if let Some(first) = first {
                assert!(code.trim_start().starts_with(first), "{text:?}");
            }
        }
    }

    #[test]
    fn the_first_expression_with_too_many_operators_is_the_one_named() {
        let long = vec!["x"; MAX_OPERATORS + 2].join(" and ");
        let src = format!("runbook r {{\n  let a = not ({long})\n  let b = {long}\n}}\n");
        let err = parse(&src).unwrap_err();
        assert!(err[0].message.contains("operators"), "{:?}", err[0]);
        let inner = src.find("(x").expect("there") + 1;
        assert_eq!(
            err[0].labels[0].span.start, inner,
            "the one in brackets, first"
        );
    }

    #[test]
    fn comments_are_collected() {
        let src = "# top\nrunbook r { # here\n  about \"x\" # trailing\n}\n";
        let parsed = parse(src).expect("parses");
        assert_eq!(parsed.comments.len(), 3);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let src = format!(
            "runbook r {{ let x = {}1{} }}",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        let err = parse(&src).unwrap_err();
        assert!(err[0].message.contains("nested"));
    }
}
