//! The floor under runbook's executor benchmarks: the least any program
//! needs to run the same shapes when each start must be durable before the
//! program begins. No parsing, no engine, no output capture, no tokio: a
//! loop that starts `true` with `posix_spawn` (through std), waits for any
//! child with `waitpid`, and before each start appends a 300-byte record to
//! a journal and syncs it, as runbook's driver does (a step's end is
//! appended unsynced; the next start's sync covers it, one sync per turn).
//! `bench/executor.sh` times it beside runbook and make, so that a goal
//! relative to make can be read against what durability itself costs on
//! the machine measured.
//!
//!   durable_floor SHAPE N SLOTS SYNC DIR
//!
//!   SHAPE  chain (N steps, each after the previous) or fan (one step,
//!          then N after it, then one after all of them)
//!   SLOTS  programs running at once at most (a runbook's `concurrency`)
//!   SYNC   none        nothing is recorded (make's bookkeeping: none)
//!          sled        a sled 0.34 insert and `flush` before each start
//!          fdatasync   a `pwrite` and `fdatasync` of a plain file instead
//!          sled-ahead  starts are recorded ahead, as soon as a step can
//!                      run, by a second thread that flushes whatever has
//!                      queued up in one go; a step begins once its record
//!                      is flushed. Not what runbook does: it shows what
//!                      recording starts early would gain at best.
//!          sled-batched  the same, and the recorder waits 1 ms after the
//!                      first record of a batch for more (group commit of
//!                      ends too): what it takes to flush less than once
//!                      per step.
//!   DIR    a directory for the journal, `DIR/journal` (replaced)
//!
//! Built by `cargo build --release --example durable_floor`.
#![allow(unsafe_code)] // waitpid(-1): the floor measures a bare loop

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

const RECORD: [u8; 300] = [b'x'; 300];

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    None,
    Sled,
    Fdatasync,
    SledAhead,
    SledBatched,
}

/// Where records go. `append` writes; `sync` makes everything written
/// durable.
struct Journal {
    to: To,
    /// Records appended since the last sync.
    dirty: bool,
}

enum To {
    Nowhere,
    Sled(sled::Db, u64),
    File(File, u64),
}

impl Journal {
    const NOWHERE: Journal = Journal {
        to: To::Nowhere,
        dirty: false,
    };

    fn open(mode: Mode, dir: &Path) -> Result<Journal, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // Only what an earlier run of this program left is removed.
        let path = dir.join("journal");
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(&path);
        let to = match mode {
            Mode::None => To::Nowhere,
            Mode::Sled | Mode::SledAhead | Mode::SledBatched => {
                To::Sled(sled::open(&path).map_err(|e| format!("sled: {e}"))?, 0)
            }
            Mode::Fdatasync => To::File(
                File::create(&path).map_err(|e| format!("cannot create the journal: {e}"))?,
                0,
            ),
        };
        Ok(Journal { to, dirty: false })
    }

    fn append(&mut self) -> Result<(), String> {
        self.dirty = true;
        match &mut self.to {
            To::Nowhere => Ok(()),
            To::Sled(db, seq) => {
                *seq += 1;
                db.insert(seq.to_be_bytes(), &RECORD[..])
                    .map(|_| ())
                    .map_err(|e| format!("sled: {e}"))
            }
            To::File(file, at) => {
                file.write_all_at(&RECORD, *at)
                    .map_err(|e| format!("write: {e}"))?;
                *at += RECORD.len() as u64;
                Ok(())
            }
        }
    }

    fn sync(&mut self) -> Result<(), String> {
        self.dirty = false;
        match &self.to {
            To::Nowhere => Ok(()),
            To::Sled(db, _) => db.flush().map(|_| ()).map_err(|e| format!("sled: {e}")),
            To::File(file, _) => file.sync_data().map_err(|e| format!("fdatasync: {e}")),
        }
    }
}

/// The shape: for each step, the steps after it and how many it waits for.
struct Shape {
    after: Vec<Vec<usize>>,
    waits_for: Vec<usize>,
}

impl Shape {
    fn new(kind: &str, n: usize) -> Result<Shape, String> {
        let (count, edges): (usize, Vec<(usize, usize)>) = match kind {
            "chain" => (n, (1..n).map(|i| (i - 1, i)).collect()),
            "fan" => {
                let mut edges: Vec<_> = (1..=n).map(|i| (0, i)).collect();
                edges.extend((1..=n).map(|i| (i, n + 1)));
                (n + 2, edges)
            }
            other => return Err(format!("unknown shape `{other}` (chain or fan)")),
        };
        let mut after = vec![Vec::new(); count];
        let mut waits_for = vec![0; count];
        for (from, to) in edges {
            after[from].push(to);
            waits_for[to] += 1;
        }
        Ok(Shape { after, waits_for })
    }
}

/// Records on a thread of its own: each message is a step's start (`true`)
/// or end; whatever has queued up is appended and flushed in one go, and
/// the answer is how many starts are durable.
type Recorder = (
    mpsc::Sender<bool>,
    mpsc::Receiver<Result<usize, String>>,
    std::thread::JoinHandle<()>,
);

fn recorder(mut journal: Journal, gather: Option<std::time::Duration>) -> Recorder {
    let (ask, asked) = mpsc::channel::<bool>();
    let (tell, told) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut durable = 0;
        while let Ok(first) = asked.recv() {
            if let Some(gather) = gather {
                std::thread::sleep(gather);
            }
            let batch: Vec<bool> = std::iter::once(first).chain(asked.try_iter()).collect();
            let done = batch
                .iter()
                .try_for_each(|_| journal.append())
                .and_then(|()| journal.sync());
            durable += batch.iter().filter(|start| **start).count();
            if tell.send(done.map(|()| durable)).is_err() {
                return;
            }
        }
    });
    (ask, told, thread)
}

fn run(shape: &Shape, slots: usize, mode: Mode, dir: &Path) -> Result<(), String> {
    let mut journal = Journal::open(mode, dir)?;
    let mut waits_for = shape.waits_for.clone();
    let mut ready: VecDeque<usize> = (0..waits_for.len())
        .filter(|s| waits_for[*s] == 0)
        .collect();
    let mut running: HashMap<i32, usize> = HashMap::new();
    // sled-ahead: how many ready steps were sent to the recorder, and how
    // many of those are durable. Steps are recorded and started in the
    // order they became ready.
    let ahead = matches!(mode, Mode::SledAhead | Mode::SledBatched).then(|| {
        let gather = (mode == Mode::SledBatched).then(|| std::time::Duration::from_millis(1));
        recorder(std::mem::replace(&mut journal, Journal::NOWHERE), gather)
    });
    let (mut sent, mut durable, mut begun) = (0, 0, 0);
    let mut left = waits_for.len();
    while left > 0 {
        if let Some((ask, _, _)) = &ahead {
            // Every step ready now is recorded as soon as possible.
            while sent < begun + ready.len() {
                ask.send(true)
                    .map_err(|_| "the recorder stopped".to_string())?;
                sent += 1;
            }
        }
        while running.len() < slots {
            let Some(&step) = ready.front() else { break };
            if let Some((_, told, _)) = &ahead {
                while durable <= begun {
                    durable = told
                        .recv()
                        .map_err(|_| "the recorder stopped".to_string())??;
                }
            } else {
                journal.append()?;
                journal.sync()?;
            }
            ready.pop_front();
            let child = Command::new("true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start true: {e}"))?;
            running.insert(child.id() as i32, step);
            begun += 1;
        }
        // As runbook's driver: what was recorded is durable before it waits.
        if journal.dirty {
            journal.sync()?;
        }
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer to an int.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        let Some(step) = running.remove(&pid) else {
            continue;
        };
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(format!("step {step}: true failed ({status})"));
        }
        match &ahead {
            Some((ask, _, _)) => ask
                .send(false)
                .map_err(|_| "the recorder stopped".to_string())?,
            None => journal.append()?,
        }
        left -= 1;
        for &next in &shape.after[step] {
            waits_for[next] -= 1;
            if waits_for[next] == 0 {
                ready.push_back(next);
            }
        }
    }
    if let Some((ask, told, thread)) = ahead {
        // The last ends are durable before the program exits, and no
        // batch failed unseen.
        drop(ask);
        for reply in told.iter() {
            reply?;
        }
        thread
            .join()
            .map_err(|_| "the recorder panicked".to_string())?;
    }
    journal.sync()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: durable_floor chain|fan N SLOTS none|sled|fdatasync|sled-ahead|sled-batched DIR";
    let parsed = (|| -> Result<(Shape, usize, Mode, PathBuf), String> {
        let [shape, n, slots, mode, dir] = &args[..] else {
            return Err(usage.into());
        };
        let n: usize = n.parse().map_err(|_| format!("N is a number: {n}"))?;
        let slots: usize = slots
            .parse()
            .map_err(|_| format!("SLOTS is a number: {slots}"))?;
        if n == 0 || slots == 0 || n > 10_000_000 {
            return Err("N is from 1 to 10,000,000 and SLOTS at least 1".into());
        }
        let mode = match mode.as_str() {
            "none" => Mode::None,
            "sled" => Mode::Sled,
            "fdatasync" => Mode::Fdatasync,
            "sled-ahead" => Mode::SledAhead,
            "sled-batched" => Mode::SledBatched,
            other => return Err(format!("unknown SYNC `{other}`; {usage}")),
        };
        Ok((Shape::new(shape, n)?, slots, mode, PathBuf::from(dir)))
    })();
    let result = parsed.and_then(|(shape, slots, mode, dir)| run(&shape, slots, mode, &dir));
    if let Err(why) = result {
        eprintln!("durable_floor: {why}");
        std::process::exit(2);
    }
}
