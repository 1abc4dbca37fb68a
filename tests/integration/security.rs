//! The adversarial suite: what another local user, a hostile server, odd
//! files and odd secrets can do to someone who runs runbook. One test (or
//! more) per finding of the security review (issue 13); each fails on the
//! version before its fix.
//!
//! Attacks that need a second user make one (`runbook-test-other`) and run
//! commands as it with `setpriv`; that needs root, which CI has. Elsewhere
//! they say loudly that they were skipped.

mod containment;
mod files;
mod other_user;
mod secrets;
mod team;
mod terminal;
