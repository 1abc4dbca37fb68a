//! What a run shows while it goes: a live view on a terminal (a line per
//! running step with its attempt and elapsed time, finished steps printed
//! above), plain lines otherwise, or a JSON event stream with `--json`.

use crate::actions::step::StepError;
use crate::actions::steps::Line;
use crate::compile::eval::format_duration;
use crate::compile::schema::StepKind;
use crate::compile::Plan;
use crate::diagnostic::{excerpt, LineIndex};
use crate::engine::{Event, Millis, RunId, RunState, StepState};
use crate::session::{approver, clock};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Plain,
    Json,
}

impl Mode {
    pub fn pick(json: bool) -> Mode {
        use std::io::IsTerminal;
        if json {
            Mode::Json
        } else if std::io::stdout().is_terminal()
            && std::env::var_os("TERM").is_some_and(|t| t != "dumb")
        {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

pub struct View {
    mode: Mode,
    plan: Arc<Plan>,
    /// For approval prompts.
    bindings: Arc<crate::compile::eval::Bindings>,
    run: RunId,
    bars: Option<MultiProgress>,
    running: HashMap<usize, ProgressBar>,
    /// When each step's current attempt started, for elapsed times.
    started: HashMap<usize, Millis>,
    /// The run's `--until`, to say why it stops.
    pub until: Option<crate::engine::Deadline>,
    /// The runbook's file name and the source the run runs, to show a
    /// failure under the line it concerns.
    pub source: Option<(String, Arc<str>)>,
}

impl View {
    pub fn new(
        mode: Mode,
        plan: Arc<Plan>,
        run: RunId,
        bindings: Arc<crate::compile::eval::Bindings>,
    ) -> Self {
        let bars = (mode == Mode::Live)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10)));
        View {
            mode,
            plan,
            bindings,
            run,
            bars,
            running: HashMap::new(),
            started: HashMap::new(),
            until: None,
            source: None,
        }
    }

    /// A line for the person at the terminal (not in JSON mode).
    /// The view of run `meta`: its deadline, and its source for failures
    /// shown under their line (passwords in URLs hidden).
    pub fn of_run(
        mode: Mode,
        plan: Arc<Plan>,
        meta: &crate::engine::RunMeta,
        shown: Arc<crate::compile::eval::Bindings>,
    ) -> View {
        let mut view = View::new(mode, plan, meta.id, shown);
        view.until = meta.until.clone();
        view.source = Some((
            meta.file.clone(),
            Arc::from(passwords_hidden(&meta.source).as_str()),
        ));
        view
    }

    pub fn say(&self, text: &str) {
        match (&self.bars, self.mode) {
            (_, Mode::Json) => {}
            (Some(bars), _) => {
                let _ = bars.println(printable(text));
            }
            (None, _) => out(text),
        }
    }

    pub fn line(&self, line: Line) {
        match self.mode {
            Mode::Json => out(&serde_json::json!({
                "run": self.run.0,
                "step": line.step,
                "stream": if line.err { "stderr" } else { "stdout" },
                "line": line.text,
            })
            .to_string()),
            _ => self.say(&format!("  {} | {}", line.step, line.text)),
        }
    }

    pub fn event(&mut self, event: &Event, state: &RunState) {
        if self.mode == Mode::Json {
            let step = step_of(event)
                .and_then(|s| self.plan.steps.get(s))
                .map(|s| s.name.as_str());
            out(&serde_json::json!({"run": self.run.0, "step": step, "event": event}).to_string());
            return;
        }
        let plan = Arc::clone(&self.plan);
        let name = |i: &usize| {
            plan.steps
                .get(*i)
                .map(|s| s.name.clone())
                .unwrap_or_default()
        };
        let text = match event {
            Event::StepStarted { step, attempt, at } => {
                self.started.insert(*step, *at);
                let waiting = self.plan.steps[*step].kind.id == StepKind::Approve;
                let what = if waiting {
                    format!(
                        "waiting for approval: {} (approve with: runbook approve {} {})",
                        crate::session::prompt(&plan.steps[*step], &self.bindings, &plan, state),
                        self.run,
                        name(step)
                    )
                } else if *attempt > 1 {
                    format!("started (attempt {attempt})")
                } else {
                    "started".to_string()
                };
                self.show_running(*step, *attempt, waiting);
                Some(format!("{} {what}", name(step)))
            }
            Event::StepSucceeded { step, at, outputs } => {
                self.hide_running(*step);
                let took = self.took(*step, *at);
                let by = approver(outputs)
                    .map(|b| format!(", approved by {b}"))
                    .unwrap_or_default();
                Some(format!("{} succeeded{took}{by}", name(step)))
            }
            Event::StepFailed { step, at, error } => {
                self.hide_running(*step);
                let took = self.took(*step, *at);
                let next = match &state.steps[*step] {
                    StepState::Retrying { attempt, at: when } => format!(
                        "; attempt {attempt} in {}",
                        format_duration(when.saturating_sub(*at))
                    ),
                    _ => String::new(),
                };
                Some(format!("{} failed{took}: {error}{next}", name(step)))
            }
            Event::StepSkipped { step, reason } => {
                Some(format!("{} skipped: {reason}", name(step)))
            }
            Event::CancelRequested { .. } => {
                Some("cancel requested: stopping running steps".into())
            }
            Event::RunTimedOut { at } => Some(match &self.until {
                Some(until) if until.at <= *at => format!("{}: stopping", until.why),
                _ => "the runbook's timeout passed: stopping".into(),
            }),
            Event::Reset { steps, .. } => Some(format!(
                "running again: {}",
                steps.iter().map(name).collect::<Vec<_>>().join(", ")
            )),
            // An approval that leaves the step waiting: who, and how many
            // more. The one that completes it, or a rejection, is said by
            // the step's end.
            Event::Approval {
                step,
                by,
                account,
                verdict: crate::engine::Verdict::Approved,
                ..
            } => {
                let who = if by == account {
                    by.clone()
                } else {
                    format!("{by} (Unix user {account})")
                };
                crate::engine::approval::awaited(
                    &plan,
                    state,
                    &self.bindings,
                    crate::compile::StepId(*step),
                )
                .filter(|a| a.more > 0)
                .map(|a| {
                    let more = match a.more {
                        1 => "1 more approval".to_string(),
                        n => format!("{n} more approvals"),
                    };
                    format!(
                        "{} approved by {who}; {more} needed, from {}",
                        name(step),
                        a.from
                    )
                })
            }
            Event::Approval { .. } => None,
            // Notes are for the engine (a pod template, a timestamp), not the screen.
            // Who steered the run is for `history`; what it asked for is
            // shown by the events that follow.
            Event::RunStarted { .. }
            | Event::RunFinished { .. }
            | Event::StepNoted { .. }
            | Event::Imported { .. }
            | Event::Steered { .. } => None,
        };
        if let Some(text) = text {
            self.say(&format!("{} {text}", clock(event.at())));
        }
    }

    /// Why an attempt failed, after its line: under the line of the
    /// runbook it concerns, as hurl shows a failed assertion; in JSON, its
    /// kind and place.
    pub fn failure(&self, step: usize, failure: &StepError) {
        let at = failure.at.zip(self.source.as_ref());
        if self.mode == Mode::Json {
            let place = at.map(|(span, (_, source))| {
                let (line, column) = LineIndex::new(source).line_col(span.start);
                serde_json::json!({"line": line, "column": column})
            });
            let name = self.plan.steps.get(step).map(|s| s.name.as_str());
            out(&serde_json::json!({
                "run": self.run.0,
                "step": name,
                "failure": {"kind": failure.kind, "at": place},
            })
            .to_string());
            return;
        }
        if let Some((span, (file, source))) = at {
            let shown = excerpt(file, source, span, failure.kind.describe());
            self.say(shown.trim_end());
        }
    }

    fn took(&self, step: usize, at: Millis) -> String {
        self.started
            .get(&step)
            .map(|s| format!(" in {}", format_duration(at.saturating_sub(*s))))
            .unwrap_or_default()
    }

    fn show_running(&mut self, step: usize, attempt: u32, waiting: bool) {
        let Some(bars) = &self.bars else { return };
        let name = &self.plan.steps[step].name;
        let what = if waiting {
            "waiting for approval".to_string()
        } else {
            format!("attempt {attempt}")
        };
        let bar = ProgressBar::hidden();
        let style = ProgressStyle::with_template("  {spinner} {prefix} ({msg}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(name.clone());
        bar.set_message(what);
        let bar = bars.add(bar);
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Some(old) = self.running.insert(step, bar) {
            old.finish_and_clear();
        }
    }

    fn hide_running(&mut self, step: usize) {
        if let Some(bar) = self.running.remove(&step) {
            bar.finish_and_clear();
            if let Some(bars) = &self.bars {
                bars.remove(&bar);
            }
        }
    }

    /// Clears the live lines before the final words.
    pub fn close(&mut self) {
        for (_, bar) in self.running.drain() {
            bar.finish_and_clear();
        }
        if let Some(bars) = &self.bars {
            let _ = bars.clear();
        }
    }
}

/// A line on standard output. A closed pipe (`runbook run x | head`) must
/// not stop the run: what cannot be shown is still recorded.
pub fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", printable(text));
}

/// Text for a terminal, with every control character a step's program or
/// a server could send shown as an escape instead of obeyed: no colour, no
/// title or clipboard write (OSC 52), no cleared screen, no line rewritten
/// by a carriage return to look like runbook's own. Tabs and line breaks
/// stay; a carriage return ending a line (CRLF) is dropped. Characters
/// that reorder text (bidirectional overrides) are escaped too.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write;
    if !text.chars().any(escaped) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' && matches!(chars.peek(), None | Some('\n')) {
            continue;
        }
        if !escaped(c) {
            shown.push(c);
        } else if (c as u32) < 0x20 {
            let _ = write!(shown, "\\x{:02x}", c as u32);
        } else {
            // `\u007f`: also a valid escape inside a JSON string, where
            // serde_json leaves these characters as they are; `--json`
            // output stays JSON that decodes to the same text.
            let _ = write!(shown, "\\u{:04x}", c as u32);
        }
    }
    std::borrow::Cow::Owned(shown)
}

/// The runbook's text as a failure shows its lines: the password of any
/// URL written in it (`postgres://app:pw@db/app`) replaced by as many `*`
/// as it has bytes, so that every position in the text stays where it was.
/// (Secret parameters never have a value in the text; a literal URL can.)
pub fn passwords_hidden(source: &str) -> String {
    let mut bytes = source.as_bytes().to_vec();
    let mut from = 0;
    while let Some(found) = source[from..].find("://") {
        let start = from + found + 3;
        let end = source[start..]
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
            .map_or(source.len(), |n| start + n);
        if let Some(at) = source[start..end].rfind('@') {
            let userinfo = &source[start..start + at];
            if let Some(colon) = userinfo.find(':') {
                for b in &mut bytes[start + colon + 1..start + at] {
                    *b = b'*';
                }
            }
        }
        from = end.max(start);
    }
    // Whole characters were replaced (the range lies between `:` and `@`):
    // still UTF-8, and never the text unmasked.
    String::from_utf8_lossy(&bytes).into_owned()
}

fn escaped(c: char) -> bool {
    match c {
        '\n' | '\t' => false,
        '\0'..='\x1f' | '\x7f'..='\u{9f}' => true,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

fn step_of(event: &Event) -> Option<usize> {
    match event {
        Event::StepStarted { step, .. }
        | Event::StepSucceeded { step, .. }
        | Event::StepFailed { step, .. }
        | Event::StepSkipped { step, .. } => Some(*step),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_s_password_in_the_runbook_is_hidden_where_a_failure_shows_it() {
        use super::passwords_hidden;
        let source = "  sql \"postgres://app:Hunter2pw@db:5432/app\" \"SELECT 1\"\n  http get \"https://u:pässwörd@h/x?y=z\"\n  http get \"https://h/a:b@c\"\n";
        let hidden = passwords_hidden(source);
        assert_eq!(hidden.len(), source.len(), "positions keep their place");
        assert!(
            !hidden.contains("Hunter2pw") && !hidden.contains("pässwörd"),
            "{hidden}"
        );
        assert!(
            hidden.contains("postgres://app:*********@db:5432/app"),
            "{hidden}"
        );
        assert!(
            hidden.contains("https://h/a:b@c"),
            "a path is not a password: {hidden}"
        );
        assert_eq!(passwords_hidden("no url here"), "no url here");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        use super::printable;
        assert_eq!(printable("plain\ttext"), "plain\ttext");
        assert_eq!(
            printable("\x1b[2J\x1b]52;c;cHduZWQ=\x07"),
            "\\x1b[2J\\x1b]52;c;cHduZWQ=\\x07"
        );
        assert_eq!(
            printable("evil\r✓ deploy succeeded"),
            "evil\\x0d✓ deploy succeeded"
        );
        assert_eq!(printable("windows line\r"), "windows line");
        assert_eq!(printable("two\nlines"), "two\nlines");
        assert_eq!(printable("c1 \u{9b}31m"), "c1 \\u009b31m");
        assert_eq!(printable("abc\u{202e}fed\x7f"), "abc\\u202efed\\u007f");
        // JSON stays JSON, decoding to the same text.
        let json = serde_json::json!({ "line": "a\u{9b}b\u{202e}\x7f\x1b" }).to_string();
        let back: serde_json::Value = serde_json::from_str(&printable(&json)).expect("JSON");
        assert_eq!(back["line"], "a\u{9b}b\u{202e}\x7f\x1b");
        assert_eq!(printable("ünïcödé"), "ünïcödé");
    }
}
