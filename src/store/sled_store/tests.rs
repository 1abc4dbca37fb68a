//! The sled store's tests: order, locks, formats, damage.

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
        .create_run(
            "deploy.runbook",
            "runbook r {}\n",
            params.clone(),
            7,
            None,
            None,
        )
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
        .create_run("b.runbook", "", Vec::new(), 8, None, None)
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
        let meta = store.sled.db.open_tree("meta").expect("tree");
        meta.insert("format", &(FORMAT + 1).to_be_bytes())
            .expect("writes");
        store.sled.db.flush().expect("flushes");
    }
    let err = reopen(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("written by a newer runbook (format 6, this one reads up to 5)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&path);
}

#[test]
fn an_older_format_is_read_and_marked_as_this_one() {
    let path = temp("older");
    {
        let store = SledStore::open(&path).expect("opens");
        let meta = store.sled.db.open_tree("meta").expect("tree");
        meta.insert("format", &1u32.to_be_bytes()).expect("writes");
        store.sled.db.flush().expect("flushes");
    }
    let store = reopen(&path).expect("an older store opens");
    let meta = store.sled.db.open_tree("meta").expect("tree");
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
        .create_run("a.runbook", "", Vec::new(), 0, None, None)
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
        .sled
        .events
        .get(key)
        .expect("reads")
        .expect("there")
        .to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    store.sled.events.insert(key, bytes).expect("writes");
    let err = store
        .events(run.id)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("the store is damaged: run 1, event 0: a record's checksum does not match"),
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
            .create_run("a.runbook", "", Vec::new(), 0, None, None)
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

#[test]
fn runs_created_from_many_threads_at_once_each_get_a_number_of_their_own() {
    let path = temp("concurrent");
    let store = SledStore::open(&path).expect("opens");
    let ids: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..10)
                        .map(|_| {
                            let meta = store
                                .create_run(
                                    "r.runbook",
                                    "runbook r {}\n",
                                    Vec::new(),
                                    1,
                                    None,
                                    None,
                                )
                                .expect("creates");
                            store
                                .append(meta.id, &Event::RunStarted { at: 1 })
                                .expect("appends");
                            meta.id.0
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a thread"))
            .collect()
    });
    let distinct: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), 80, "{ids:?}");
    assert_eq!(distinct.iter().copied().max(), Some(80));
    for id in distinct {
        assert_eq!(store.events(RunId(id)).expect("reads").len(), 1);
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&path);
}
