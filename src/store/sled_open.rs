//! Opening a sled 0.34 database as the stores use it: made whole or not at
//! all, its own files checked before sled reads them, a damaged snapshot
//! told apart from a damaged log, and sled's errors said as one plain
//! sentence.

use super::StoreError;
use std::path::{Path, PathBuf};

/// What a new store holds besides sled's files, made before it is in place.
pub(super) type Prepare<'a> = &'a dyn Fn(&Path) -> std::io::Result<()>;

/// Opens a sled database, creating it whole if missing (with what `prepare`
/// adds to it); returns where a damaged snapshot was set aside, if one was.
pub(super) fn open_sled(
    path: &Path,
    prepare: Prepare<'_>,
) -> Result<(sled::Db, Option<PathBuf>), StoreError> {
    let shown = path.display().to_string();
    let created = !path.exists();
    if created {
        create(path, prepare).map_err(|e| classify(&shown, e))?;
    }
    check_conf(path)?;
    match open_after(path, created) {
        Err(sled::Error::Corruption { .. }) if snapshot_is_damaged(path) => {
            // sled 0.34 can leave a damaged snapshot when killed while
            // writing one. A snapshot only caches what the log holds: set
            // it aside and rebuild from the log. Whether the log is whole
            // is for the tallies to say (`tally.rs`).
            let aside = set_snapshots_aside(path).map_err(|e| classify(&shown, e.into()))?;
            let db = open_db(path).map_err(|e| classify(&shown, e))?;
            Ok((db, aside))
        }
        Err(e) => Err(classify(&shown, e)),
        Ok(db) => Ok((db, None)),
    }
}

/// sled's `conf` is its settings and their CRC-32. sled reads a damaged one
/// as sled's own debugging text or as "a version earlier than 0.29"; say
/// what it is instead.
fn check_conf(path: &Path) -> Result<(), StoreError> {
    let conf = path.join("conf");
    let bytes = match std::fs::read(&conf) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(classify(&path.display().to_string(), e.into())),
    };
    let whole = bytes.len() > 8 && {
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        crc32fast::hash(body).to_le_bytes() == crc
    };
    if whole {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            what: format!("its settings file {} is damaged", conf.display()),
        })
    }
}

/// Whether sled's newest snapshot fails its own checksum (the last 12 bytes
/// are its length and a CRC-32 of what comes before them).
fn snapshot_is_damaged(path: &Path) -> bool {
    let newest = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snap.") && !name.ends_with(".in___motion"))
        .max();
    let Some(newest) = newest else {
        return false;
    };
    let Ok(bytes) = std::fs::read(path.join(newest)) else {
        return true;
    };
    if bytes.len() <= 12 {
        return true;
    }
    let (body, tail) = bytes.split_at(bytes.len() - 12);
    let crc = u32::from_le_bytes([tail[8], tail[9], tail[10], tail[11]]);
    crc32fast::hash(body) != crc
}

/// Creates a store whole, or not at all: sled 0.34 writes its `conf` file
/// in two writes, and a kill between them leaves a store it cannot open.
/// So the store is made beside its place and renamed into it.
fn create(path: &Path, prepare: Prepare<'_>) -> sled::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journal".into());
    let making = path.with_file_name(format!(".{name}.creating.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&making);
    {
        let db = open_db(&making)?;
        db.open_tree("meta")?
            .insert("format", &super::sled_store::FORMAT.to_be_bytes())?;
        db.flush()?;
    }
    prepare(&making)?;
    forget_abandoned(path, &name);
    match std::fs::rename(&making, path) {
        Ok(()) => Ok(()),
        // Another process made it first: use theirs.
        Err(_) if path.exists() => {
            let _ = std::fs::remove_dir_all(&making);
            Ok(())
        }
        Err(e) => Err(sled::Error::Io(e)),
    }
}

/// Removes stores half made by processes that were killed while making them.
fn forget_abandoned(path: &Path, name: &str) {
    let Some(dir) = path.parent() else { return };
    let prefix = format!(".{name}.creating.");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !super::process::alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Opens the store; just after `create`, sled's background threads may
/// still hold the lock of the Db they made for a moment.
fn open_after(path: &Path, created: bool) -> sled::Result<sled::Db> {
    let start = std::time::Instant::now();
    loop {
        match open_db(path) {
            Err(e) if created && e.to_string().contains("could not acquire lock") => {
                if start.elapsed() > std::time::Duration::from_secs(2) {
                    return Err(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn open_db(path: &Path) -> sled::Result<sled::Db> {
    sled::Config::new().path(path).open()
}

/// Moves sled's snapshot files into a directory beside the store; returns
/// it, or `None` when there were none.
fn set_snapshots_aside(path: &Path) -> std::io::Result<Option<PathBuf>> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = path.with_file_name(format!("snapshots-set-aside-{stamp}"));
    let mut moved = false;
    for entry in std::fs::read_dir(path)?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("snap.") {
            std::fs::create_dir_all(&aside)?;
            std::fs::rename(entry.path(), aside.join(entry.file_name()))?;
            moved = true;
        }
    }
    Ok(moved.then_some(aside))
}

/// sled's error as one plain sentence about the store at `path`.
pub(super) fn classify(path: &str, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked {
                path: path.to_string(),
            }
        }
        sled::Error::Io(io) => StoreError::Io {
            path: path.to_string(),
            why: crate::error::io_reason(&io),
        },
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            what: format!("sled cannot read its log ({path}/db)"),
        },
        sled::Error::Unsupported(why) => StoreError::Corrupt {
            what: format!("sled cannot read its files ({path}): {why}"),
        },
        sled::Error::ReportableBug(why) => StoreError::Io {
            path: path.to_string(),
            why: format!("sled failed inside ({why})"),
        },
        sled::Error::CollectionNotFound(_) => StoreError::Corrupt {
            what: format!("a part of the store at {path} is missing"),
        },
    }
}

/// The process holding sled's lock on the store at `path` (an `flock` on
/// its `db` file), from `/proc/locks`: what names the holder when it could
/// not write its `owner.json` (a full disk, say).
pub(super) fn lock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path.join("db")).ok()?;
    let dev = meta.dev();
    let wanted = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 4242 fd:01:123456 0 EOF"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let at = fields.iter().position(|f| *f == "FLOCK")?;
        let pid = fields.get(at + 3)?.parse().ok()?;
        (fields.get(at + 4)? == &wanted).then_some(pid)
    })
}
