//! What the session has to tell the operator outside any one run's view
//! (a store repaired as it opened): handed to the sink the command installs,
//! never printed from here. Without a sink, it is dropped.

use std::sync::OnceLock;

type Sink = Box<dyn Fn(&str) + Send + Sync>;

static SINK: OnceLock<Sink> = OnceLock::new();

/// Where the session's notes go, for the life of the process; the first
/// sink installed stays.
pub fn say_notes_with(sink: impl Fn(&str) + Send + Sync + 'static) {
    let _ = SINK.set(Box::new(sink));
}

/// Tells the operator `text`, one sentence.
pub(super) fn note(text: &str) {
    if let Some(sink) = SINK.get() {
        sink(text);
    }
}
