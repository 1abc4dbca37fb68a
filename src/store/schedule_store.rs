//! What `runbook serve` keeps between checks and restarts, in its own sled
//! 0.34 database (`STATE/scheduler`): per runbook, its `EntryState` (next
//! and last fire, the run it started) and its history, append-only. Every
//! write is flushed before the scheduler acts on it, and every value is in
//! the store's checksummed envelope.

use super::envelope;
use crate::scheduler::{EntryState, Record};
use std::path::Path;

pub struct SledSchedules {
    db: sled::Db,
    entries: sled::Tree,
    history: sled::Tree,
    path: String,
    /// A write failed: nothing more is written, and the sled handles are
    /// never dropped (sled 0.34's drop waits for ever after a failed write).
    failed: std::sync::atomic::AtomicBool,
}

impl Drop for SledSchedules {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        if self.failed.load(Ordering::SeqCst) {
            let db = self.db.clone();
            let trees = (self.entries.clone(), self.history.clone());
            // Dropping ours would be no last reference while these live:
            // leak them, and ours go without a flush.
            std::mem::forget((db, trees));
        }
    }
}

impl SledSchedules {
    /// Opens it, or says in a sentence why not (another scheduler holds it).
    pub fn open(path: &Path) -> Result<Self, String> {
        let shown = path.display().to_string();
        let fail = |e: sled::Error| format!("the scheduler's state at {shown} cannot be used: {e}");
        if let Some(parent) = path.parent() {
            super::private::make_dir(parent).map_err(|e| {
                format!(
                    "cannot create {}: {}",
                    parent.display(),
                    crate::error::io_reason(&e)
                )
            })?;
        }
        let (db, _) = super::sled_open::open_sled(path, &|_| Ok(())).map_err(|e| match e {
            super::StoreError::Locked { .. } => format!("the scheduler's state at {shown} is in use by another process: is `runbook serve` already running on this state directory?"),
            super::StoreError::Io { why, .. } => format!("the scheduler's state at {shown} cannot be used: {why}"),
            super::StoreError::Corrupt { what } => format!("the scheduler's state at {shown} is damaged: {what}"),
            other => other.to_string(),
        })?;
        Ok(SledSchedules {
            entries: db.open_tree("entries").map_err(fail)?,
            history: db.open_tree("history").map_err(fail)?,
            db,
            path: shown,
            failed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn io(&self) -> impl Fn(sled::Error) -> String + '_ {
        move |e| {
            format!(
                "the scheduler's state at {} cannot be written: {e}",
                self.path
            )
        }
    }

    fn write(&self, name: &str, state: &EntryState, records: &[Record]) -> Result<(), String> {
        let payload = serde_json::to_vec(state).map_err(|e| e.to_string())?;
        self.entries
            .insert(name, envelope::seal(&payload))
            .map_err(self.io())?;
        for record in records {
            let seq = self.db.generate_id().map_err(self.io())?;
            let payload = serde_json::to_vec(record).map_err(|e| e.to_string())?;
            self.history
                .insert(history_key(name, seq), envelope::seal(&payload))
                .map_err(self.io())?;
        }
        self.db.flush().map(|_| ()).map_err(self.io())
    }
}

impl super::ScheduleStore for SledSchedules {
    fn entry(&self, name: &str) -> Result<Option<EntryState>, String> {
        match self.entries.get(name).map_err(self.io())? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some),
        }
    }

    /// Every runbook the scheduler has a state for, by name; and a
    /// sentence for each whose state is damaged (left out: it starts afresh).
    #[allow(clippy::type_complexity)]
    fn entries(&self) -> Result<super::Entries, String> {
        let mut all = Vec::new();
        let mut damaged = Vec::new();
        for item in self.entries.iter() {
            let (key, bytes) = item.map_err(self.io())?;
            let name = String::from_utf8_lossy(&key).into_owned();
            match decode(&bytes) {
                Ok(state) => all.push((name, state)),
                Err(why) => damaged.push(format!("{name}: {why}; it starts afresh")),
            }
        }
        Ok((all, damaged))
    }

    /// Writes the state and its new history lines, then flushes. After a
    /// failed write, every later one fails at once.
    fn save(&self, name: &str, state: &EntryState, records: &[Record]) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        if self.failed.load(Ordering::SeqCst) {
            return Err(format!(
                "the scheduler's state at {} cannot be written: an earlier write failed",
                self.path
            ));
        }
        let written = self.write(name, state, records);
        if written.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        written
    }

    /// The runbook's last `limit` history lines, oldest first.
    fn history(&self, name: &str, limit: usize) -> Result<Vec<Record>, String> {
        let mut found = Vec::new();
        for item in self.history.scan_prefix(prefix(name)).rev().take(limit) {
            let (_, bytes) = item.map_err(self.io())?;
            found.push(decode(&bytes)?);
        }
        found.reverse();
        Ok(found)
    }
}

fn prefix(name: &str) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    key.push(0);
    key
}

/// The name, a zero byte, then a big-endian sequence: a runbook's history
/// is one ordered range.
fn history_key(name: &str, seq: u64) -> Vec<u8> {
    let mut key = prefix(name);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let payload =
        envelope::open(bytes).map_err(|why| format!("the scheduler's state is damaged: {why}"))?;
    serde_json::from_slice(payload).map_err(|e| format!("the scheduler's state is damaged: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::What;

    #[test]
    fn states_and_history_survive_reopening_and_a_second_opener_is_told() {
        let dir = std::env::temp_dir().join(format!("runbook-sched-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("scheduler");
        let state = EntryState {
            cron: "0 2 * * *".into(),
            next_fire: Some(5),
            ..EntryState::default()
        };
        let line = |at| Record {
            at,
            fire: Some(at),
            what: What::Missed {
                why: "the scheduler was not running".into(),
            },
        };
        {
            let store = super::super::open_schedules(&path).expect("opens");
            store
                .save("db", &state, &[line(1), line(2)])
                .expect("saved");
            store.save("dbx", &state, &[line(9)]).expect("saved");
            store.save("db", &state, &[line(3)]).expect("saved");
            let again = super::super::open_schedules(&path)
                .err()
                .unwrap_or_default();
            assert!(
                again.contains("is `runbook serve` already running"),
                "{again}"
            );
        }
        // sled lets go of its lock when its flusher thread has seen the
        // last handle dropped, a moment later: the scheduler waits up to
        // 2 s for it (`serve::open_store`), and so does this test.
        let began = std::time::Instant::now();
        let store = loop {
            match super::super::open_schedules(&path) {
                Ok(store) => break store,
                Err(why) if why.contains("in use") && began.elapsed().as_secs() < 2 => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(why) => panic!("reopens: {why}"),
            }
        };
        assert_eq!(store.entry("db").ok().flatten(), Some(state));
        let at: Vec<i64> = store
            .history("db", 2)
            .unwrap_or_default()
            .iter()
            .map(|r| r.at)
            .collect();
        assert_eq!(at, [2, 3], "the last two, oldest first, not dbx's");
        assert_eq!(store.entries().map(|e| e.0.len()).ok(), Some(2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
