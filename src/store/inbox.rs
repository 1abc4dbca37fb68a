//! Requests to a run whose process holds the store (sled allows one process
//! at a time): `runbook approve` and `runbook cancel` from another terminal
//! leave a request file here; the running process picks it up within a
//! fraction of a second, records it in the journal, and answers. A request
//! is written whole (temporary file, fsync, rename) so that a crash never
//! leaves half of one.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Approve { run: u64, step: String, by: String },
    Cancel { run: u64 },
}

impl Request {
    pub fn run(&self) -> u64 {
        match self {
            Request::Approve { run, .. } | Request::Cancel { run } => *run,
        }
    }
}

/// How waiting for an answer ended.
#[derive(Debug, PartialEq)]
pub enum Waited {
    Answered(Result<(), String>),
    /// The process that was to answer ended first.
    Gone,
    /// It lives but did not answer in time.
    NoAnswer,
}

/// Who holds the store: written by the process that drives a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub run: u64,
}

/// The most a request, an answer or the owner file may hold: a few
/// hundred bytes are written; more was not written by runbook.
const REQUEST_LIMIT: u64 = 64 * 1024;

pub struct Inbox {
    dir: PathBuf,
}

impl Inbox {
    pub fn new(state: &Path) -> Self {
        Inbox {
            dir: state.join("inbox"),
        }
    }

    /// Leaves a request; returns its name, to wait for the answer.
    pub fn send(&self, request: &Request) -> std::io::Result<String> {
        super::private::make_dir(&self.dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!("{}-{}-{nanos}", request.run(), std::process::id());
        let body = serde_json::to_vec(request).map_err(std::io::Error::other)?;
        super::private::write_whole(&self.dir, &format!("{name}.request"), &body)?;
        Ok(name)
    }

    /// The requests for `run`, oldest first, each with the account that
    /// wrote it (its file's owner, as the system says). Unreadable files
    /// are removed: a request is written whole or not at all, so one that
    /// does not parse was never sent.
    pub fn take(&self, run: u64) -> Vec<(String, Request, String)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<(String, Request, String)> = Vec::new();
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".request") else {
                continue;
            };
            if !name.starts_with(&format!("{run}-")) {
                continue;
            }
            let read = super::private::read_with_owner(&entry.path(), REQUEST_LIMIT).ok();
            match read.and_then(|(b, uid)| Some((serde_json::from_slice::<Request>(&b).ok()?, uid)))
            {
                Some((request, uid)) => {
                    found.push((name.to_string(), request, super::private::account(uid)))
                }
                None => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        found.sort_by_key(|(name, _, _)| {
            name.rsplit('-').next().and_then(|n| n.parse::<u128>().ok())
        });
        found
    }

    /// Answers a request taken with `take`, and removes it.
    pub fn answer(&self, name: &str, answer: &Result<(), String>) {
        // `Result<(), String>` always serializes; the fallback is an answer
        // all the same, never an empty file.
        let body = serde_json::to_vec(answer)
            .unwrap_or_else(|_| br#"{"Err":"the answer could not be encoded"}"#.to_vec());
        let _ = super::private::write_whole(&self.dir, &format!("{name}.answer"), &body);
        let _ = std::fs::remove_file(self.dir.join(format!("{name}.request")));
    }

    /// Waits for the answer to a request, for up to `limit`, and only while
    /// `alive` says the process that should answer still lives.
    pub fn wait_answer(&self, name: &str, limit: Duration, alive: impl Fn() -> bool) -> Waited {
        let path = self.dir.join(format!("{name}.answer"));
        let answered = || {
            let bytes = super::private::read(&path, REQUEST_LIMIT).ok()?;
            let _ = std::fs::remove_file(&path);
            Some(Waited::Answered(
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Err("the answer came back unreadable".into())),
            ))
        };
        let start = Instant::now();
        loop {
            if let Some(answer) = answered() {
                return answer;
            }
            if !alive() {
                // It may have answered as it ended.
                return answered().unwrap_or(Waited::Gone);
            }
            if start.elapsed() >= limit {
                return Waited::NoAnswer;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Withdraws a request that no one answered.
    pub fn withdraw(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{name}.request")));
    }
}

/// Records which process drives which run, for the commands that find the
/// store locked. Not synced: it names a live process, which a power loss
/// ends, and a killed process leaves it in the page cache.
pub fn write_owner(state: &Path, owner: &Owner) -> std::io::Result<()> {
    super::private::write_view(
        state,
        "owner.json",
        &serde_json::to_vec(owner).map_err(std::io::Error::other)?,
    )
}

pub fn read_owner(state: &Path) -> Option<Owner> {
    let bytes = super::private::read(&state.join("owner.json"), REQUEST_LIMIT).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn clear_owner(state: &Path) {
    let _ = std::fs::remove_file(state.join("owner.json"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_taken_once_and_answered() {
        let dir = std::env::temp_dir().join(format!("runbook-inbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let inbox = Inbox::new(&dir);
        let approve = Request::Approve {
            run: 7,
            step: "gate".into(),
            by: "alice".into(),
        };
        let name = inbox.send(&approve).expect("sends");
        inbox.send(&Request::Cancel { run: 8 }).expect("sends");
        let taken = inbox.take(7);
        assert_eq!(
            taken,
            vec![(name.clone(), approve, crate::store::private::this_account())]
        );
        inbox.answer(&name, &Err("`gate` is not waiting for approval".into()));
        assert!(inbox.take(7).is_empty(), "answered requests are gone");
        assert_eq!(
            inbox.wait_answer(&name, Duration::from_secs(1), || true),
            Waited::Answered(Err("`gate` is not waiting for approval".into()))
        );
        let unanswered = inbox.send(&Request::Cancel { run: 7 }).expect("sends");
        let began = Instant::now();
        assert_eq!(
            inbox.wait_answer(&unanswered, Duration::from_secs(5), || false),
            Waited::Gone
        );
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "a dead process is not waited for"
        );
        assert_eq!(
            inbox.wait_answer(&unanswered, Duration::from_millis(100), || true),
            Waited::NoAnswer
        );
        inbox.withdraw(&unanswered);
        std::fs::write(dir.join("inbox/7-1-2.request"), b"{half").expect("writes");
        assert!(inbox.take(7).is_empty(), "a torn file is not a request");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
