//! What the command line gives beside clap's parsing: the state directory
//! and `-p NAME=VALUE` pairs.

use crate::error::Error;
use std::path::PathBuf;

/// `--state`, else `$RUNBOOK_STATE`, else `$XDG_STATE_HOME/runbook`, else
/// `~/.local/state/runbook`: one place per user, so that `resume` finds a
/// run from any directory.
pub fn state_dir(given: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = given {
        return dir;
    }
    if let Some(dir) = std::env::var_os("RUNBOOK_STATE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("runbook");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/runbook"),
        None => PathBuf::from(".runbook"),
    }
}

pub fn parse_params(params: &[String]) -> Result<Vec<(String, String)>, Error> {
    params
        .iter()
        .map(|p| match p.split_once('=') {
            Some((name, value)) => Ok((name.trim().to_string(), value.to_string())),
            None => Err(Error::Usage(format!("-p {p}: write NAME=VALUE"))),
        })
        .collect()
}
