//! Whether an approval can be recorded, and the event that records it. Pure:
//! the driver uses it for a run in progress, `runbook approve` for a run
//! whose process has stopped.

use super::state::{Millis, RunState, StepState};
use super::Event;
use crate::compile::action::Action;
use crate::compile::eval::{eval, Bindings, Value};
use crate::compile::schema::StepKind;
use crate::compile::Plan;
use std::collections::BTreeMap;

/// The event recording `by`'s approval of `step`, or why there is none.
/// Who approves: the name given (`--as`), which the runbook's `approvers`
/// list is checked against, and the account the approval came from (the
/// Unix user of the process that asked, as the system says), recorded
/// beside it so that a name cannot hide who typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    pub name: String,
    pub account: String,
}

/// The longest name `--as` takes.
const LONGEST_NAME: usize = 64;

/// What a name may not hold: line breaks, terminal controls, and the
/// characters that reorder text on screen.
fn unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

pub fn approve(
    plan: &Plan,
    state: &RunState,
    bindings: &Bindings,
    step: &str,
    approver: &Approver,
    at: Millis,
) -> Result<Event, String> {
    let by = approver.name.as_str();
    if by.trim().is_empty() {
        return Err("say who approves with --as NAME".into());
    }
    if by.chars().count() > LONGEST_NAME || by.chars().any(unprintable) {
        return Err(format!(
            "the name given with --as must be one line of printable text of at most {LONGEST_NAME} characters"
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
    if found.kind.id != StepKind::Approve {
        return Err(format!(
            "`{step}` is {}, not an approval",
            found.kind.a_step()
        ));
    }
    let StepState::Running { since, .. } = state.step(found.id) else {
        return Err(format!(
            "`{step}` is not waiting for approval (its state: {})",
            super::state_word(state.step(found.id))
        ));
    };
    if let Some(limit) = found.timeout {
        if at.saturating_sub(*since) > limit.as_millis() as Millis {
            return Err(format!(
                "the time to approve `{step}` ran out (its timeout is {}); `runbook resume` records that it failed",
                crate::compile::eval::format_duration(limit.as_millis() as u64)
            ));
        }
    }
    let approvers = match &found.action {
        Action::Approve(approve) => approve.approvers.as_ref(),
        _ => None,
    };
    if let Some(list) = approvers {
        // Fails closed: a list that cannot be read lets no one approve.
        let allowed: Vec<String> = match eval(&list.expr, bindings, &|_| None) {
            Value::List(names) => names.iter().filter_map(Value::expose).collect(),
            _ => Vec::new(),
        };
        if allowed.is_empty() {
            return Err(format!(
                "no one can approve `{step}`: its approvers could not be worked out"
            ));
        }
        if !allowed.iter().any(|a| a == by) {
            return Err(format!(
                "`{by}` may not approve `{step}`; its approvers are {}",
                allowed.join(", ")
            ));
        }
    }
    let when = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Ok(Event::StepSucceeded {
        step: found.id.0,
        at,
        outputs: BTreeMap::from([
            ("approved_by".to_string(), by.to_string()),
            ("approved_by_account".to_string(), approver.account.clone()),
            ("approved_at".to_string(), when),
        ]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::check;

    fn who(name: &str) -> Approver {
        Approver {
            name: name.into(),
            account: "tester".into(),
        }
    }

    fn waiting(src: &str) -> (Plan, RunState) {
        let plan = check(src).expect("checks");
        let mut state = RunState::new(&plan);
        state.apply(
            &plan,
            &Event::StepStarted {
                step: 0,
                attempt: 1,
                at: 0,
            },
        );
        (plan, state)
    }

    const GATE: &str = "runbook r {\n  approve gate {\n    prompt \"go?\"\n    approvers [\"alice\", \"bob\"]\n  }\n  wait later after gate { duration 1s }\n}\n";

    #[test]
    fn an_approver_on_the_list_approves_a_waiting_step() {
        let (plan, state) = waiting(GATE);
        let event = approve(
            &plan,
            &state,
            &Bindings::default(),
            "gate",
            &who("alice"),
            0,
        )
        .expect("approves");
        assert_eq!(
            event,
            Event::StepSucceeded {
                step: 0,
                at: 0,
                outputs: BTreeMap::from([
                    ("approved_by".into(), "alice".into()),
                    ("approved_by_account".into(), "tester".into()),
                    ("approved_at".into(), "1970-01-01T00:00:00Z".into()),
                ]),
            }
        );
    }

    #[test]
    fn each_refusal_is_one_sentence() {
        let (plan, state) = waiting(GATE);
        let b = Bindings::default();
        let refuse =
            |step: &str, by: &str| approve(&plan, &state, &b, step, &who(by), 0).unwrap_err();
        assert_eq!(
            refuse("gate", "mallory"),
            "`mallory` may not approve `gate`; its approvers are alice, bob"
        );
        assert_eq!(
            refuse("gat", "alice"),
            "the runbook has no step `gat` (did you mean `gate`?)"
        );
        assert_eq!(
            refuse("later", "alice"),
            "`later` is a `wait` step, not an approval"
        );
        assert_eq!(refuse("gate", " "), "say who approves with --as NAME");
        let printable =
            "the name given with --as must be one line of printable text of at most 64 characters";
        assert_eq!(refuse("gate", "alice\n  gate  approved by root"), printable);
        assert_eq!(refuse("gate", "alice\x1b[2J"), printable);
        assert_eq!(refuse("gate", "alice\u{202e}"), printable);
        assert_eq!(refuse("gate", &"a".repeat(65)), printable);
        let fresh = RunState::new(&plan);
        assert_eq!(
            approve(&plan, &fresh, &b, "gate", &who("alice"), 0).unwrap_err(),
            "`gate` is not waiting for approval (its state: pending)"
        );
    }

    #[test]
    fn an_approval_after_the_step_timed_out_is_refused() {
        let src = "runbook r {\n  approve gate {\n    prompt \"go?\"\n    timeout 1m\n  }\n}\n";
        let (plan, state) = waiting(src);
        let b = Bindings::default();
        assert!(approve(&plan, &state, &b, "gate", &who("alice"), 60_000).is_ok());
        assert_eq!(
            approve(&plan, &state, &b, "gate", &who("alice"), 60_001).unwrap_err(),
            "the time to approve `gate` ran out (its timeout is 1m); `runbook resume` records that it failed"
        );
    }
}
