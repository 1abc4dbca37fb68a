//! What `runbook schedule DIR` shows, read without serving: the directory's
//! scheduled runbooks, each one's recent history (from the scheduler's
//! store, or from what a running scheduler keeps in `scheduler.json`), and
//! every file that does not check.

use super::{state_of, Live, Loader, LIVE_FILE};
use crate::error::Error;
use crate::scheduler::{Entry, Record};
use std::path::{Path, PathBuf};

/// How many history records are shown for each runbook.
const HISTORY: usize = 3;

/// One scheduled runbook as `runbook schedule` shows it.
pub struct Scheduled {
    pub entry: Entry,
    /// Its last records, oldest first (at most `HISTORY`).
    pub history: Vec<Record>,
    /// The state directory its runs are kept in.
    pub runs: PathBuf,
}

/// The directory's schedules.
pub struct Overview {
    pub scheduled: Vec<Scheduled>,
    /// Why the history could not be read (the scheduler's store is held
    /// and no live copy was found, or it is damaged), if it could not.
    pub no_history: Option<String>,
    /// The sentence for each file that does not check.
    pub problems: Vec<String>,
    /// What the running server cannot schedule, as it sees it (with its
    /// environment), when a server runs.
    pub server_problems: Option<Vec<String>>,
}

/// Reads `dir`'s scheduled runbooks and the history kept under `state`.
/// `present`: whether `state` was there when it was checked (one made
/// since is not read).
pub fn overview(dir: &Path, state: &Path, present: bool) -> Result<Overview, Error> {
    let mut loader = Loader::new(dir, false);
    loader.refresh().map_err(Error::Usage)?;
    // The scheduler holds its state while it serves; then its log has the history.
    let store = if present && state.join("scheduler").exists() {
        crate::store::open_schedules(&state.join("scheduler"))
    } else {
        Err(String::new())
    };
    // While a scheduler runs, it holds the store and keeps its last lines here.
    let live: Option<Live> = (present && store.is_err())
        .then(|| crate::store::private::read(&state.join(LIVE_FILE), 64 << 20).ok())
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let scheduled = loader
        .entries()
        .into_iter()
        .map(|entry| {
            let mut history = match (&store, &live) {
                (Ok(store), _) => store.history(&entry.name, HISTORY).unwrap_or_default(),
                (Err(_), Some(live)) => live.history.get(&entry.name).cloned().unwrap_or_default(),
                (Err(_), None) => Vec::new(),
            };
            let extra = history.len().saturating_sub(HISTORY);
            history.drain(..extra);
            let runs = state_of(state, &entry.name);
            Scheduled {
                entry,
                history,
                runs,
            }
        })
        .collect();
    let no_history = match &store {
        Err(why) if !why.is_empty() && live.is_none() => Some(why.clone()),
        _ => None,
    };
    Ok(Overview {
        scheduled,
        no_history,
        problems: loader.problems.into_values().collect(),
        server_problems: live.map(|l| l.problems),
    })
}
