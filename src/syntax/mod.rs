//! The syntax layer: the pest grammar, the syntax tree with spans, and the
//! formatter. It knows nothing of what a step means.

pub mod ast;
mod errors;
pub mod format;
mod parser;
mod scan;

pub use parser::{parse, parse_duration, Comment, Parsed};
pub use scan::{MAX_NESTING, MAX_OPERATORS, MAX_SOURCE_BYTES};
