//! A damaged store, byte by byte: whatever byte of the journal's files is
//! flipped, `status`, `resume` and `run` either see the run exactly as it
//! was or refuse in a sentence; never an older state, never "no runs",
//! never a step run again, never a run number given out twice.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An 8-step chain stopped by SIGKILL while its third step ran: s0 and s1
/// succeeded, s2 interrupted, the rest pending.
fn stopped_run(dir: &Path) -> PathBuf {
    let marker = dir.join("s2-started");
    let mut body = String::from("runbook chain {\n");
    for i in 0..8 {
        let after = if i == 0 {
            String::new()
        } else {
            format!(" after s{}", i - 1)
        };
        let command = if i == 2 {
            format!(
                "command \"sh\"\n    args [\"-c\", \"echo $$ > {}; exec sleep 60\"]",
                path(&marker)
            )
        } else {
            "command \"true\"".to_string()
        };
        body.push_str(&format!("  run s{i}{after} {{\n    {command}\n  }}\n"));
    }
    body.push_str("}\n");
    let file = write(dir, "chain.runbook", body);
    let state = dir.join("state");
    let mut child = spawn(&state, &["run", path(&file)]);
    let began = Instant::now();
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "s2 never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = child.kill();
    let _ = child.wait();
    // SAFETY: kill(2) of the process group s2's program leads.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(100));
    state
}

fn copy(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("lists").flatten() {
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("type");
        if kind.is_dir() {
            copy(&entry.path(), &target);
        } else if std::os::unix::fs::FileTypeExt::is_socket(&kind) {
            // The killed process's socket: an address, not state; a copy
            // of it is no socket at all.
            continue;
        } else {
            std::fs::copy(entry.path(), &target).expect("copies");
        }
    }
}

/// The journal's files worth flipping, and the range of each that holds
/// data: sled's log file is mostly zeros past what was written.
fn targets(journal: &Path) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(journal).expect("lists").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().expect("type").is_dir() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).expect("reads");
        let written = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        found.push((name, written));
    }
    found.sort();
    found
}

#[derive(Default)]
struct Outcomes {
    unchanged: usize,
    /// Of those, flips of a snapshot sled refused, whose repair a `note:` said.
    repairs_said: usize,
    refused: BTreeMap<String, usize>,
}

/// Flips one bit at each sampled byte of each file, on a fresh copy, with
/// or without sled's snapshot (without it sled rebuilds from its log, where
/// it reads damage as the end of the log).
fn sweep(clean: &Path, scratch_dir: &Path, want: &str, keep_snapshot: bool) -> Outcomes {
    let mut outcomes = Outcomes::default();
    let trial = scratch_dir.join("trial");
    for (name, written) in targets(&clean.join("journal")) {
        if name.starts_with("snap.") && !keep_snapshot {
            continue;
        }
        // A sample that covers each file's written range: about 100 places
        // in each (every byte with RUNBOOK_DAMAGE_ALL=1, for long runs).
        let step = if std::env::var_os("RUNBOOK_DAMAGE_ALL").is_some() {
            1
        } else {
            (written / 100).max(3)
        };
        for (n, at) in (0..written).step_by(step).enumerate() {
            copy(clean, &trial);
            let journal = trial.join("journal");
            if !keep_snapshot {
                for e in std::fs::read_dir(&journal).expect("lists").flatten() {
                    if e.file_name().to_string_lossy().starts_with("snap.") {
                        std::fs::remove_file(e.path()).expect("removes");
                    }
                }
            }
            let file = journal.join(&name);
            let mut bytes = std::fs::read(&file).expect("reads");
            bytes[at] ^= 1 << (at % 8);
            std::fs::write(&file, &bytes).expect("writes");
            let what = format!("{name} byte {at} (snapshot kept: {keep_snapshot})");
            let shown = rb(&trial, &["status", "--json"]);
            if shown.status.success() && stdout(&shown) == want {
                outcomes.unchanged += 1;
                // Where sled refused a damaged snapshot, it was set aside,
                // the store rebuilt from its log, and the operator told;
                // nothing else is said.
                let said = stderr(&shown);
                if said.starts_with("note: the store's snapshot was damaged") {
                    assert!(name.starts_with("snap."), "{what}: {said}");
                    outcomes.repairs_said += 1;
                } else {
                    assert!(said.is_empty(), "{what}: {said}");
                }
                continue;
            }
            let said = stderr(&shown);
            assert!(
                !shown.status.success() && said.starts_with("error: the store is damaged: "),
                "{what}: neither the same state nor a refusal: {}\n{said}",
                stdout(&shown)
            );
            // Every refusal that can name the run does.
            if said.contains("run ") {
                assert!(said.contains("run 1"), "{what}: {said}");
            }
            let kind: String = said
                .trim_start_matches("error: the store is damaged: ")
                .chars()
                .take_while(|c| !matches!(c, '(' | ';' | ','))
                .collect();
            let kind = kind.trim().to_string();
            *outcomes.refused.entry(kind).or_default() += 1;
            // What else is refused is the same for every flip: a share of
            // them is enough (all of them with RUNBOOK_DAMAGE_ALL).
            if n % 4 != 0 && step != 1 {
                continue;
            }
            let resumed = rb(&trial, &["resume", "1", "--rerun", "s2"]);
            assert!(!resumed.status.success(), "{what}: resume acted");
            assert!(
                !stdout(&resumed).contains("started"),
                "{what}: resume started a step: {}",
                stdout(&resumed)
            );
            let new = rb(&trial, &["run", path(&scratch_dir.join("chain.runbook"))]);
            assert!(
                !new.status.success() && !stdout(&new).contains("run 1:"),
                "{what}: run wrote into a damaged store: {}",
                stdout(&new)
            );
        }
    }
    outcomes
}

#[test]
fn a_flipped_byte_anywhere_in_the_journal_is_never_read_as_an_older_state() {
    let dir = scratch("damage-flips");
    let state = stopped_run(&dir);
    let clean = dir.join("clean");
    copy(&state, &clean);
    let shown = rb(&clean, &["status", "--json"]);
    let want = stdout(&shown);
    let (_, steps) = status(&clean, 1);
    let states: Vec<&str> = steps.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        states,
        [
            "succeeded",
            "succeeded",
            "interrupted",
            "pending",
            "pending",
            "pending",
            "pending",
            "pending"
        ]
    );
    // `status` may write sled's snapshot: the copy to damage is taken after.
    copy(&clean, &dir.join("clean-looked-at"));
    let clean = dir.join("clean-looked-at");
    for keep_snapshot in [true, false] {
        let o = sweep(&clean, &dir, &want, keep_snapshot);
        eprintln!(
            "damage (snapshot kept: {keep_snapshot}): {} flips left the state as it was ({} of them in a snapshot sled refused, set aside and said); refused: {:?}",
            o.unchanged, o.repairs_said, o.refused
        );
        assert!(o.unchanged > 0 && !o.refused.is_empty());
        if keep_snapshot {
            assert!(o.repairs_said > 0, "no snapshot flip was repaired and said");
        }
    }
}

#[test]
fn a_run_sled_lost_keeps_its_number_and_the_store_takes_no_new_run() {
    let dir = scratch("damage-lost-run");
    let state = stopped_run(&dir);
    let journal = state.join("journal");
    for e in std::fs::read_dir(&journal).expect("lists").flatten() {
        if e.file_name().to_string_lossy().starts_with("snap.") {
            std::fs::remove_file(e.path()).expect("removes");
        }
    }
    // Cut the log where sled wrote run 1's record: sled reads a shorter
    // log and knows of no run at all.
    let db = journal.join("db");
    let mut bytes = std::fs::read(&db).expect("reads");
    let cut = bytes
        .windows(b"chain.runbook".len())
        .position(|w| w == b"chain.runbook")
        .expect("the run's record is in the log");
    bytes[cut..].iter_mut().for_each(|b| *b = 0);
    std::fs::write(&db, &bytes).expect("writes");
    let said = |o: &std::process::Output| stderr(o);
    let listed = rb(&state, &["status"]);
    assert_eq!(listed.status.code(), Some(1));
    assert!(
        said(&listed).starts_with("error: the store is damaged: run 1 is missing from it (it had "),
        "{}",
        said(&listed)
    );
    let json = rb(&state, &["status", "--json"]);
    assert_eq!(json.status.code(), Some(1), "not `[]`: {}", stdout(&json));
    let new = rb(&state, &["run", path(&dir.join("chain.runbook"))]);
    assert_eq!(new.status.code(), Some(1));
    assert!(
        said(&new).ends_with("No new run is written into it; to run now, use another state directory (--state DIR)\n"),
        "{}",
        said(&new)
    );
}

#[test]
fn a_missing_tally_file_is_damage_and_an_empty_store_says_no_runs_in_json_too() {
    let dir = scratch("damage-tally-gone");
    let state = dir.join("state");
    let empty = rb(&state, &["status", "--json"]);
    assert_eq!(
        (empty.status.code(), stdout(&empty)),
        (Some(0), "[]\n".to_string())
    );
    let one = dir.join("one.runbook");
    std::fs::write(
        &one,
        "runbook one {\n  run a {\n    shell \"true\"\n  }\n}\n",
    )
    .expect("writes");
    assert_eq!(
        rb(&state, &["run", one.to_str().unwrap()]).status.code(),
        Some(0)
    );
    std::fs::remove_file(state.join("journal/runbook.tally")).expect("removes");
    let out = rb(&state, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: the store is damaged: the record of how far each run went ({}/journal/runbook.tally) is missing; keep a copy of it for the record before you do anything else\n",
            state.display()
        )
    );
}
