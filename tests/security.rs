//! The adversarial suite: what another local user, a hostile server, odd
//! files and odd secrets can do to someone who runs runbook. One test (or
//! more) per finding of the security review (issue 13); each fails on the
//! version before its fix.
//!
//! Attacks that need a second user make one (`runbook-test-other`) and run
//! commands as it with `setpriv`; that needs root, which CI has. Elsewhere
//! they say loudly that they were skipped.

mod common;

#[path = "security/files.rs"]
mod files;
#[path = "security/other_user.rs"]
mod other_user;
#[path = "security/secrets.rs"]
mod secrets;
#[path = "security/terminal.rs"]
mod terminal;
