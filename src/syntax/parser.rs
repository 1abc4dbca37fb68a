//! pest pairs to the syntax tree. The grammar lives in `grammar/runbook.pest`.

use super::ast::*;
use crate::diagnostic::{Code, Diagnostic, Span};
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser as _;
use std::sync::OnceLock;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/runbook.pest"]
struct Grammar;

/// Runbooks larger than this are refused before parsing. A generated
/// 10,000-step runbook is under 1 MB; the limit bounds the time and memory a
/// pathological file can cost (about half a gigabyte at worst).
pub const MAX_SOURCE_BYTES: usize = 2 * 1024 * 1024;

/// Brackets, parentheses, braces and interpolations nested deeper than this
/// are refused, so that the recursive-descent parser cannot exhaust the stack.
pub const MAX_NESTING: usize = 32;

/// Operators in one expression (between brackets) beyond this are refused:
/// with the nesting limit this bounds the depth of every expression tree, and
/// so the recursion of everything that walks one.
pub const MAX_OPERATORS: usize = 32;

/// The span of the first expression with too many operators, if any.
fn too_many_operators(file: &Pair<Rule>) -> Option<Span> {
    file.clone()
        .into_inner()
        .flatten()
        .filter(|p| p.as_rule() == Rule::expr)
        .find(|p| {
            let operators = p
                .clone()
                .into_inner()
                .filter(|c| {
                    matches!(
                        c.as_rule(),
                        Rule::or_op | Rule::and_op | Rule::not_op | Rule::cmp_op
                    )
                })
                .count();
            operators > MAX_OPERATORS
        })
        .map(|p| span(&p))
}

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
    let code = without_comments(source);
    if code.trim().is_empty() {
        return Err(vec![empty_file()]);
    }
    if !code.trim_start().starts_with("runbook") {
        let at = source.len() - source.trim_start().len();
        return Err(vec![Diagnostic::new(
            Code::Syntax,
            "a runbook file starts with `runbook NAME {`",
        )
        .label(Span::new(at, at), "expected `runbook` here")
        .help("write `runbook my_procedure { ... }` around the steps")]);
    }
    let mut pairs = Grammar::parse(Rule::file, source).map_err(|e| {
        let error = syntax_error(e, source);
        let at = error.offset();
        if source
            .get(at..)
            .is_some_and(|rest| without_comments(rest).trim().is_empty())
        {
            let end = source.trim_end().len();
            vec![
                Diagnostic::new(Code::Syntax, "the file ends before the runbook is closed")
                    .label(
                        Span::new(end.saturating_sub(1), end),
                        "the file ends here; a `}` is missing",
                    )
                    .help("every `{` needs a matching `}`"),
            ]
        } else {
            vec![error]
        }
    })?;
    let file = pairs.next().ok_or_else(|| vec![empty_file()])?;
    if let Some(at) = too_many_operators(&file) {
        return Err(vec![Diagnostic::new(
            Code::Syntax,
            format!("an expression has more than {MAX_OPERATORS} operators"),
        )
        .label(at, "this expression")
        .help("split it with `let` bindings")]);
    }
    let runbook = children(file)
        .find(|p| p.as_rule() == Rule::runbook)
        .ok_or_else(|| vec![empty_file()])?;
    Ok(Parsed {
        runbook: build_runbook(runbook),
        comments: scan.comments,
    })
}

/// The text with `#` comments blanked out, ignoring `#` inside strings only roughly:
/// used to decide what kind of error to report, never to parse.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with('#') {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn empty_file() -> Diagnostic {
    Diagnostic::new(Code::Syntax, "the file has no runbook")
        .label(Span::new(0, 0), "expected `runbook NAME { ... }`")
        .help("a runbook file holds one `runbook NAME { ... }`")
}

/// What a lexical pass finds: the comments (pest skips them) and where
/// nesting first gets too deep for the recursive-descent parser.
struct Scan {
    comments: Vec<Comment>,
    too_deep: Option<usize>,
}

/// One pass over the text that tracks strings, interpolations and brackets
/// exactly as the grammar does, so a `#` inside a string is not a comment.
fn scan(source: &str) -> Scan {
    #[derive(PartialEq)]
    enum Ctx {
        Code,
        Str,
        Triple,
    }
    let bytes = source.as_bytes();
    // `depth` counts open brackets and interpolations; strings are not levels.
    let mut stack = vec![Ctx::Code];
    let mut depth = 0usize;
    let mut found = Scan {
        comments: Vec::new(),
        too_deep: None,
    };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let rest = &bytes[i..];
        match stack.last() {
            Some(Ctx::Str | Ctx::Triple) => {
                if b == b'\\' {
                    i += 1;
                } else if rest.starts_with(b"${") {
                    stack.push(Ctx::Code);
                    depth += 1;
                    i += 1;
                } else if stack.last() == Some(&Ctx::Triple) && rest.starts_with(b"\"\"\"") {
                    stack.pop();
                    i += 2;
                } else if stack.last() == Some(&Ctx::Str) && (b == b'"' || b == b'\n') {
                    stack.pop();
                }
            }
            _ => {
                if rest.starts_with(b"\"\"\"") {
                    stack.push(Ctx::Triple);
                    i += 2;
                } else if b == b'"' {
                    stack.push(Ctx::Str);
                } else if b == b'#' {
                    let end = source[i..]
                        .find(['\n', '\r'])
                        .map(|n| i + n)
                        .unwrap_or(source.len());
                    found.comments.push(Comment {
                        text: source[i..end].trim_end().to_string(),
                        span: Span::new(i, end),
                    });
                    i = end;
                    continue;
                } else if matches!(b, b'(' | b'[' | b'{') {
                    stack.push(Ctx::Code);
                    depth += 1;
                } else if matches!(b, b')' | b']' | b'}') && stack.len() > 1 {
                    stack.pop();
                    depth -= 1;
                }
            }
        }
        if depth > MAX_NESTING && found.too_deep.is_none() {
            found.too_deep = Some(i.min(bytes.len().saturating_sub(1)));
        }
        i += 1;
    }
    found
}

/// Words the grammar keeps for itself (`keyword` in the grammar).
const RESERVED: &[&str] = &[
    "and", "or", "not", "true", "false", "after", "when", "contains",
];

fn syntax_error(error: pest::error::Error<Rule>, source: &str) -> Diagnostic {
    let (start, end) = match error.location {
        pest::error::InputLocation::Pos(p) => (p, p),
        pest::error::InputLocation::Span((s, e)) => (s, e),
    };
    let positives = match &error.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        pest::error::ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let here = Span::new(start, end.max(start));
    if positives.contains(&Rule::plain_text) || positives.contains(&Rule::triple_text) {
        return Diagnostic::new(Code::Syntax, "syntax error: this string is not closed")
            .label(here, "the string ends here without a closing quote")
            .help("close it with `\"` on the same line; write text over several lines as \"\"\"...\"\"\"");
    }
    if let Some(d) = common_mistake(source, start, &positives) {
        return d;
    }
    let mut names: Vec<&str> = positives.iter().map(|r| rule_name(*r)).collect();
    names.sort_unstable();
    names.dedup();
    let message = match names.len() {
        0 => "unexpected input".to_string(),
        _ => format!("expected {}", names.join(", ")),
    };
    Diagnostic::new(Code::Syntax, format!("syntax error: {message}"))
        .label(here, "here")
        .help("each item and property goes on its own line (or separate them with `;`)")
}

/// A plainer message for mistakes people make often, judged from the text at
/// the error.
fn common_mistake(source: &str, at: usize, positives: &[Rule]) -> Option<Diagnostic> {
    let rest = source.get(at..)?;
    let before = source.get(..at)?;
    if rest.starts_with('\\') {
        return Some(
            Diagnostic::new(Code::Syntax, "syntax error: `\\` does not continue a line")
                .label(Span::new(at, at + 1), "here")
                .help(
                    "a line may break after `and`, `or`, a comparison or `,`, and inside brackets",
                ),
        );
    }
    if rest.starts_with('-') && before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        let start = before.len()
            - before
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .count();
        return Some(
            Diagnostic::new(Code::Syntax, "syntax error: names cannot contain `-`")
                .label(Span::new(start, at + 1), "a name with a hyphen")
                .help("use `_` instead, e.g. `staging_health`"),
        );
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if RESERVED.contains(&word.as_str()) && positives.contains(&Rule::ident) {
        return Some(
            Diagnostic::new(
                Code::Syntax,
                format!("syntax error: `{word}` is a reserved word"),
            )
            .label(Span::new(at, at + word.len()), "expected a name here")
            .help(format!(
                "reserved words cannot be names: {}",
                RESERVED.join(", ")
            )),
        );
    }
    None
}

fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::sep => "a new line",
        Rule::runbook => "`runbook NAME { ... }`",
        Rule::param => "`param`",
        Rule::let_binding => "`let`",
        Rule::on_failure => "`on failure { ... }`",
        Rule::step | Rule::kind => "a step",
        Rule::setting | Rule::prop_name | Rule::property => "a property",
        Rule::after => "`after`",
        Rule::condition => "`when`",
        Rule::type_name => "a type",
        Rule::ident | Rule::field => "a name",
        Rule::expr => "an expression",
        Rule::or_op => "`or`",
        Rule::and_op => "`and`",
        Rule::not_op => "`not`",
        Rule::cmp_op => "a comparison",
        Rule::list => "a list",
        Rule::reference => "a name",
        Rule::call_args => "arguments",
        Rule::duration => "a duration",
        Rule::percent => "a percentage",
        Rule::number => "a number",
        Rule::boolean => "`true` or `false`",
        Rule::string | Rule::plain_string | Rule::triple_string => "a string",
        Rule::plain_text | Rule::triple_text => "text",
        Rule::escape => "an escape (\\\" \\\\ \\n \\t \\$)",
        Rule::interpolation => "`${...}`",
        _ => "a newline",
    }
}

fn span(pair: &Pair<Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.end())
}

/// Inner pairs without the separators between items.
fn children(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| p.as_rule() != Rule::sep)
}

fn ident(pair: Pair<Rule>) -> Ident {
    Ident {
        name: pair.as_str().to_string(),
        span: span(&pair),
    }
}

fn build_runbook(pair: Pair<Rule>) -> Runbook {
    let whole = span(&pair);
    let mut inner = children(pair);
    let mut name = None;
    let mut items = Vec::new();
    for p in inner.by_ref() {
        match p.as_rule() {
            Rule::ident => name = Some(ident(p)),
            Rule::items => items = children(p).map(build_item).collect(),
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

fn build_item(pair: Pair<Rule>) -> Item {
    match pair.as_rule() {
        Rule::param => {
            let s = span(&pair);
            let mut it = children(pair);
            let name = it.next().map(ident);
            let ty = it.next().map(ident);
            let default = it.next().map(build_expr);
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
            let value = it.next().map(build_expr).unwrap_or(Expr {
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
                .map(build_step)
                .collect();
            Item::OnFailure(OnFailure { steps, span: s })
        }
        Rule::step => Item::Step(build_step(pair)),
        _ => Item::Setting(build_property(pair)),
    }
}

fn missing(span: Span) -> Ident {
    Ident {
        name: String::new(),
        span,
    }
}

fn build_step(pair: Pair<Rule>) -> Step {
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
            Rule::condition => when = children(p).next().map(build_expr),
            Rule::body => {
                body_span = span(&p);
                body = children(p).map(build_property).collect();
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

fn build_property(pair: Pair<Rule>) -> Property {
    let s = span(&pair);
    let mut it = children(pair);
    let name = it.next().map(ident).unwrap_or_else(|| missing(s));
    let args: Vec<Expr> = it.map(build_expr).collect();
    // pest's span runs over trailing blanks and comments; end at the last token.
    let end = args.last().map(|a| a.span.end).unwrap_or(name.span.end);
    Property {
        name,
        args,
        span: s.with_end(end),
    }
}

fn build_expr(pair: Pair<Rule>) -> Expr {
    let s = span(&pair);
    match pair.as_rule() {
        Rule::expr => build_operators(pair),
        Rule::list => Expr {
            kind: ExprKind::List(children(pair).map(build_expr).collect()),
            span: s,
        },
        Rule::reference => {
            let mut it = children(pair).peekable();
            let name = it.next().map(ident).unwrap_or_else(|| missing(s));
            if it.peek().is_some_and(|p| p.as_rule() == Rule::call_args) {
                let args = it.flat_map(children).map(build_expr).collect();
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
            kind: ExprKind::Str(build_string(pair)),
            span: s,
        },
        _ => Expr {
            kind: ExprKind::Bool(false),
            span: s,
        },
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

/// Builds the tree of a flat `expr` by operator precedence.
fn build_operators(pair: Pair<Rule>) -> Expr {
    pratt()
        .map_primary(build_expr)
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

fn build_string(pair: Pair<Rule>) -> StrLit {
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
                    parts.push(StrPart::Interp(build_expr(e)));
                }
            }
            _ => {}
        }
    }
    StrLit { raw, parts }
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
