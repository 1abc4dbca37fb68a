//! The embedded store: sled 0.34. Keys are big-endian so that sled's order
//! is the order of runs and of events; every write is flushed before it
//! returns. Beside sled, each run's tally (`tally.rs`) says how far its
//! journal went, so that a journal sled reads back short is refused.
//!
//! After a write or flush fails (a full disk, an I/O error), the store
//! does nothing more: every later call says why, and the sled handles are
//! not dropped, since sled 0.34 waits for ever in the flush its drop does
//! after a failed write.

use super::sled_open::{classify, open_sled};
use super::tally::{self, Read, Tallies, Tally};
use super::{envelope, Deadline, Journal, RecordedParam, RunId, RunMeta, StepLog, StoreError};
use crate::engine::Event;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The layout this code writes. A store written in a newer layout is refused.
/// 2: the journal may hold `StepNoted` events, which a binary that knows
/// format 1 cannot read. 3: every run has a tally in `runbook.tally`, which
/// a binary that knows format 2 would let fall behind. 4: the journal may
/// hold `Steered` events (who resumed, retried or cancelled). 5: the
/// journal may hold `Approval` events (each person's answer).
pub const FORMAT: u32 = 5;

/// The tally file, inside the journal's directory so that it travels with it.
const TALLY_FILE: &str = "runbook.tally";

pub struct SledStore {
    sled: ManuallyDrop<Handles>,
    tallies: Tallies,
    /// Per run read whole or written by this process: where its journal is.
    progress: Mutex<HashMap<RunId, Progress>>,
    path: String,
    /// Why the first write or flush failed; after it, nothing is written.
    failed: OnceLock<String>,
    /// Where a damaged sled snapshot was set aside when opening, if one was.
    pub set_aside: Option<std::path::PathBuf>,
}

struct Handles {
    db: sled::Db,
    runs: sled::Tree,
    events: sled::Tree,
    logs: sled::Tree,
}

/// How far a run's journal is, as this process knows it.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The next event's number: how many it has.
    next: u64,
    /// The chain of the checksums of those events.
    chain: u64,
    /// The generation of its last tally, `None` before its first.
    generation: Option<u64>,
    /// Whether events were written since its last tally.
    untallied: bool,
}

#[allow(unsafe_code)] // a failed Db never dropped: see tests/integration/layers.rs
impl Drop for SledStore {
    fn drop(&mut self) {
        if self.failed.get().is_none() {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.sled) }
        }
    }
}

impl SledStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let (db, set_aside) = open_sled(path, &|making| {
            Tallies::open(&making.join(TALLY_FILE)).map(drop)
        })?;
        let io = |e: sled::Error| classify(&shown, e);
        let meta = db.open_tree("meta").map_err(io)?;
        let found = match meta.get("format").map_err(io)? {
            None => FORMAT,
            Some(bytes) => <[u8; 4]>::try_from(bytes.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "the format version is unreadable".into(),
                })?,
        };
        if found > FORMAT {
            return Err(StoreError::NewerFormat {
                path: shown,
                found,
                supported: FORMAT,
            });
        }
        let tally_path = path.join(TALLY_FILE);
        if found >= 3 && !tally_path.exists() {
            return Err(StoreError::Corrupt {
                what: format!(
                    "the record of how far each run went ({}) is missing",
                    tally_path.display()
                ),
            });
        }
        let tallies = Tallies::open(&tally_path).map_err(|e| classify(&shown, e.into()))?;
        // An older store is read as it is, and marked as this format: this
        // binary may write what an older one cannot read. Its runs have no
        // tallies until they are next written.
        if found < FORMAT {
            meta.insert("format", &FORMAT.to_be_bytes()).map_err(io)?;
            db.flush().map_err(io)?;
        }
        Ok(SledStore {
            sled: ManuallyDrop::new(Handles {
                runs: db.open_tree("runs").map_err(io)?,
                events: db.open_tree("events").map_err(io)?,
                logs: db.open_tree("logs").map_err(io)?,
                db,
            }),
            tallies,
            progress: Default::default(),
            path: shown,
            failed: OnceLock::new(),
            set_aside,
        })
    }

    /// The process that holds the store at `path` open, if one does.
    pub fn holder(path: &Path) -> Option<u32> {
        super::sled_open::lock_holder(path)
    }

    fn io(&self) -> impl Fn(sled::Error) -> StoreError + '_ {
        move |e| classify(&self.path, e)
    }

    /// A write or flush failed: nothing more is written, and the reason is
    /// kept for every later call.
    fn failing(&self, e: StoreError) -> StoreError {
        if let StoreError::Io { why, .. } = &e {
            let _ = self.failed.set(why.clone());
        } else {
            let _ = self.failed.set(e.to_string());
        }
        e
    }

    fn writable(&self) -> Result<(), StoreError> {
        match self.failed.get() {
            None => Ok(()),
            Some(why) => Err(StoreError::Io {
                path: self.path.clone(),
                why: why.clone(),
            }),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.writable()?;
        self.sled
            .db
            .flush()
            .map(|_| ())
            .map_err(|e| self.failing(classify(&self.path, e)))
    }

    /// Walks the run's events in order, each checked, and checks the whole
    /// against its tally: none missing, none different. `each` sees every
    /// event's number and record.
    fn walk(
        &self,
        id: RunId,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<Progress, StoreError> {
        let tally = self.tally_of(id)?;
        let mut at = Progress {
            next: 0,
            chain: 0,
            generation: None,
            untallied: false,
        };
        let mut chain_at_tally =
            (tally.is_none() || tally.is_some_and(|(t, _)| t.events == 0)).then_some(0);
        for entry in self
            .sled
            .events
            .range(event_key(id, 0)..=event_key(id, u64::MAX))
        {
            let (key, bytes) = entry.map_err(self.io())?;
            if event_seq(&key) != Some(at.next) {
                return Err(StoreError::Corrupt {
                    what: format!("run {id}: its event {} is missing", at.next),
                });
            }
            envelope::open(&bytes).map_err(|why| StoreError::Corrupt {
                what: format!("run {id}, event {}: {why}", at.next),
            })?;
            at.chain = tally::chain(at.chain, at.next, envelope::checksum(&bytes));
            each(at.next, &bytes)?;
            at.next += 1;
            if tally.is_some_and(|(t, _)| t.events == at.next) {
                chain_at_tally = Some(at.chain);
            }
        }
        if let Some((tally, generation)) = tally {
            if at.next < tally.events {
                return Err(StoreError::Short {
                    run: id,
                    recorded: tally.events,
                    found: at.next,
                });
            }
            if chain_at_tally != Some(tally.chain) {
                return Err(StoreError::Corrupt {
                    what: format!(
                        "run {id}: its first {} events are not the ones recorded",
                        tally.events
                    ),
                });
            }
            at.generation = Some(generation);
            at.untallied = at.next > tally.events;
        }
        Ok(at)
    }

    /// The run's tally and its generation; `None` if it has none.
    fn tally_of(&self, id: RunId) -> Result<Option<(Tally, u64)>, StoreError> {
        match self
            .tallies
            .read(id)
            .map_err(|e| classify(&self.path, e.into()))?
        {
            Read::Missing => Ok(None),
            Read::Found { tally, generation } => Ok(Some((tally, generation))),
            Read::Damaged => Err(StoreError::Corrupt {
                what: format!("the record of how far run {id} went is unreadable"),
            }),
        }
    }

    /// Where the run's journal is, read once per process.
    fn progress_of<'m>(
        &self,
        known: &'m mut HashMap<RunId, Progress>,
        id: RunId,
    ) -> Result<&'m mut Progress, StoreError> {
        match known.entry(id) {
            std::collections::hash_map::Entry::Occupied(at) => Ok(at.into_mut()),
            std::collections::hash_map::Entry::Vacant(new) => {
                Ok(new.insert(self.walk(id, |_, _| Ok(()))?))
            }
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<RunId, Progress>>, StoreError> {
        self.progress.lock().map_err(|_| StoreError::Corrupt {
            what: "an earlier write panicked".into(),
        })
    }

    /// Checks that sled holds as many events of every run as its tally
    /// counts: before a new run is written into the store, since sled
    /// writes after where it stopped reading and a damaged log would lose
    /// more. The counts alone: each run's chain is checked when it is read.
    /// Returns the highest run number the tallies hold.
    fn check_counts(&self) -> Result<u64, StoreError> {
        let all = self
            .tallies
            .all()
            .map_err(|e| classify(&self.path, e.into()))?;
        let highest = all.last().map_or(0, |(id, _)| id.0);
        for (id, read) in all {
            let Read::Found { tally, .. } = read else {
                return Err(StoreError::Corrupt {
                    what: format!("the record of how far run {id} went is unreadable"),
                });
            };
            if !self
                .sled
                .runs
                .contains_key(id.0.to_be_bytes())
                .map_err(self.io())?
            {
                return Err(self.lost(id).unwrap_or(StoreError::UnknownRun(id)));
            }
            let found = match self
                .sled
                .events
                .range(event_key(id, 0)..=event_key(id, u64::MAX))
                .next_back()
            {
                None => 0,
                Some(entry) => {
                    let (key, _) = entry.map_err(self.io())?;
                    event_seq(&key).map_or(0, |s| s + 1)
                }
            };
            if found < tally.events {
                return Err(StoreError::Short {
                    run: id,
                    recorded: tally.events,
                    found,
                });
            }
        }
        Ok(highest)
    }

    /// A run the tallies know of that sled does not: it was lost.
    fn lost(&self, id: RunId) -> Option<StoreError> {
        match self.tallies.read(id).ok()? {
            Read::Missing => None,
            Read::Found { tally, .. } => Some(StoreError::Corrupt {
                what: format!(
                    "run {id} is missing from it (it had {} events)",
                    tally.events
                ),
            }),
            Read::Damaged => Some(StoreError::Corrupt {
                what: format!(
                    "run {id} is missing from it, and the record of how far it went is unreadable"
                ),
            }),
        }
    }
}

/// The event number an event's key holds.
fn event_seq(key: &[u8]) -> Option<u64> {
    key.get(8..16)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
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

/// A record as the journal keeps it. Our own types always serialize (no
/// map has keys that are not strings); were one ever not to, nothing is
/// written and the write fails, rather than an empty record being kept.
fn encode<T: serde::Serialize>(value: &T, path: &str) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map(|json| envelope::seal(&json))
        .map_err(|e| StoreError::Io {
            path: path.to_string(),
            why: format!("a record could not be encoded, so nothing was written: {e}"),
        })
}

impl super::RunStore for SledStore {
    fn repaired(&self) -> Option<String> {
        self.set_aside.as_ref().map(|aside| {
            format!(
                "the store's snapshot was damaged (sled 0.34 can leave one so when it is killed); it was moved to {} and the store was rebuilt from its log",
                aside.display()
            )
        })
    }
}

impl Journal for SledStore {
    fn create_run(
        &self,
        file: &str,
        source: &str,
        params: Vec<(String, RecordedParam)>,
        now: u64,
        until: Option<Deadline>,
        started_by: Option<String>,
    ) -> Result<RunMeta, StoreError> {
        self.writable()?;
        // One process holds the store, and in it this lock is held from
        // reading the last id to recording the new one (the runs of one
        // process are created from several threads), so the last id plus
        // one is unique; ids are small and dense, for people to type. A
        // number a tally holds is never given out again, even if sled lost
        // its run.
        let mut known = self.lock()?;
        let last = match self.sled.runs.last().map_err(self.io())? {
            Some((key, _)) => <[u8; 8]>::try_from(key.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "a run's key is unreadable".into(),
                })?,
            None => 0,
        };
        let tallied = self.check_counts()?;
        let id = RunId(last.max(tallied) + 1);
        let meta = RunMeta {
            id,
            file: file.to_string(),
            source: source.to_string(),
            params,
            created_at: now,
            until,
            started_by,
        };
        self.sled
            .runs
            .insert(id.0.to_be_bytes(), encode(&meta, &self.path)?)
            .map_err(|e| self.failing(classify(&self.path, e)))?;
        known.insert(
            id,
            Progress {
                next: 0,
                chain: 0,
                generation: None,
                untallied: true,
            },
        );
        drop(known);
        self.sync()?;
        Ok(meta)
    }

    fn run(&self, id: RunId) -> Result<RunMeta, StoreError> {
        let bytes = self.sled.runs.get(id.0.to_be_bytes()).map_err(self.io())?;
        match bytes {
            Some(bytes) => decode(&bytes, &format!("run {id}")),
            None => Err(self.lost(id).unwrap_or(StoreError::UnknownRun(id))),
        }
    }

    fn runs(&self) -> Result<Vec<RunMeta>, StoreError> {
        let runs: Vec<RunMeta> = self
            .sled
            .runs
            .iter()
            .map(|entry| {
                let (_, bytes) = entry.map_err(self.io())?;
                decode(&bytes, "a run")
            })
            .collect::<Result<_, _>>()?;
        let all = self
            .tallies
            .all()
            .map_err(|e| classify(&self.path, e.into()))?;
        for (id, _) in all {
            if runs.binary_search_by_key(&id, |r| r.id).is_err() {
                if let Some(lost) = self.lost(id) {
                    return Err(lost);
                }
            }
        }
        Ok(runs)
    }

    fn sync(&self) -> Result<(), StoreError> {
        // Held across the flush: what is tallied below is what was flushed.
        let mut known = self.lock()?;
        self.flush()?;
        // Only now, with what they count on disk, are the tallies written.
        for (id, at) in known.iter_mut().filter(|(_, at)| at.untallied) {
            let generation = at.generation.map_or(0, |g| g.wrapping_add(1));
            let tally = Tally {
                events: at.next,
                chain: at.chain,
            };
            self.tallies
                .write(*id, generation, tally)
                .map_err(|e| self.failing(classify(&self.path, e.into())))?;
            at.generation = Some(generation);
            at.untallied = false;
        }
        Ok(())
    }

    fn append_unsynced(&self, id: RunId, event: &Event) -> Result<u64, StoreError> {
        self.writable()?;
        let mut known = self.lock()?;
        let at = self.progress_of(&mut known, id)?;
        let seq = at.next;
        let record = encode(event, &self.path)?;
        self.sled
            .events
            .insert(event_key(id, seq), record.as_slice())
            .map_err(|e| self.failing(classify(&self.path, e)))?;
        at.chain = tally::chain(at.chain, seq, envelope::checksum(&record));
        at.next = seq + 1;
        at.untallied = true;
        Ok(seq)
    }

    fn put_log(
        &self,
        id: RunId,
        step: usize,
        attempt: u32,
        log: &StepLog,
    ) -> Result<(), StoreError> {
        self.writable()?;
        let range = log_key(id, step, attempt, 0)..=log_key(id, step, attempt, u32::MAX);
        let part = match self.sled.logs.range(range).next_back() {
            Some(last) => {
                let (key, _) = last.map_err(self.io())?;
                key.get(20..24)
                    .and_then(|s| <[u8; 4]>::try_from(s).ok())
                    .map_or(0, |p| u32::from_be_bytes(p).saturating_add(1))
            }
            None => 0,
        };
        self.sled
            .logs
            .insert(log_key(id, step, attempt, part), encode(log, &self.path)?)
            .map_err(|e| self.failing(classify(&self.path, e)))?;
        Ok(())
    }

    fn logs(&self, id: RunId, step: usize) -> Result<Vec<(u32, StepLog)>, StoreError> {
        // That the run exists, without decoding its record (which holds its
        // source): `logs` asks once per step, and a run may have 80,000.
        let known = self
            .sled
            .runs
            .contains_key(id.0.to_be_bytes())
            .map_err(self.io())?;
        if !known {
            return Err(self.lost(id).unwrap_or(StoreError::UnknownRun(id)));
        }
        self.sled
            .logs
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
        let mut events = Vec::new();
        let at = self.walk(id, |seq, bytes| {
            events.push(decode(bytes, &format!("run {id}, event {seq}"))?);
            Ok(())
        })?;
        let mut known = self.lock()?;
        // What this process wrote and has not tallied yet stays as it is.
        known.entry(id).or_insert(at);
        Ok(events)
    }
}

#[cfg(test)]
mod tests;
