//! Which process drives which run (`STATE/owner.json`), for the sentences
//! of commands that find the store held and no socket served (a process
//! starting or closing), and for the scheduler that adopts a run process
//! an earlier scheduler left. Requests to that process go through its
//! socket (`session`), never through files.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Who holds the store: written by the process that drives a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub run: u64,
}

/// The most the owner file may hold: a few dozen bytes are written; more
/// was not written by runbook.
const OWNER_LIMIT: u64 = 64 * 1024;

/// Records which process drives which run. Not synced: it names a live
/// process, which a power loss ends, and a killed process leaves it in the
/// page cache.
pub fn write_owner(state: &Path, owner: &Owner) -> std::io::Result<()> {
    super::private::write_view(
        state,
        "owner.json",
        &serde_json::to_vec(owner).map_err(std::io::Error::other)?,
    )
}

pub fn read_owner(state: &Path) -> Option<Owner> {
    let bytes = super::private::read(&state.join("owner.json"), OWNER_LIMIT).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn clear_owner(state: &Path) {
    let _ = std::fs::remove_file(state.join("owner.json"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_read_back_and_cleared() {
        let dir = std::env::temp_dir().join(format!("runbook-owner-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::store::private::make_dir(&dir).expect("a directory");
        assert_eq!(read_owner(&dir), None);
        let owner = Owner { pid: 42, run: 7 };
        write_owner(&dir, &owner).expect("writes");
        assert_eq!(read_owner(&dir), Some(owner));
        clear_owner(&dir);
        assert_eq!(read_owner(&dir), None);
        std::fs::write(dir.join("owner.json"), b"{half").expect("writes");
        assert_eq!(read_owner(&dir), None, "a torn note names no one");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
