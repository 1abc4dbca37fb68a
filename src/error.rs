//! The one error type for what is not a diagnostic in a runbook: files that
//! cannot be read, bad command-line values. Each is one plain sentence.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {why}", path.display())]
    Read { path: PathBuf, why: String },
    #[error("cannot write {}: {why}", path.display())]
    Write { path: PathBuf, why: String },
    #[error("{0}")]
    Usage(String),
    /// The store, a run or a step is not as the command needs it.
    #[error("{0}")]
    Run(String),
    /// A named lock the runbook needs is held by another run.
    #[error("{0}")]
    Busy(String),
}

/// Reads a runbook file, refusing what cannot be one with a plain sentence.
pub fn read_source(path: &Path) -> Result<String, Error> {
    let fail = |why: String| Error::Read {
        path: path.to_path_buf(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(io_reason(&e)))?;
    if meta.is_dir() {
        return Err(fail(
            "it is a directory; pass the .runbook files in it".into(),
        ));
    }
    let limit = crate::syntax::MAX_SOURCE_BYTES as u64;
    if meta.len() > limit {
        return Err(fail(format!(
            "it is {:.1} MB; a runbook is limited to {} MB",
            meta.len() as f64 / (1024.0 * 1024.0),
            limit / (1024 * 1024)
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(io_reason(&e)))?;
    // A byte-order mark is not part of the runbook; editors on Windows add one.
    let bytes = match bytes.strip_prefix("\u{feff}".as_bytes()) {
        Some(rest) => rest.to_vec(),
        None => bytes,
    };
    String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "it is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::StorageFull => "no space is left on its disk".into(),
        std::io::ErrorKind::FileTooLarge => {
            "a file grew past the size this process may write (ulimit -f)".into()
        }
        _ => e.to_string(),
    }
}
