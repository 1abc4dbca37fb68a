//! Syntax errors: pest's failures turned into diagnostics people can act on.

use super::parser::{Grammar, Rule};
use super::scan::without_comments;
use crate::diagnostic::{Code, Diagnostic, Span};
use pest::Parser as _;

pub(super) fn empty_file() -> Diagnostic {
    Diagnostic::new(Code::Syntax, "the file has no runbook")
        .label(Span::new(0, 0), "expected `runbook NAME { ... }`")
        .help("a runbook file holds one `runbook NAME { ... }`")
}

/// Words the grammar keeps for itself (`keyword` in the grammar).
const RESERVED: &[&str] = &[
    "and", "or", "not", "true", "false", "after", "when", "contains",
];

/// At most this many syntax errors are reported from one file.
const MAX_SYNTAX_ERRORS: usize = 20;

/// Every syntax error of a file, not only the first. After each error the
/// line it is on is set aside (blanked, keeping a block it opens or closes
/// balanced) and the text parsed again; positions are kept, so each error
/// points into the original file. Stops when the text parses, when an error
/// does not move forward, or at the end of the file.
pub(super) fn every_syntax_error(source: &str, first: pest::error::Error<Rule>) -> Vec<Diagnostic> {
    let mut text = source.to_string();
    let mut errors: Vec<Diagnostic> = Vec::new();
    let mut next = Some(first);
    while let Some(error) = next.take() {
        let diagnostic = describe(&text, error);
        let at = diagnostic.offset();
        let at_end = text
            .get(at..)
            .is_none_or(|rest| without_comments(rest).trim().is_empty());
        let moved_on = errors
            .last()
            .is_none_or(|last| line_start(&text, at) > last.offset());
        if !moved_on {
            break;
        }
        errors.push(diagnostic);
        if at_end || errors.len() >= MAX_SYNTAX_ERRORS || !set_line_aside(&mut text, at) {
            break;
        }
        // Setting a line aside can change what is string and what is code: the
        // changed text must pass the nesting limit before pest sees it.
        if super::scan::scan(&text).too_deep.is_some() {
            break;
        }
        next = Grammar::parse(Rule::file, &text).err();
    }
    errors
}

fn line_start(text: &str, at: usize) -> usize {
    text.get(..at)
        .and_then(|t| t.rfind('\n'))
        .map(|i| i + 1)
        .unwrap_or(0)
}

/// Blanks the line holding `at`, keeping its length. A line that opens a
/// block becomes a placeholder step header, one that closes a block keeps
/// its `}`, so the rest of the file still lines up. Returns false when the
/// line cannot be set aside (the runbook's own header).
fn set_line_aside(text: &mut String, at: usize) -> bool {
    let start = line_start(text, at);
    let end = text[start..]
        .find('\n')
        .map(|i| start + i)
        .unwrap_or(text.len());
    let line = &text[start..end];
    if line.trim_start().starts_with("runbook") {
        return false;
    }
    let mut balance = 0i32;
    let mut in_string = false;
    for c in line.chars() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => break,
            '{' if !in_string => balance += 1,
            '}' if !in_string => balance -= 1,
            _ => {}
        }
    }
    let keep = match balance {
        0 => String::new(),
        1 => "x x {".to_string(),
        -1 => "}".to_string(),
        _ => return false,
    };
    let width = line.len();
    if keep.len() > width {
        return false;
    }
    let replacement = format!("{keep}{}", " ".repeat(width - keep.len()));
    text.replace_range(start..end, &replacement);
    true
}

/// One pest error as a diagnostic; `text` is what was parsed.
fn describe(text: &str, error: pest::error::Error<Rule>) -> Diagnostic {
    let diagnostic = syntax_error(error, text);
    let at = diagnostic.offset();
    let at_end = text
        .get(at..)
        .is_some_and(|rest| without_comments(rest).trim().is_empty());
    if !at_end {
        return diagnostic;
    }
    let end = text.trim_end().len();
    Diagnostic::new(Code::Syntax, "the file ends before the runbook is closed")
        .label(
            // The last character, whole: a span inside a multi-byte one breaks JSON columns.
            Span::new(text[..end].char_indices().last().map_or(0, |(i, _)| i), end),
            "the file ends here; a `}` is missing",
        )
        .help("every `{` needs a matching `}`")
}

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
        Rule::new_line => "a new line",
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
        Rule::reference | Rule::word => "a name",
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

#[cfg(test)]
mod tests {
    use crate::syntax::parse;

    fn lines_of_errors(src: &str) -> Vec<usize> {
        let errors = parse(src).expect_err("has syntax errors");
        errors
            .iter()
            .map(|d| src[..d.offset()].matches('\n').count() + 1)
            .collect()
    }

    #[test]
    fn reports_every_broken_line_not_only_the_first() {
        let src = "runbook r {\n  deploy d {\n    image \"x\n  }\n  verify bad-name {\n    command \"true\"\n  }\n  wait w {\n    duration 1s +\n  }\n}\n";
        assert_eq!(lines_of_errors(src), [3, 5, 9]);
    }

    #[test]
    fn a_missing_brace_at_the_end_is_one_error() {
        assert_eq!(
            lines_of_errors("runbook r {\n  wait w {\n    duration 1s\n"),
            [3]
        );
    }

    #[test]
    fn a_broken_runbook_header_stops_recovery() {
        assert_eq!(
            lines_of_errors("runbook my-proc {\n  wait w { duration 1s } +\n}\n"),
            [1]
        );
    }
}
