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
                eprintln!("error: {}", super::view::printable(&e.to_string()));
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
        let texts =
            |c: &[crate::syntax::Comment]| c.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
        let unchanged = crate::syntax::parse(&formatted).is_ok_and(|again| {
            again.runbook.meaning() == parsed.runbook.meaning()
                && texts(&again.comments) == texts(&parsed.comments)
        });
        if !unchanged {
            eprintln!("error: formatting {name} would change what it means or lose a comment; the file was left as it was (this is a bug in runbook fmt: please report it with the file)");
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

/// Writes through a temporary file and a rename, so a crash never leaves half
/// a runbook. A symbolic link is followed, so the link stays a link.
fn write_atomically(path: &std::path::Path, text: &str) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::Write {
        path: path.to_path_buf(),
        why: io_reason(&e),
    };
    let target = std::fs::canonicalize(path).map_err(fail)?;
    let mut tmp = target.as_os_str().to_owned();
    // A new file under a name no one can guess, never one already there nor
    // what a link there points at (the directory may be shared).
    tmp.push(format!(".fmt-{:016x}.tmp", crate::store::private::random()));
    let tmp = PathBuf::from(tmp);
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(fail)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| match std::fs::metadata(&target) {
            Ok(meta) => file.set_permissions(meta.permissions()),
            Err(_) => Ok(()),
        });
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    std::fs::rename(&tmp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}
