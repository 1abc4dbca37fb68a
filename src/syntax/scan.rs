//! A lexical pass before pest: limits that keep parsing bounded, and the
//! comments, which the grammar skips and the formatter keeps.

use super::parser::Comment;
use crate::diagnostic::Span;

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

/// The text with `#` comments blanked out, ignoring `#` inside strings only roughly:
/// used to decide what kind of error to report, never to parse.
pub(super) fn without_comments(text: &str) -> String {
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

/// The first line with code (not blank, not only a comment), its leading
/// blanks trimmed: what `without_comments(text).trim_start()` starts with,
/// without copying the text.
pub(super) fn first_code_line(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim_start)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
}

/// What a lexical pass finds: the comments (pest skips them) and where
/// nesting first gets too deep for the recursive-descent parser.
pub(super) struct Scan {
    pub comments: Vec<Comment>,
    pub too_deep: Option<usize>,
}

/// Whether a `"""` closes a triple-quoted string somewhere in `rest`.
fn closes_triple(rest: &[u8]) -> bool {
    let mut i = 0;
    while i + 2 < rest.len() {
        match rest[i] {
            b'\\' => i += 2,
            b'"' if rest[i + 1] == b'"' && rest[i + 2] == b'"' => return true,
            _ => i += 1,
        }
    }
    false
}

/// One pass over the text that tracks strings, interpolations and brackets
/// exactly as the grammar does, so a `#` inside a string is not a comment.
pub(super) fn scan(source: &str) -> Scan {
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
                // Only the grammar's escapes take the next character with them.
                if b == b'\\' && matches!(bytes.get(i + 1), Some(b'"' | b'\\' | b'n' | b't' | b'$'))
                {
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
                // `"""` opens a triple-quoted string only if one closes it; otherwise
                // the grammar reads `""` and a new string, and so must this.
                if rest.starts_with(b"\"\"\"") && closes_triple(&bytes[i + 3..]) {
                    stack.push(Ctx::Triple);
                    i += 2;
                } else if b == b'"' {
                    stack.push(Ctx::Str);
                } else if b == b'#' {
                    let end = source[i..]
                        .find(['\n', '\r'])
                        .map(|n| i + n)
                        .unwrap_or(source.len());
                    // A comment inside `${...}` of a string belongs to the string's
                    // text, which the formatter prints as written.
                    let in_string = stack.iter().any(|c| *c != Ctx::Code);
                    if !in_string {
                        found.comments.push(Comment {
                            text: source[i..end].trim_end().to_string(),
                            span: Span::new(i, end),
                        });
                    }
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
