use super::{color_stderr, EXIT_DIAGNOSTICS, EXIT_ERROR, EXIT_OK};
use crate::error::{io_reason, read_source, Error};
use std::path::PathBuf;

/// `runbook fmt`: rewrite in place, or with `--check` list what would change.
/// Exit status, whatever the order of the files: 1 if a file cannot be read (or written),
/// else 2 if one has syntax errors, else 1 if `--check` found one unformatted.
pub fn run(files: &[PathBuf], check: bool) -> Result<u8, Error> {
    let (mut failed, mut broken, mut unformatted) = (false, false, false);
    for path in files {
        let name = path.display().to_string();
        let source = match read_source(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        let parsed = match crate::syntax::parse(&source) {
            Ok(p) => p,
            Err(diagnostics) => {
                eprint!(
                    "{}",
                    crate::diagnostic::render(&name, &source, &diagnostics, color_stderr())
                );
                broken = true;
                continue;
            }
        };
        let formatted = crate::syntax::format::format(&parsed, &source);
        if formatted == source {
            continue;
        }
        // A formatter bug must never cost anyone their runbook.
        let unchanged = crate::syntax::parse(&formatted)
            .is_ok_and(|again| again.runbook.meaning() == parsed.runbook.meaning());
        if !unchanged {
            eprintln!("error: formatting {name} would change what it means; the file was left as it was (this is a bug in runbook fmt: please report it with the file)");
            failed = true;
            continue;
        }
        if check {
            println!("{name} is not formatted");
            unformatted = true;
        } else {
            write_atomically(path, &formatted)?;
            println!("formatted {name}");
        }
    }
    Ok(if failed {
        EXIT_ERROR
    } else if broken {
        EXIT_DIAGNOSTICS
    } else if unformatted {
        EXIT_ERROR
    } else {
        EXIT_OK
    })
}

/// Writes through a temporary file and a rename, so a crash never leaves half a runbook.
fn write_atomically(path: &std::path::Path, text: &str) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::Write {
        path: path.to_path_buf(),
        why: io_reason(&e),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".fmt-tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(fail)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).map_err(fail)
}
