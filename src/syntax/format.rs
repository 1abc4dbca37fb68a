//! The canonical layout: one item or property per line, two-space indent,
//! canonical spacing in expressions, literals exactly as written, every comment
//! kept, and at most one blank line where the source had one or more.

use super::ast::*;
use super::parser::{Comment, Parsed};

const INDENT: &str = "  ";

/// Formats a parsed file. `source` is the text it was parsed from.
pub fn format(parsed: &Parsed, source: &str) -> String {
    let mut f = Formatter {
        source,
        comments: &parsed.comments,
        next: 0,
        out: String::new(),
        block_start: true,
    };
    let rb = &parsed.runbook;
    f.leading(rb.span.start, 0);
    f.line(0, &format!("runbook {} {{", rb.name.name));
    f.trailing(after_brace(source, rb.name.span.end));
    f.block_start = true;
    for item in &rb.items {
        f.item(item, 1);
    }
    f.leading(rb.span.end, 1);
    f.line(0, "}");
    f.trailing(rb.span.end);
    f.leading(source.len(), 0);
    f.out
}

/// The position just after the first `{` at or after `pos`.
fn after_brace(source: &str, pos: usize) -> usize {
    source
        .get(pos..)
        .and_then(|rest| rest.find('{'))
        .map(|i| pos + i + 1)
        .unwrap_or(pos)
}

struct Formatter<'a> {
    source: &'a str,
    comments: &'a [Comment],
    next: usize,
    out: String,
    block_start: bool,
}

impl Formatter<'_> {
    fn line(&mut self, depth: usize, text: &str) {
        for _ in 0..depth {
            self.out.push_str(INDENT);
        }
        self.out.push_str(text);
        self.out.push('\n');
        self.block_start = false;
    }

    /// Keeps one blank line where the source had at least one before `pos`.
    fn blank_line_before(&mut self, pos: usize) {
        if self.block_start {
            return;
        }
        let before = self
            .source
            .get(..pos)
            .unwrap_or("")
            .trim_end_matches([' ', '\t']);
        let Some(rest) = before.strip_suffix('\n') else {
            return;
        };
        let rest = rest.trim_end_matches(['\r', ' ', '\t']);
        if rest.ends_with('\n') && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }

    /// Emits, each on its own line, the comments that start before `pos`.
    fn leading(&mut self, pos: usize, depth: usize) {
        while let Some(c) = self.comments.get(self.next) {
            if c.span.start >= pos {
                break;
            }
            self.blank_line_before(c.span.start);
            self.line(depth, &c.text);
            self.next += 1;
        }
    }

    /// Appends the next comment to the line just written when, in the source,
    /// it stood on the same line as `pos`.
    fn trailing(&mut self, pos: usize) {
        let Some(c) = self.comments.get(self.next) else {
            return;
        };
        let between = self.source.get(pos..c.span.start).unwrap_or("\n");
        // Only closing brackets (outside an expression's span) and separators may stand between.
        let same_line = between
            .chars()
            .all(|ch| matches!(ch, ' ' | '\t' | ';' | ')' | ']'));
        if c.span.start >= pos && same_line {
            if self.out.ends_with('\n') {
                self.out.pop();
            }
            self.out.push_str("  ");
            self.out.push_str(&c.text);
            self.out.push('\n');
            self.next += 1;
        }
    }

    fn item(&mut self, item: &Item, depth: usize) {
        match item {
            Item::Step(step) => self.step(step, depth),
            Item::OnFailure(on) => {
                self.leading(on.span.start, depth);
                self.blank_line_before(on.span.start);
                self.line(depth, "on failure {");
                self.trailing(after_brace(self.source, on.span.start));
                self.block_start = true;
                for step in &on.steps {
                    self.step(step, depth + 1);
                }
                self.leading(on.span.end, depth + 1);
                self.line(depth, "}");
                self.trailing(on.span.end);
            }
            other => {
                let span = other.span();
                self.leading(span.end, depth);
                self.blank_line_before(span.start);
                let text = match other {
                    Item::Param(p) => param(p),
                    Item::Let(l) => format!("let {} = {}", l.name.name, expr(&l.value)),
                    Item::Setting(s) => property(s),
                    Item::Step(_) | Item::OnFailure(_) => String::new(),
                };
                self.line(depth, &text);
                self.trailing(span.end);
            }
        }
    }

    fn step(&mut self, step: &Step, depth: usize) {
        self.leading(step.span.start, depth);
        self.blank_line_before(step.span.start);
        let mut header = format!("{} {}", step.kind.name, step.name.name);
        if !step.after.is_empty() {
            let deps: Vec<&str> = step.after.iter().map(|d| d.name.as_str()).collect();
            header.push_str(" after ");
            header.push_str(&deps.join(", "));
        }
        if let Some(when) = &step.when {
            header.push_str(" when ");
            header.push_str(&expr(when));
        }
        if step.body.is_empty() && !self.has_comment_before(step.span.end) {
            self.line(depth, &format!("{header} {{}}"));
            self.trailing(step.span.end);
            return;
        }
        self.line(depth, &format!("{header} {{"));
        let header_end = step
            .when
            .as_ref()
            .map(|w| w.span.end)
            .or(step.after.last().map(|a| a.span.end));
        self.trailing(after_brace(
            self.source,
            header_end.unwrap_or(step.name.span.end),
        ));
        self.block_start = true;
        for prop in &step.body {
            self.leading(prop.span.end, depth + 1);
            self.blank_line_before(prop.span.start);
            self.line(depth + 1, &property(prop));
            self.trailing(prop.span.end);
        }
        self.leading(step.span.end, depth + 1);
        self.line(depth, "}");
        self.trailing(step.span.end);
    }

    fn has_comment_before(&self, pos: usize) -> bool {
        self.comments
            .get(self.next)
            .is_some_and(|c| c.span.start < pos)
    }
}

fn param(p: &Param) -> String {
    match &p.default {
        Some(d) => format!("param {}: {} = {}", p.name.name, p.ty.name, expr(d)),
        None => format!("param {}: {}", p.name.name, p.ty.name),
    }
}

fn property(p: &Property) -> String {
    let mut text = p.name.name.clone();
    for arg in &p.args {
        text.push(' ');
        text.push_str(&expr(arg));
    }
    text
}

/// Binding strength, loosest first; used to decide where parentheses are needed.
fn precedence(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary {
            op: BinaryOp::Or, ..
        } => 1,
        ExprKind::Binary {
            op: BinaryOp::And, ..
        } => 2,
        ExprKind::Not(_) => 3,
        ExprKind::Binary { .. } => 4,
        _ => 5,
    }
}

fn wrapped(e: &Expr, at_least: u8) -> String {
    if precedence(e) < at_least {
        format!("({})", expr(e))
    } else {
        expr(e)
    }
}

/// An expression in canonical form.
pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Str(s) => s.raw.clone(),
        ExprKind::Int { raw, .. }
        | ExprKind::Float { raw, .. }
        | ExprKind::Duration { raw, .. }
        | ExprKind::Percent { raw, .. } => raw.clone(),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::List(items) => {
            let items: Vec<String> = items.iter().map(expr).collect();
            format!("[{}]", items.join(", "))
        }
        ExprKind::Call { name, args } => {
            let args: Vec<String> = args.iter().map(expr).collect();
            format!("{}({})", name.name, args.join(", "))
        }
        ExprKind::Path(parts) => {
            let parts: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
            parts.join(".")
        }
        // `not a == b` means `not (a == b)`; the parentheses say so to the reader.
        ExprKind::Not(inner) => format!("not {}", wrapped(inner, 5)),
        ExprKind::Binary { op, lhs, rhs } => {
            let own = precedence(e);
            let (left, right) = if op.is_comparison() {
                (wrapped(lhs, 5), wrapped(rhs, 5))
            } else {
                (wrapped(lhs, own), wrapped(rhs, own + 1))
            };
            format!("{left} {} {right}", op.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::parse;

    fn fmt(src: &str) -> String {
        let parsed = parse(src).expect("parses");
        format(&parsed, src)
    }

    #[test]
    fn lays_out_one_property_per_line_and_keeps_comments() {
        let src = "# head\nrunbook r {   about \"x\" # why\n\n\n  sql s { database db; query \"SELECT 1\" }\n}";
        assert_eq!(
            fmt(src),
            "# head\nrunbook r {\n  about \"x\"  # why\n\n  sql s {\n    database db\n    query \"SELECT 1\"\n  }\n}\n"
        );
    }

    #[test]
    fn a_comment_after_closing_parentheses_stays_on_its_line() {
        let src = "runbook r {\n  let y = not (a == true)  # why\n  let z = [1, 2]  # list\n}\n";
        assert_eq!(fmt(src), src);
    }

    #[test]
    fn a_comment_inside_an_interpolation_stays_in_its_string() {
        let src = "runbook r {\n  let s = \"${a or # why\n    b}\"\n}\n";
        assert_eq!(fmt(src), src);
    }

    #[test]
    fn three_quotes_without_a_closing_three_are_two_strings() {
        let src = "runbook r {\n  run job {\n    env \"\"\"1\"  # kept\n  }\n  # kept too\n}\n";
        let once = fmt(src);
        assert_eq!(once.matches("# kept").count(), 2, "{once}");
    }

    #[test]
    fn a_comment_on_the_on_failure_line_stays_there() {
        let src = "runbook r {\n  on failure {  # page someone\n    wait w {}\n  }\n}\n";
        assert_eq!(fmt(src), src);
    }

    #[test]
    fn lays_out_the_scheduler_settings_like_any_other() {
        let src = "runbook r {\n  schedule   \"0 2 * * *\"  window 2h   catch-up 6h # why\n  blackout \"2026-12-24\"    until \"2027-01-02\" ; blackout \"0 17 * * FRI\" for 63h timezone \"Europe/Amsterdam\"\n  lock \"neo-db\"; lock \"neo-redis\"\n}\n";
        let once = fmt(src);
        assert_eq!(
            once,
            "runbook r {\n  schedule \"0 2 * * *\" window 2h catch-up 6h  # why\n  blackout \"2026-12-24\" until \"2027-01-02\"\n  blackout \"0 17 * * FRI\" for 63h timezone \"Europe/Amsterdam\"\n  lock \"neo-db\"\n  lock \"neo-redis\"\n}\n"
        );
        assert_eq!(fmt(&once), once);
        let meaning = |text: &str| parse(text).expect("parses").runbook.meaning();
        assert_eq!(meaning(&once), meaning(src));
    }

    #[test]
    fn keeps_needed_parentheses_only() {
        let src = "runbook r {\n  let x = (a or b) and not (c == 1)\n  let y = ((a))\n}\n";
        assert_eq!(
            fmt(src),
            "runbook r {\n  let x = (a or b) and not (c == 1)\n  let y = a\n}\n"
        );
    }

    #[test]
    fn is_idempotent_on_comments_in_odd_places() {
        let src = "runbook r {\n  deploy d { # on the brace\n    image \"i\"\n    # before the close\n  } # after\n  let l = [1, # inside\n    2]\n}\n# end\n";
        let once = fmt(src);
        assert_eq!(fmt(&once), once);
        for c in [
            "# on the brace",
            "# before the close",
            "# after",
            "# inside",
            "# end",
        ] {
            assert!(once.contains(c), "{c} kept in {once}");
        }
    }
}
