//! How far each run's journal went, kept outside sled: sled 0.34 reads a
//! damaged log entry as the end of its log, so damage in the middle of the
//! log silently shortens every run written after it. The per-record
//! checksums cannot see records that are simply missing. So after every
//! sync, each run that was written to gets a tally here: how many events it
//! has and a chain of their checksums. A run whose journal reads back
//! shorter than its tally, or different, is refused instead of being read
//! as an older state.
//!
//! One file, `STATE/journal/runbook.tally`, two 64-byte slots per run at a
//! place given by its number. A tally is written to the slot its generation
//! picks, so a torn write leaves the other, one sync older, whole. The file
//! is written after sled's flush has returned and is not synced itself: it
//! can only lag behind the journal, never run ahead of it, after a process
//! crash (the page cache holds it) and after a machine crash (it reaches the
//! disk after what it counts, or not at all).

use crate::engine::RunId;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

const MAGIC: &[u8; 4] = b"RBT1";
const SLOT: usize = 64;
const PER_RUN: usize = 2 * SLOT;

/// What a run's journal held at its last sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// How many events the run had.
    pub events: u64,
    /// The chain of their checksums (`chain`), in order.
    pub chain: u64,
}

/// A run's tally as read from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Never written: the run was made before tallies were kept, or the
    /// process ended between recording the run and its first tally.
    Missing,
    Found {
        tally: Tally,
        generation: u64,
    },
    /// Both slots are unreadable.
    Damaged,
}

pub struct Tallies {
    file: File,
}

impl Tallies {
    /// Opens the file, making it (private to its owner) if it is missing.
    pub fn open(path: &Path) -> std::io::Result<Tallies> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(super::private::file_mode())
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Ok(Tallies { file })
    }

    pub fn read(&self, run: RunId) -> std::io::Result<Read> {
        let Some(at) = offset(run) else {
            return Ok(Read::Missing);
        };
        let mut both = [0u8; PER_RUN];
        let n = read_at_most(&self.file, &mut both, at)?;
        Ok(pick(run, &both[..n]))
    }

    /// Writes `tally` as the run's generation `generation`.
    pub fn write(&self, run: RunId, generation: u64, tally: Tally) -> std::io::Result<()> {
        let Some(at) = offset(run) else {
            return Ok(());
        };
        let slot = at + (generation % 2) * SLOT as u64;
        self.file
            .write_all_at(&encode(run, generation, tally), slot)
    }

    /// Every run with a slot written, whole or not (the last is the highest
    /// number that must not be given out again), and what was read of it:
    /// the file
    /// read once, whole (a run whose first tally is in its first slot has
    /// only half its bytes in it).
    pub fn all(&self) -> std::io::Result<Vec<(RunId, Read)>> {
        let len = usize::try_from(self.file.metadata()?.len()).unwrap_or(usize::MAX);
        let mut bytes = vec![0u8; len];
        let n = read_at_most(&self.file, &mut bytes, 0)?;
        Ok(bytes[..n]
            .chunks(PER_RUN)
            .enumerate()
            .filter_map(|(i, both)| {
                let run = RunId(i as u64 + 1);
                match pick(run, both) {
                    Read::Missing => None,
                    read => Some((run, read)),
                }
            })
            .collect())
    }
}

/// The next link of a run's chain: the previous link, the event's number
/// and the checksum of its record. Not cryptographic: it finds damage, not
/// an attacker who can write the store.
pub fn chain(previous: u64, seq: u64, checksum: u32) -> u64 {
    let mut h = previous ^ 0x9e37_79b9_7f4a_7c15;
    for word in [seq, u64::from(checksum)] {
        h = (h ^ word).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    h
}

fn offset(run: RunId) -> Option<u64> {
    run.0
        .checked_sub(1)
        .and_then(|i| i.checked_mul(PER_RUN as u64))
}

fn read_at_most(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn encode(run: RunId, generation: u64, tally: Tally) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    slot[..4].copy_from_slice(MAGIC);
    slot[4..12].copy_from_slice(&run.0.to_be_bytes());
    slot[12..20].copy_from_slice(&generation.to_be_bytes());
    slot[20..28].copy_from_slice(&tally.events.to_be_bytes());
    slot[28..36].copy_from_slice(&tally.chain.to_be_bytes());
    let crc = crc32fast::hash(&slot[..SLOT - 4]);
    slot[SLOT - 4..].copy_from_slice(&crc.to_be_bytes());
    slot
}

fn decode(run: RunId, slot: &[u8]) -> Option<(u64, Tally)> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(slot.get(at..at + 8)?.try_into().ok()?))
    };
    let crc = u32::from_be_bytes(slot.get(SLOT - 4..SLOT)?.try_into().ok()?);
    if &slot[..4] != MAGIC || crc32fast::hash(&slot[..SLOT - 4]) != crc || word(4)? != run.0 {
        return None;
    }
    Some((
        word(12)?,
        Tally {
            events: word(20)?,
            chain: word(28)?,
        },
    ))
}

/// The newer whole slot of the two.
fn pick(run: RunId, both: &[u8]) -> Read {
    if both.iter().all(|b| *b == 0) {
        return Read::Missing;
    }
    let slots = [
        both.get(..SLOT).and_then(|s| decode(run, s)),
        both.get(SLOT..PER_RUN).and_then(|s| decode(run, s)),
    ];
    match slots.into_iter().flatten().max_by_key(|(g, _)| *g) {
        Some((generation, tally)) => Read::Found { tally, generation },
        None => Read::Damaged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> (std::path::PathBuf, Tallies) {
        let path =
            std::env::temp_dir().join(format!("runbook-tally-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let tallies = Tallies::open(&path).expect("opens");
        (path, tallies)
    }

    /// The highest run number with a slot written.
    fn highest(t: &Tallies) -> u64 {
        t.all().unwrap().last().map_or(0, |(run, _)| run.0)
    }

    fn tally(events: u64) -> Tally {
        Tally {
            events,
            chain: events * 7,
        }
    }

    #[test]
    fn the_newest_tally_is_read_and_the_highest_run_is_known() {
        let (path, t) = file("newest");
        assert_eq!(t.read(RunId(3)).unwrap(), Read::Missing);
        assert_eq!(highest(&t), 0);
        for g in 0..5 {
            t.write(RunId(3), g, tally(g + 10)).unwrap();
        }
        t.write(RunId(1), 0, tally(1)).unwrap();
        assert_eq!(
            t.read(RunId(3)).unwrap(),
            Read::Found {
                tally: tally(14),
                generation: 4
            }
        );
        assert_eq!(t.read(RunId(2)).unwrap(), Read::Missing);
        assert_eq!(highest(&t), 3);
        let all: Vec<u64> = t.all().unwrap().iter().map(|(r, _)| r.0).collect();
        assert_eq!(all, [1, 3]);
        let mode = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_flipped_byte_costs_at_most_one_sync_and_never_reads_ahead() {
        let (path, t) = file("flip");
        t.write(RunId(2), 6, tally(6)).unwrap();
        t.write(RunId(2), 7, tally(7)).unwrap();
        let clean = std::fs::read(&path).unwrap();
        for at in PER_RUN..2 * PER_RUN {
            for bit in [0x01u8, 0x80] {
                let mut bytes = clean.clone();
                bytes[at] ^= bit;
                std::fs::write(&path, &bytes).unwrap();
                match t.read(RunId(2)).unwrap() {
                    Read::Found { tally: found, .. } => {
                        assert!(
                            found == tally(6) || found == tally(7),
                            "byte {at}: {found:?}"
                        )
                    }
                    other => panic!("byte {at}: {other:?}"),
                }
            }
        }
        // Both slots damaged: no tally to trust, said so.
        let mut bytes = clean.clone();
        bytes[PER_RUN + 5] ^= 1;
        bytes[PER_RUN + SLOT + 5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(t.read(RunId(2)).unwrap(), Read::Damaged);
        assert_eq!(highest(&t), 2);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_tally_written_for_another_run_is_not_taken_for_this_one() {
        let (path, t) = file("other");
        t.write(RunId(1), 0, tally(3)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.resize(2 * PER_RUN, 0);
        bytes.copy_within(0..PER_RUN, PER_RUN);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(t.read(RunId(2)).unwrap(), Read::Damaged);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_run_with_only_its_first_tally_is_known() {
        let (path, t) = file("first");
        t.write(RunId(1), 0, tally(0)).unwrap();
        t.write(RunId(2), 0, tally(0)).unwrap();
        assert_eq!(highest(&t), 2);
        assert_eq!(t.all().unwrap().len(), 2);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_chain_depends_on_order_and_on_every_checksum() {
        let a = chain(chain(0, 0, 11), 1, 22);
        let b = chain(chain(0, 0, 22), 1, 11);
        let c = chain(chain(0, 0, 11), 1, 23);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(chain(0, 0, 0), 0);
    }
}
