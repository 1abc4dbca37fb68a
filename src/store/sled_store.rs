//! The embedded store: sled 0.34. Keys are big-endian so that sled's order
//! is the order of runs and of events; every write is flushed before it
//! returns.

use super::envelope;
use super::{Deadline, Journal, RecordedParam, RunId, RunMeta, StepLog, StoreError};
use crate::engine::Event;
use std::path::Path;

/// The layout this code writes. A store written in a newer layout is refused.
/// 2: the journal may hold `StepNoted` events, which a binary that knows
/// format 1 cannot read.
pub const FORMAT: u32 = 2;

pub struct SledStore {
    db: sled::Db,
    runs: sled::Tree,
    events: sled::Tree,
    logs: sled::Tree,
    /// The next event number per run, so that an append is one write.
    next: std::sync::Mutex<std::collections::HashMap<RunId, u64>>,
    path: String,
    /// Where damaged sled snapshots were set aside when opening, if any.
    pub set_aside: Option<std::path::PathBuf>,
}

impl SledStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let (db, set_aside) = open_sled(path).map_err(|e| classify(&shown, e))?;
        let io = |e: sled::Error| classify(&shown, e);
        let meta = db.open_tree("meta").map_err(io)?;
        match meta.get("format").map_err(io)? {
            None => {
                meta.insert("format", &FORMAT.to_be_bytes()).map_err(io)?;
                db.flush().map_err(io)?;
            }
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        what: "the format version is unreadable".into(),
                    })?;
                if found > FORMAT {
                    return Err(StoreError::NewerFormat {
                        path: shown,
                        found,
                        supported: FORMAT,
                    });
                }
                // An older store is read as it is, and marked as this
                // format: this binary may write what an older one cannot read.
                if found < FORMAT {
                    meta.insert("format", &FORMAT.to_be_bytes()).map_err(io)?;
                    db.flush().map_err(io)?;
                }
            }
        }
        Ok(SledStore {
            runs: db.open_tree("runs").map_err(io)?,
            events: db.open_tree("events").map_err(io)?,
            logs: db.open_tree("logs").map_err(io)?,
            next: Default::default(),
            db,
            path: shown,
            set_aside,
        })
    }

    fn io(&self) -> impl Fn(sled::Error) -> StoreError + '_ {
        move |e| classify(&self.path, e)
    }

    /// The number of the run's last event, if it has any.
    fn last_seq(&self, id: RunId) -> Result<Option<u64>, StoreError> {
        let range = event_key(id, 0)..=event_key(id, u64::MAX);
        let Some(last) = self.events.range(range).next_back() else {
            return Ok(None);
        };
        let (key, _) = last.map_err(self.io())?;
        let seq: [u8; 8] = key[8..16].try_into().map_err(|_| StoreError::Corrupt {
            what: format!("run {id}: an event key"),
        })?;
        Ok(Some(u64::from_be_bytes(seq)))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(self.io())
    }
}

/// Opens a sled database, creating it whole if missing; returns where
/// damaged snapshots were set aside, if any.
pub(super) fn open_sled(path: &Path) -> sled::Result<(sled::Db, Option<std::path::PathBuf>)> {
    let created = !path.exists();
    if created {
        create(path)?;
    }
    match open_after(path, created) {
        Err(sled::Error::Corruption { .. }) => {
            // sled 0.34 can leave a damaged snapshot when killed while
            // writing one. A snapshot only caches what the log holds: set
            // it aside and rebuild from the log. Our own records are still
            // checked one by one.
            let aside = set_snapshots_aside(path).map_err(sled::Error::Io)?;
            Ok((open_db(path)?, aside))
        }
        other => Ok((other?, None)),
    }
}

/// Creates a store whole, or not at all: sled 0.34 writes its `conf` file
/// in two writes, and a kill between them leaves a store it cannot open.
/// So the store is made beside its place and renamed into it.
fn create(path: &Path) -> sled::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journal".into());
    let making = path.with_file_name(format!(".{name}.creating.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&making);
    {
        let db = open_db(&making)?;
        db.open_tree("meta")?
            .insert("format", &FORMAT.to_be_bytes())?;
        db.flush()?;
    }
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
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
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
/// it, or `None` when there were none (then the damage is elsewhere).
fn set_snapshots_aside(path: &Path) -> std::io::Result<Option<std::path::PathBuf>> {
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

fn classify(path: &str, e: sled::Error) -> StoreError {
    let why = match &e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            "no space is left on its disk".to_string()
        }
        sled::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    };
    if why.contains("could not acquire lock") {
        StoreError::Locked {
            path: path.to_string(),
        }
    } else if matches!(e, sled::Error::Corruption { .. }) {
        StoreError::Corrupt { what: why }
    } else {
        StoreError::Io {
            path: path.to_string(),
            why,
        }
    }
}

fn event_key(run: RunId, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&run.0.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Run, step, attempt, part: an attempt interrupted by a second Ctrl-C and
/// started again writes a second part instead of replacing the first.
fn log_key(run: RunId, step: usize, attempt: u32, part: u32) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&run.0.to_be_bytes());
    key[8..16].copy_from_slice(&(step as u64).to_be_bytes());
    key[16..20].copy_from_slice(&attempt.to_be_bytes());
    key[20..].copy_from_slice(&part.to_be_bytes());
    key
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    let payload = envelope::open(bytes).map_err(|why| StoreError::Corrupt {
        what: format!("{what}: {why}"),
    })?;
    serde_json::from_slice(payload).map_err(|e| StoreError::Corrupt {
        what: format!("{what}: {e}"),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own types to JSON cannot fail: no maps with non-string keys.
    envelope::seal(&serde_json::to_vec(value).unwrap_or_default())
}

impl Journal for SledStore {
    fn create_run(
        &self,
        file: &str,
        source: &str,
        params: Vec<(String, RecordedParam)>,
        now: u64,
        until: Option<Deadline>,
    ) -> Result<RunMeta, StoreError> {
        // One process holds the store, so the last id plus one is unique;
        // ids are small and dense, for people to type.
        let last = match self.runs.last().map_err(self.io())? {
            Some((key, _)) => <[u8; 8]>::try_from(key.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "a run's key is unreadable".into(),
                })?,
            None => 0,
        };
        let id = RunId(last + 1);
        let meta = RunMeta {
            id,
            file: file.to_string(),
            source: source.to_string(),
            params,
            created_at: now,
            until,
        };
        self.runs
            .insert(id.0.to_be_bytes(), encode(&meta))
            .map_err(self.io())?;
        self.flush()?;
        Ok(meta)
    }

    fn run(&self, id: RunId) -> Result<RunMeta, StoreError> {
        let bytes = self
            .runs
            .get(id.0.to_be_bytes())
            .map_err(self.io())?
            .ok_or(StoreError::UnknownRun(id))?;
        decode(&bytes, &format!("run {id}"))
    }

    fn runs(&self) -> Result<Vec<RunMeta>, StoreError> {
        self.runs
            .iter()
            .map(|entry| {
                let (_, bytes) = entry.map_err(self.io())?;
                decode(&bytes, "a run")
            })
            .collect()
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.flush()
    }

    fn append_unsynced(&self, id: RunId, event: &Event) -> Result<u64, StoreError> {
        let mut next = self.next.lock().map_err(|_| StoreError::Corrupt {
            what: "an earlier write panicked".into(),
        })?;
        let seq = match next.get(&id) {
            Some(seq) => *seq,
            None => self.last_seq(id)?.map_or(0, |s| s + 1),
        };
        self.events
            .insert(event_key(id, seq), encode(event))
            .map_err(self.io())?;
        next.insert(id, seq + 1);
        Ok(seq)
    }

    fn put_log(
        &self,
        id: RunId,
        step: usize,
        attempt: u32,
        log: &StepLog,
    ) -> Result<(), StoreError> {
        let range = log_key(id, step, attempt, 0)..=log_key(id, step, attempt, u32::MAX);
        let part = match self.logs.range(range).next_back() {
            Some(last) => {
                let (key, _) = last.map_err(self.io())?;
                key.get(20..24)
                    .and_then(|s| <[u8; 4]>::try_from(s).ok())
                    .map_or(0, |p| u32::from_be_bytes(p).saturating_add(1))
            }
            None => 0,
        };
        self.logs
            .insert(log_key(id, step, attempt, part), encode(log))
            .map_err(self.io())?;
        Ok(())
    }

    fn logs(&self, id: RunId, step: usize) -> Result<Vec<(u32, StepLog)>, StoreError> {
        self.run(id)?;
        self.logs
            .range(log_key(id, step, 0, 0)..=log_key(id, step, u32::MAX, u32::MAX))
            .map(|entry| {
                let (key, bytes) = entry.map_err(self.io())?;
                let attempt = key
                    .get(16..20)
                    .and_then(|s| <[u8; 4]>::try_from(s).ok())
                    .map(u32::from_be_bytes)
                    .unwrap_or(0);
                let log: StepLog = decode(&bytes, &format!("run {id}, the log of step {step}"))?;
                Ok((attempt, log))
            })
            .collect()
    }

    fn events(&self, id: RunId) -> Result<Vec<Event>, StoreError> {
        self.run(id)?;
        self.events
            .range(event_key(id, 0)..=event_key(id, u64::MAX))
            .map(|entry| {
                let (key, bytes) = entry.map_err(self.io())?;
                let seq = key
                    .get(8..16)
                    .and_then(|s| <[u8; 8]>::try_from(s).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                decode(&bytes, &format!("run {id}, event {seq}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Opens a store this process has just closed: sled's background
    /// threads let go of its lock a moment after the Db is dropped.
    fn reopen(path: &Path) -> Result<SledStore, StoreError> {
        for _ in 0..400 {
            match SledStore::open(path) {
                Err(StoreError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                other => return other,
            }
        }
        SledStore::open(path)
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("runbook-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_run_keeps_its_source_params_and_events_in_order() {
        let path = temp("order");
        let store = SledStore::open(&path).expect("opens");
        let params = vec![
            ("service".to_string(), RecordedParam::Value("api".into())),
            (
                "db".to_string(),
                RecordedParam::SecretFromEnv("DATABASE_URL".into()),
            ),
        ];
        let run = store
            .create_run("deploy.runbook", "runbook r {}\n", params.clone(), 7, None)
            .expect("creates");
        for i in 0..300 {
            store
                .append(
                    run.id,
                    &Event::StepSkipped {
                        step: i,
                        reason: "x".into(),
                    },
                )
                .expect("appends");
        }
        drop(store);
        let store = reopen(&path).expect("opens again");
        let meta = store.run(run.id).expect("known");
        assert_eq!(
            (meta.source.as_str(), meta.params),
            ("runbook r {}\n", params)
        );
        let events = store.events(run.id).expect("reads");
        assert_eq!(events.len(), 300);
        assert!(
            matches!(events[299], Event::StepSkipped { step: 299, .. }),
            "in order past 255"
        );
        let other = store
            .create_run("b.runbook", "", Vec::new(), 8, None)
            .expect("creates");
        assert!(other.id > run.id);
        assert_eq!(store.events(other.id).expect("reads").len(), 0);
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn a_second_opener_is_told_the_store_is_in_use() {
        let path = temp("lock");
        let _first = SledStore::open(&path).expect("opens");
        let second = SledStore::open(&path).err().map(|e| e.to_string());
        assert!(second.is_some_and(|m| m.contains("is in use by another runbook process")));
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn a_newer_format_is_refused_and_an_unknown_run_is_named() {
        let path = temp("format");
        {
            let store = SledStore::open(&path).expect("opens");
            assert!(matches!(
                store.events(RunId(42)),
                Err(StoreError::UnknownRun(RunId(42)))
            ));
            let meta = store.db.open_tree("meta").expect("tree");
            meta.insert("format", &(FORMAT + 1).to_be_bytes())
                .expect("writes");
            store.db.flush().expect("flushes");
        }
        let err = reopen(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("written by a newer runbook (format 3, this one reads up to 2)"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn an_older_format_is_read_and_marked_as_this_one() {
        let path = temp("older");
        {
            let store = SledStore::open(&path).expect("opens");
            let meta = store.db.open_tree("meta").expect("tree");
            meta.insert("format", &1u32.to_be_bytes()).expect("writes");
            store.db.flush().expect("flushes");
        }
        let store = reopen(&path).expect("an older store opens");
        let meta = store.db.open_tree("meta").expect("tree");
        let format = meta.get("format").expect("reads").expect("a format");
        assert_eq!(format.as_ref(), FORMAT.to_be_bytes());
        drop(store);
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn a_damaged_event_is_reported_not_read() {
        let path = temp("corrupt");
        let store = SledStore::open(&path).expect("opens");
        let run = store
            .create_run("a.runbook", "", Vec::new(), 0, None)
            .expect("creates");
        store
            .append(
                run.id,
                &Event::StepSucceeded {
                    step: 0,
                    at: 1,
                    outputs: BTreeMap::new(),
                },
            )
            .expect("appends");
        let key = event_key(run.id, 0);
        let mut bytes = store
            .events
            .get(key)
            .expect("reads")
            .expect("there")
            .to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x20;
        store.events.insert(key, bytes).expect("writes");
        let err = store
            .events(run.id)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains(
                "the store is damaged: run 1, event 0: a record's checksum does not match"
            ),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&path);
    }

    #[test]
    fn a_damaged_sled_snapshot_is_set_aside_and_the_log_rebuilds_the_store() {
        let path = temp("snapshot");
        let run = {
            let store = SledStore::open(&path).expect("opens");
            let run = store
                .create_run("a.runbook", "", Vec::new(), 0, None)
                .expect("creates");
            for i in 0..50 {
                let event = Event::StepSkipped {
                    step: i,
                    reason: "x".into(),
                };
                store.append(run.id, &event).expect("appends");
            }
            run
        };
        // sled writes a snapshot when it recovers on opening; damage it as
        // a kill can.
        drop(reopen(&path).expect("opens again"));
        let snap = std::fs::read_dir(&path)
            .expect("lists")
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("snap."))
            .expect("sled left a snapshot")
            .path();
        let mut bytes = std::fs::read(&snap).expect("reads");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&snap, bytes).expect("writes");
        let store = reopen(&path).expect("opens after setting the snapshot aside");
        assert!(store.set_aside.is_some());
        assert_eq!(
            store.events(run.id).expect("reads").len(),
            50,
            "nothing lost"
        );
        let _ = std::fs::remove_dir_all(&path);
        if let Some(aside) = &store.set_aside {
            let _ = std::fs::remove_dir_all(aside);
        }
    }
}
