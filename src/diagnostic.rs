//! One diagnostic type for every layer: a stable code, a message, labelled spans
//! into the source and a help line. Rendered with miette for people and as JSON
//! for editors and scripts.

use serde::Serialize;
use std::fmt;
use std::sync::Arc;

/// A byte range in the source text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    pub fn with_end(self, end: usize) -> Span {
        Span::new(self.start, end.max(self.start))
    }

    pub fn join(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// Stable diagnostic codes. The numbers never change meaning; the book lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Code {
    Syntax,
    UnknownKind,
    DuplicateStep,
    UnknownStep,
    Cycle,
    UnknownProperty,
    MissingProperty,
    DuplicateProperty,
    TypeMismatch,
    UndefinedName,
    UndoNotDeploy,
    Unreachable,
    RollbackNamesNoStep,
    RollbackWithoutWhen,
    WrongArguments,
    UnknownSetting,
    DuplicateName,
    UnknownType,
    SecretLiteral,
    InvalidValue,
    Conflict,
    UnknownField,
    UnknownFunction,
}

impl Code {
    pub const ALL: [Code; 23] = [
        Code::Syntax,
        Code::UnknownKind,
        Code::DuplicateStep,
        Code::UnknownStep,
        Code::Cycle,
        Code::UnknownProperty,
        Code::MissingProperty,
        Code::DuplicateProperty,
        Code::TypeMismatch,
        Code::UndefinedName,
        Code::UndoNotDeploy,
        Code::Unreachable,
        Code::RollbackNamesNoStep,
        Code::RollbackWithoutWhen,
        Code::WrongArguments,
        Code::UnknownSetting,
        Code::DuplicateName,
        Code::UnknownType,
        Code::SecretLiteral,
        Code::InvalidValue,
        Code::Conflict,
        Code::UnknownField,
        Code::UnknownFunction,
    ];

    /// The stable identifier shown to users, e.g. `RB004`.
    pub fn id(self) -> String {
        let index = Code::ALL.iter().position(|c| *c == self).unwrap_or(0);
        format!("RB{:03}", index + 1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    pub labels: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            labels: Vec::new(),
            help: None,
        }
    }

    pub fn label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            text: text.into(),
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Where the diagnostic points first; used to sort a file's diagnostics.
    pub fn offset(&self) -> usize {
        self.labels.first().map(|l| l.span.start).unwrap_or(0)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// A diagnostic together with the file it points into, ready for miette.
pub struct Report<'a> {
    pub diagnostic: &'a Diagnostic,
    pub source: miette::NamedSource<Arc<str>>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diagnostic, f)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diagnostic.code.id()))
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h.clone()) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let len = self.source.inner().len();
        Some(Box::new(self.diagnostic.labels.iter().map(move |l| {
            let start = l.span.start.min(len);
            let end = l.span.end.clamp(start, len);
            miette::LabeledSpan::new(Some(l.text.clone()), start, end - start)
        })))
    }
}

/// At most this many diagnostics of one file are rendered as text; the rest
/// are counted. (JSON output has them all.)
pub const MAX_RENDERED: usize = 100;

/// Renders diagnostics as text: no colour, fixed width, so output is stable
/// for snapshots and logs. `color` adds ANSI styles for terminals.
pub fn render(file: &str, source: &str, diagnostics: &[Diagnostic], color: bool) -> String {
    let theme = if color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
    // One shared copy of the text, however many diagnostics point into it.
    let shared: Arc<str> = Arc::from(source);
    let mut out = String::new();
    for diagnostic in diagnostics.iter().take(MAX_RENDERED) {
        let report = Report {
            diagnostic,
            source: miette::NamedSource::new(file, Arc::clone(&shared)),
        };
        if handler.render_report(&mut out, &report).is_err() {
            out.push_str(&format!(
                "{}: {}\n",
                diagnostic.code.id(),
                diagnostic.message
            ));
        }
    }
    if diagnostics.len() > MAX_RENDERED {
        out.push_str(&format!(
            "{file}: {} more diagnostics not shown; fix these first, or use --format json for all of them\n",
            diagnostics.len() - MAX_RENDERED
        ));
    }
    out
}

/// Finds line and column (both from 1, column in characters) of byte offsets
/// without rescanning the text for each one.
pub struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(source: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { source, starts }
    }

    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|s| *s <= offset);
        let start = self.starts[line - 1];
        let column = self
            .source
            .get(start..offset)
            .map(|t| t.chars().count())
            .unwrap_or(0)
            + 1;
        (line, column)
    }
}

/// The line of `source` that `span` starts on, with the span underlined and
/// labelled, as hurl shows a failed assertion: for what went wrong while a
/// step ran, which is not a mistake in the file and so has no code. Plain
/// text; tabs become spaces so that the marks line up.
///
/// ```text
///   --> deploy.runbook:14:12
///    |
/// 14 |     expect status == 200
///    |            ^^^^^^^^^^^^^ the expectation failed
/// ```
pub fn excerpt(file: &str, source: &str, span: Span, label: &str) -> String {
    let lines = LineIndex::new(source);
    let (line, column) = lines.line_col(span.start);
    let start = lines.starts[line - 1];
    let text = source[start..]
        .split('\n')
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    let expand = |t: &str| t.replace('\t', "    ");
    let before = text.chars().take(column - 1).collect::<String>();
    // The span's part on this line; at least one mark.
    let within = source
        .get(span.start..span.end.max(span.start))
        .unwrap_or_default()
        .split('\n')
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    let marks = expand(within).chars().count().max(1);
    let number = line.to_string();
    let pad = " ".repeat(number.len());
    format!(
        "{pad}--> {file}:{line}:{column}\n{pad} |\n{number} | {}\n{pad} | {}{} {label}\n",
        expand(text),
        " ".repeat(expand(&before).chars().count()),
        "^".repeat(marks),
    )
}

/// The JSON form used by `check --format json`.
pub fn to_json(file: &str, lines: &LineIndex, diagnostic: &Diagnostic) -> serde_json::Value {
    let (line, column) = lines.line_col(diagnostic.offset());
    serde_json::json!({
        "file": file,
        "code": diagnostic.code.id(),
        "severity": "error",
        "message": diagnostic.message,
        "line": line,
        "column": column,
        "labels": diagnostic.labels.iter().map(|l| {
            let (line, column) = lines.line_col(l.span.start);
            serde_json::json!({"start": l.span.start, "end": l.span.end, "line": line, "column": column, "text": l.text})
        }).collect::<Vec<_>>(),
        "help": diagnostic.help,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_counts_characters_not_bytes() {
        let lines = LineIndex::new("ab\ncafé x\n");
        assert_eq!(lines.line_col(0), (1, 1));
        assert_eq!(lines.line_col(3), (2, 1));
        assert_eq!(lines.line_col(9), (2, 6));
        assert_eq!(lines.line_col(100), (3, 1));
    }

    #[test]
    fn an_excerpt_underlines_the_span_on_its_line() {
        let source = "runbook r {\n  verify v {\n\texpect status == 200\n  }\n}\n";
        let start = source.find("status").expect("there");
        let span = Span::new(start, start + "status == 200".len());
        assert_eq!(
            excerpt("r.runbook", source, span, "the expectation failed"),
            " --> r.runbook:3:9\n  |\n3 |     expect status == 200\n  |            ^^^^^^^^^^^^^ the expectation failed\n"
        );
    }

    #[test]
    fn an_excerpt_of_a_span_over_several_lines_marks_its_first_line() {
        let source = "a\n\"café\nb\" x\n";
        let span = Span::new(2, source.len() - 3);
        assert_eq!(
            excerpt("f", source, span, "here"),
            " --> f:2:1\n  |\n2 | \"café\n  | ^^^^^ here\n"
        );
        let empty = Span::new(source.len(), source.len());
        assert!(excerpt("f", source, empty, "end").ends_with("| ^ end\n"));
        // Windows line ends: the `\r` is neither shown nor marked.
        let crlf = "a\r\nxyz\r\nb\r\n";
        assert_eq!(
            excerpt("f", crlf, Span::new(3, 9), "here"),
            " --> f:2:1\n  |\n2 | xyz\n  | ^^^ here\n"
        );
    }
}
