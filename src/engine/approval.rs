//! Whether an answer to an approval step can be recorded, and the events
//! that record it. Pure: the driver uses it for a run in progress,
//! `runbook approve` and `reject` for a run whose process has stopped.
//!
//! The rules are the step's: who may answer (`approvers` users, members of
//! `groups`), how many distinct people must approve (`approvals N`), and
//! whether the person who started the run may (`starter-approves`: by
//! default yes for one approval, no when more are needed). One person's
//! approval counts once; asking again records nothing. One rejection, with
//! its reason, fails the step.

use super::state::{Millis, RunState, StepState, Verdict};
use super::Event;
use crate::compile::action::{Action, Approve};
use crate::compile::eval::{eval, Bindings, Value};
use crate::compile::schema::StepKind;
use crate::compile::{Plan, Step, StepId};
use std::collections::BTreeMap;

/// Who answers: the name that counts (the Unix account, or, where the
/// state directory's holder allows it, the name given with `--as`), and
/// the account the answer came from, as the system names it, recorded
/// beside it so that a name cannot hide who typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    pub name: String,
    pub account: String,
}

/// What the rules need beyond the run: who started it, and who is in which
/// Unix group (asked of the system by the caller).
pub struct Asking<'a> {
    pub starter: Option<&'a str>,
    pub member: &'a dyn Fn(&str, &str) -> bool,
}

/// What an approval does.
#[derive(Debug, Clone, PartialEq)]
pub enum Given {
    /// Events to record: the answer, and the step's end when it completes
    /// the count.
    Record(Vec<Event>),
    /// This person approved the step already: nothing is recorded.
    Already,
}

/// The longest name `--as` takes, and the longest reason for a rejection.
const LONGEST_NAME: usize = 64;
const LONGEST_REASON: usize = 500;

/// What a name may not hold: line breaks, terminal controls, and the
/// characters that reorder text on screen.
fn unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A step's rules, worked out as the run sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    /// Whether anyone may answer (no `approvers`, no `groups`).
    pub anyone: bool,
    pub needed: u32,
    pub starter_may: bool,
}

/// The rules of approval step `approve`; fails closed: a list or a count
/// that cannot be worked out lets no one answer.
pub fn rules(approve: &Approve, bindings: &Bindings) -> Result<Rules, String> {
    let names = |input: &crate::compile::action::Input| -> Result<Vec<String>, ()> {
        match eval(&input.expr, bindings, &|_| None) {
            Value::List(names) => {
                let names: Vec<String> = names.iter().filter_map(Value::expose).collect();
                if names.is_empty() {
                    Err(())
                } else {
                    Ok(names)
                }
            }
            _ => Err(()),
        }
    };
    let users = match &approve.approvers {
        Some(list) => names(list).map_err(|()| "its approvers could not be worked out")?,
        None => Vec::new(),
    };
    let groups = match &approve.groups {
        Some(list) => names(list).map_err(|()| "its groups could not be worked out")?,
        None => Vec::new(),
    };
    let needed = match &approve.approvals {
        Some(count) => match eval(&count.expr, bindings, &|_| None) {
            Value::Int(n) if (1..=1000).contains(&n) => n as u32,
            _ => return Err("its number of approvals is not a whole number from 1".into()),
        },
        None => 1,
    };
    Ok(Rules {
        anyone: approve.approvers.is_none() && approve.groups.is_none(),
        users,
        groups,
        needed,
        starter_may: approve.starter_approves.unwrap_or(needed == 1),
    })
}

impl Rules {
    /// Who may answer, as a phrase: `alice, bob or a member of sre`.
    pub fn who(&self) -> String {
        if self.anyone {
            return "anyone who may steer the run".into();
        }
        let mut parts: Vec<String> = self.users.clone();
        parts.extend(self.groups.iter().map(|g| format!("a member of {g}")));
        match parts.len() {
            1 => parts.remove(0),
            _ => {
                let last = parts.pop().unwrap_or_default();
                format!("{} or {last}", parts.join(", "))
            }
        }
    }

    /// Whether `name` may answer by the lists (the starter rule apart).
    fn lists(&self, name: &str, asking: &Asking) -> bool {
        self.anyone
            || self.users.iter().any(|u| u == name)
            || self.groups.iter().any(|g| (asking.member)(name, g))
    }
}

/// The approval step `step` names, waiting, with its rules: or why an
/// answer to it cannot be recorded now.
fn waiting<'p>(
    plan: &'p Plan,
    state: &RunState,
    bindings: &Bindings,
    step: &str,
    who: &Approver,
    at: Millis,
) -> Result<(&'p Step, Rules), String> {
    let by = who.name.as_str();
    if by.trim().is_empty() {
        return Err("say who approves with --as NAME".into());
    }
    if by.chars().count() > LONGEST_NAME || by.chars().any(unprintable) {
        return Err(format!(
            "the name given with --as must be one line of printable text of at most {LONGEST_NAME} characters"
        ));
    }
    if let Some(from) = &state.imported {
        return Err(format!(
            "this run is a copy imported for review ({from}); it is answered where it runs"
        ));
    }
    if let Some(outcome) = state.finished {
        return Err(format!(
            "the run has finished ({}); there is nothing to approve",
            super::outcome_word(outcome)
        ));
    }
    let Some(found) = plan.step(step) else {
        let names = plan.steps.iter().map(|s| s.name.as_str());
        let hint = crate::compile::names::closest(step, names)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        return Err(format!("the runbook has no step `{step}`{hint}"));
    };
    let Action::Approve(approve) = &found.action else {
        return Err(format!(
            "`{step}` is {}, not an approval",
            found.kind.a_step()
        ));
    };
    let StepState::Running { since, .. } = state.step(found.id) else {
        return Err(format!(
            "`{step}` is not waiting for approval (its state: {})",
            super::state_word(state.step(found.id))
        ));
    };
    if let Some(limit) = found.timeout {
        if at.saturating_sub(*since) > limit.as_millis() as Millis {
            let then = if approve.skip_on_timeout {
                "skipped"
            } else {
                "failed"
            };
            return Err(format!(
                "the time to approve `{step}` ran out (its timeout is {}); `runbook resume` records that it {then}",
                crate::compile::eval::format_duration(limit.as_millis() as u64)
            ));
        }
    }
    let rules =
        rules(approve, bindings).map_err(|why| format!("no one can approve `{step}`: {why}"))?;
    Ok((found, rules))
}

/// Whether `who` may answer `step` by its rules, or why not.
fn may_answer(
    step: &Step,
    rules: &Rules,
    who: &Approver,
    asking: &Asking,
    approving: bool,
) -> Result<(), String> {
    let by = who.name.as_str();
    if !rules.lists(by, asking) {
        return Err(format!(
            "`{by}` may not approve `{}`; it may be approved by {}",
            step.name,
            rules.who()
        ));
    }
    // A rejection stops the starter's own run: always theirs to give.
    if approving && !rules.starter_may && asking.starter == Some(by) {
        return Err(format!(
            "`{by}` started this run, and `{}` needs {} by someone else",
            step.name,
            count(rules.needed)
        ));
    }
    Ok(())
}

fn count(n: u32) -> String {
    if n == 1 {
        "an approval".into()
    } else {
        format!("{n} approvals")
    }
}

/// `who`'s approval of `step`: the events that record it, or `Already`
/// when they approved it before, or why it cannot be given.
pub fn approve(
    plan: &Plan,
    state: &RunState,
    bindings: &Bindings,
    step: &str,
    who: &Approver,
    at: Millis,
    asking: &Asking,
) -> Result<Given, String> {
    let (found, rules) = waiting(plan, state, bindings, step, who, at)?;
    let votes = &state.votes[found.id.0];
    if votes
        .iter()
        .any(|v| v.by == who.name && v.verdict == Verdict::Approved)
    {
        return Ok(Given::Already);
    }
    may_answer(found, &rules, who, asking, true)?;
    let approval = Event::Approval {
        step: found.id.0,
        at,
        by: who.name.clone(),
        account: who.account.clone(),
        verdict: Verdict::Approved,
    };
    let mut events = vec![approval];
    let mut after = state.votes[found.id.0].clone();
    after.push(super::Vote {
        by: who.name.clone(),
        account: who.account.clone(),
        at,
        verdict: Verdict::Approved,
    });
    if let Some(Ok(outputs)) = tally(&after, rules.needed) {
        events.push(Event::StepSucceeded {
            step: found.id.0,
            at,
            outputs,
        });
    }
    Ok(Given::Record(events))
}

/// `who`'s rejection of `step`, with `reason`: the events that record it
/// and fail the step, or why it cannot be given.
#[allow(clippy::too_many_arguments)] // the approval's inputs, each different
pub fn reject(
    plan: &Plan,
    state: &RunState,
    bindings: &Bindings,
    step: &str,
    who: &Approver,
    reason: &str,
    at: Millis,
    asking: &Asking,
) -> Result<Vec<Event>, String> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err("say why with --reason TEXT".into());
    }
    if reason.chars().count() > LONGEST_REASON || reason.chars().any(unprintable) {
        return Err(format!(
            "the reason must be one line of printable text of at most {LONGEST_REASON} characters"
        ));
    }
    let (found, rules) = waiting(plan, state, bindings, step, who, at)?;
    may_answer(found, &rules, who, asking, false)?;
    Ok(vec![
        Event::Approval {
            step: found.id.0,
            at,
            by: who.name.clone(),
            account: who.account.clone(),
            verdict: Verdict::Rejected {
                reason: reason.to_string(),
            },
        },
        Event::StepFailed {
            step: found.id.0,
            at,
            error: rejected(&who.name, reason),
        },
    ])
}

fn rejected(by: &str, reason: &str) -> String {
    format!("rejected by {by}: {reason}")
}

/// How an approval step stands on `votes`: settled (its outputs, or the
/// rejection's sentence) or, while more approvals are needed, `None`.
fn tally(votes: &[super::Vote], needed: u32) -> Option<Result<BTreeMap<String, String>, String>> {
    if let Some(no) = votes.iter().find(|v| v.verdict != Verdict::Approved) {
        let Verdict::Rejected { reason } = &no.verdict else {
            return None;
        };
        return Some(Err(rejected(&no.by, reason)));
    }
    let mut yes: Vec<&super::Vote> = Vec::new();
    for v in votes {
        if !yes.iter().any(|y| y.by == v.by) {
            yes.push(v);
        }
    }
    if (yes.len() as u32) < needed {
        return None;
    }
    let when = yes
        .iter()
        .map(|v| v.at)
        .max()
        .and_then(|at| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at as i64))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let join =
        |f: fn(&super::Vote) -> &str| yes.iter().map(|v| f(v)).collect::<Vec<_>>().join(", ");
    Some(Ok(BTreeMap::from([
        ("approved_by".to_string(), join(|v| &v.by)),
        ("approved_by_account".to_string(), join(|v| &v.account)),
        ("approved_at".to_string(), when),
    ])))
}

/// An approval step asked again (a resume after a crash): settled at once
/// when the answers it had already complete it or reject it.
pub fn settled(
    plan: &Plan,
    state: &RunState,
    bindings: &Bindings,
    step: StepId,
) -> Option<Result<BTreeMap<String, String>, String>> {
    let Action::Approve(approve) = &plan.steps.get(step.0)?.action else {
        return None;
    };
    let needed = rules(approve, bindings).map(|r| r.needed).unwrap_or(1);
    tally(state.votes.get(step.0)?, needed)
}

/// Who has approved a waiting step, and who is still awaited: for `status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Awaited {
    /// The names that approved, each with its account when it differs.
    pub approved: Vec<String>,
    /// How many more approvals are needed.
    pub more: u32,
    /// Who may give them, as a phrase.
    pub from: String,
    /// Whether the run's starter is left out.
    pub not_starter: bool,
    /// Whether anyone who may steer the run may answer (no lists).
    pub anyone: bool,
}

/// What `status` says of approval step `step` while it waits.
pub fn awaited(
    plan: &Plan,
    state: &RunState,
    bindings: &Bindings,
    step: StepId,
) -> Option<Awaited> {
    let found = plan.steps.get(step.0)?;
    if found.kind.id != StepKind::Approve {
        return None;
    }
    let Action::Approve(approve) = &found.action else {
        return None;
    };
    let rules = rules(approve, bindings).ok()?;
    let mut approved: Vec<String> = Vec::new();
    for v in state.votes.get(step.0)? {
        let shown = if v.by == v.account {
            v.by.clone()
        } else {
            format!("{} (Unix user {})", v.by, v.account)
        };
        if v.verdict == Verdict::Approved && !approved.contains(&shown) {
            approved.push(shown);
        }
    }
    Some(Awaited {
        more: rules.needed.saturating_sub(approved.len() as u32),
        approved,
        from: rules.who(),
        not_starter: !rules.starter_may,
        anyone: rules.anyone,
    })
}

#[cfg(test)]
mod tests;
