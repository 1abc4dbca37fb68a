//! What one attempt of a step printed, on its way to the person watching
//! (the sink), the attempt's file on disk and the journal's log, with every
//! form of every secret hidden on the way (`mask.rs`).

use super::scope::{Line, Scope, Sink, LOG_CAP};
use crate::actions::groups::{GroupNotes, StepNotes};
use crate::actions::mask::Masks;
use crate::actions::output_file::OutputFile;
use crate::compile::Step;
use crate::engine::LogBuffer;
use std::sync::Arc;

/// What one attempt printed: streamed to the sink and kept (by the
/// driver's buffer, up to `LOG_CAP`), secret values replaced by `***` in both.
pub(super) struct Log {
    step: String,
    sink: Sink,
    masks: Masks,
    /// The end of a cut line (standard output, standard error) that may be
    /// the beginning of a secret, held until the rest of it comes.
    held: std::sync::Mutex<[String; 2]>,
    kept: LogBuffer,
    pub(super) groups: Option<(Arc<GroupNotes>, crate::engine::RunId)>,
    /// The attempt's output as it comes, on disk (`output_file.rs`).
    pub(super) output: Option<OutputFile>,
}

impl Log {
    pub(super) fn new(scope: &Scope, step: &Step, kept: LogBuffer, sink: Sink) -> Self {
        Log {
            step: step.name.clone(),
            sink,
            masks: Masks::new(scope.secrets(step)),
            held: std::sync::Mutex::default(),
            kept,
            groups: None,
            output: None,
        }
    }

    /// Where the step's programs note themselves, when the run keeps notes.
    pub(super) fn step_notes(&self) -> Option<StepNotes> {
        self.groups
            .as_ref()
            .map(|(notes, run)| StepNotes::new(Arc::clone(notes), *run, &self.step))
    }

    pub(super) fn scrub(&self, text: &str) -> String {
        self.masks.scrub(text)
    }

    /// `scrub` for text that was cut short: a secret's beginning left at
    /// the end is hidden too.
    pub(super) fn scrub_cut(&self, text: &str) -> String {
        self.masks.scrub_cut(text)
    }

    /// A line (or a piece of one longer than the reader's 64 KiB) of a
    /// program's output. The end of a piece that may begin a secret is held
    /// back and put before the next piece, so a secret cut between two
    /// pieces is hidden whole.
    pub(super) fn line(&self, err: bool, text: &str) {
        // The reader cuts a line at 64 KiB, a few bytes earlier to end at a
        // character (`command::Lines`).
        let cut = text.len() >= 64 * 1024 - 4 && !text.ends_with('\n');
        let text = text.strip_suffix('\n').unwrap_or(text);
        let (shown, rest) = match self.held.lock() {
            Ok(mut held) => {
                let slot = &mut held[usize::from(err)];
                let whole = std::mem::take(slot) + text;
                let (shown, rest) = self.masks.split(&whole, cut);
                *slot = rest;
                (shown, cut)
            }
            Err(_) => (self.scrub_cut(text), false),
        };
        if shown.is_empty() && rest {
            return;
        }
        self.emit(err, &shown);
    }

    /// The program's output has ended: what was held back, which began a
    /// secret and never went on, is shown hidden.
    pub(super) fn end_of_output(&self) {
        let held = match self.held.lock() {
            Ok(mut held) => std::mem::take(&mut *held),
            Err(_) => return,
        };
        for (err, text) in [false, true].into_iter().zip(held) {
            if !text.is_empty() {
                self.emit(err, &self.scrub_cut(&text));
            }
        }
    }

    fn emit(&self, err: bool, text: &str) {
        (self.sink)(Line {
            step: &self.step,
            err,
            text,
        });
        if let Some(output) = &self.output {
            output.line(err, text);
        }
        self.kept.push(err, text.to_string(), LOG_CAP);
    }
}
