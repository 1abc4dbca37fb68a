//! The one error type for what is not a diagnostic in a runbook: files that
//! cannot be read, bad command-line values. Each is one plain sentence.

use std::path::{Path, PathBuf};

/// Any error but the ones below.
pub const EXIT_ERROR: u8 = 1;
/// How a process of runbook's ends, besides 0 (done), 1 (an error) and 2
/// (the runbook has diagnostics). `cli` maps errors to these; `serve` reads
/// them from the run processes it starts.
pub const EXIT_ROLLED_BACK: u8 = 3;
pub const EXIT_CANCELLED: u8 = 4;
/// A named lock the runbook needs is held by another run.
pub const EXIT_BUSY: u8 = 5;
/// Stopped by Ctrl-C or SIGTERM before the run finished.
pub const EXIT_STOPPED: u8 = 130;

/// Every variant is one sentence, said where the facts are; the variant
/// says what kind of trouble it is, and with it the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {why}", path.display())]
    Read { path: PathBuf, why: String },
    #[error("cannot write {}: {why}", path.display())]
    Write { path: PathBuf, why: String },
    /// A bad argument or value on the command line.
    #[error("{0}")]
    Usage(String),
    /// Another process holds the store (a run, the scheduler), or the
    /// programs a run left are still running.
    #[error("{0}")]
    InUse(String),
    /// The store cannot be opened, read or written, or it is damaged.
    #[error("{0}")]
    Store(String),
    /// There is no such run, or no store to hold it.
    #[error("{0}")]
    NoRun(String),
    /// The run is not as the command needs it: finished, not finished,
    /// steps interrupted that need a choice, steps this version cannot run.
    #[error("{0}")]
    Refused(String),
    /// The process driving a run did not answer a request in time.
    #[error("{0}")]
    Unanswered(String),
    /// This process could not set up what it needs (its runtime, its signals,
    /// its own binary).
    #[error("{0}")]
    Start(String),
    /// A named lock the runbook needs is held by another run.
    #[error("{0}")]
    LockHeld(String),
    /// runbook itself went wrong (a bug): the sentence asks for a report.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The status a process that stops with this error exits with: every
    /// error is 1, except a named lock held by another run (`EXIT_BUSY`),
    /// which `runbook serve` reads to wait for the lock instead of failing.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::LockHeld(_) => EXIT_BUSY,
            Error::Read { .. }
            | Error::Write { .. }
            | Error::Usage(_)
            | Error::InUse(_)
            | Error::Store(_)
            | Error::NoRun(_)
            | Error::Refused(_)
            | Error::Unanswered(_)
            | Error::Start(_)
            | Error::Internal(_) => EXIT_ERROR,
        }
    }
}

/// Reads a runbook file, refusing what cannot be one with a plain sentence.
pub fn read_source(path: &Path) -> Result<String, Error> {
    let fail = |why: String| Error::Read {
        path: path.to_path_buf(),
        why,
    };
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Opened without waiting (a pipe with no writer would block here), then
    // refused unless it is a plain file: a device or a pipe has no size to
    // check, and /dev/zero never ends.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| fail(io_reason(&e)))?;
    let meta = file.metadata().map_err(|e| fail(io_reason(&e)))?;
    if meta.is_dir() {
        return Err(fail(
            "it is a directory; pass the .runbook files in it".into(),
        ));
    }
    if !meta.is_file() {
        return Err(fail(
            "it is not a plain file (a pipe, a device or a socket); save the runbook to a file first".into(),
        ));
    }
    let limit = crate::syntax::MAX_SOURCE_BYTES as u64;
    let too_big = |len: u64| {
        fail(format!(
            "it is {:.1} MB; a runbook is limited to {} MB",
            len as f64 / (1024.0 * 1024.0),
            limit / (1024 * 1024)
        ))
    };
    if meta.len() > limit {
        return Err(too_big(meta.len()));
    }
    let too_big = |_| {
        fail(format!(
            "it is larger than the {} MB a runbook is limited to",
            limit / (1024 * 1024)
        ))
    };
    // Read through a bound as well: a file that grows (or a /proc file,
    // whose size says 0) cannot make this read more than the limit.
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(io_reason(&e)))?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
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

/// How a missing file is said, wherever one is found missing.
pub const NO_SUCH_FILE: &str = "no such file";

pub fn io_reason(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return "it is a link, and runbook opens nothing of its own through a link".into();
    }
    match e.kind() {
        std::io::ErrorKind::NotFound => NO_SUCH_FILE.into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::StorageFull => "no space is left on its disk".into(),
        std::io::ErrorKind::FileTooLarge => {
            "a file grew past the size this process may write (ulimit -f)".into()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_error_carries_its_exit_code() {
        let said = || "x".to_string();
        assert_eq!(Error::LockHeld(said()).exit_code(), EXIT_BUSY);
        for e in [
            Error::Usage(said()),
            Error::InUse(said()),
            Error::Store(said()),
            Error::NoRun(said()),
            Error::Refused(said()),
            Error::Unanswered(said()),
            Error::Start(said()),
            Error::Internal(said()),
            Error::Read {
                path: "f".into(),
                why: said(),
            },
        ] {
            assert_eq!(e.exit_code(), EXIT_ERROR, "{e:?}");
            assert_eq!(
                e.to_string(),
                if matches!(e, Error::Read { .. }) {
                    "cannot read f: x"
                } else {
                    "x"
                }
            );
        }
    }
}
