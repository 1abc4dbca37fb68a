//! Files a step names (a certificate, a dump to restore, a backup
//! directory), opened and read without ever stalling the run: the runtime
//! has one thread, so a read that blocks (a pipe with no writer, a device,
//! a network mount that stopped answering) would stop every step, every
//! timer and every Ctrl-C with it. What must be a plain file is refused
//! without waiting when it is not; the reading is done on a thread of its
//! own, so that a step's timeout still fires while it hangs.

use std::fs::File;
use std::path::Path;

/// Opens `path` to read, refusing at once what is not a plain file.
pub fn open_plain(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a pipe with no writer returns at once.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(file);
    }
    let what = if meta.is_dir() {
        "a directory"
    } else {
        "not a plain file (a pipe, a device or a socket)"
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("it is {what}"),
    ))
}

/// Runs blocking file work on a thread of the runtime's blocking pool. If
/// the step is stopped meanwhile (timeout, cancel), the work is left to end
/// on its own; the run goes on.
pub async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(_) => Err(std::io::Error::other("its reading thread was stopped")),
    }
}

/// The first `limit` bytes (or fewer) of the plain file at `path`, read on
/// a thread of its own (`off_thread`), a pipe or a device refused at once
/// (`open_plain`).
pub async fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let owned = path.to_path_buf();
    off_thread(move || {
        use std::io::Read;
        let mut bytes = Vec::new();
        open_plain(&owned)?.take(limit).read_to_end(&mut bytes)?;
        Ok(bytes)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_a_device_and_a_directory_are_refused_without_waiting() {
        let dir = std::env::temp_dir().join(format!("runbook-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let fifo = dir.join("pipe");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("a FIFO");
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.as_path()] {
            let e = open_plain(path).expect_err("refused");
            assert!(e.to_string().starts_with("it is "), "{e}");
        }
        std::fs::write(dir.join("plain"), b"x").expect("writes");
        assert!(open_plain(&dir.join("plain")).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn work_off_the_thread_gives_its_result() {
        assert_eq!(off_thread(|| Ok(7)).await.expect("done"), 7);
    }
}
