use super::*;
use crate::compile::check;

fn who(name: &str) -> Approver {
    Approver {
        name: name.into(),
        account: "tester".into(),
    }
}

/// Nobody is in any group, and the run was started by `carol`.
fn asking() -> Asking<'static> {
    Asking {
        starter: Some("carol"),
        member: &|_, _| false,
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

fn gate(extra: &str) -> String {
    format!("runbook r {{\n  approve gate {{\n    prompt \"go?\"\n{extra}  }}\n  wait later after gate {{ duration 1s }}\n}}\n")
}

fn record(given: Given) -> Vec<Event> {
    match given {
        Given::Record(events) => events,
        Given::Already => panic!("recorded nothing"),
    }
}

/// Records what `approve` gives into `state`.
fn approve_into(plan: &Plan, state: &mut RunState, by: &str, at: Millis) -> Result<Given, String> {
    let given = approve(
        plan,
        state,
        &Bindings::default(),
        "gate",
        &who(by),
        at,
        &asking(),
    )?;
    if let Given::Record(events) = &given {
        for e in events {
            state.apply(plan, e);
        }
    }
    Ok(given)
}

#[test]
fn an_approver_on_the_list_approves_a_waiting_step() {
    let (plan, state) = waiting(&gate("    approvers [\"alice\", \"bob\"]\n"));
    let given = approve(
        &plan,
        &state,
        &Bindings::default(),
        "gate",
        &who("alice"),
        0,
        &asking(),
    );
    assert_eq!(
        record(given.expect("approves")),
        vec![
            Event::Approval {
                step: 0,
                at: 0,
                by: "alice".into(),
                account: "tester".into(),
                verdict: Verdict::Approved,
            },
            Event::StepSucceeded {
                step: 0,
                at: 0,
                outputs: BTreeMap::from([
                    ("approved_by".into(), "alice".into()),
                    ("approved_by_account".into(), "tester".into()),
                    ("approved_at".into(), "1970-01-01T00:00:00Z".into()),
                ]),
            },
        ]
    );
}

#[test]
fn two_approvals_need_two_people_and_the_same_one_twice_counts_once() {
    let (plan, mut state) = waiting(&gate(
        "    approvers [\"alice\", \"bob\", \"carol\"]\n    approvals 2\n",
    ));
    let first = record(approve_into(&plan, &mut state, "alice", 1_000).expect("first"));
    assert_eq!(first.len(), 1, "one approval of two: the step waits on");
    assert!(matches!(state.step(StepId(0)), StepState::Running { .. }));
    assert_eq!(
        approve_into(&plan, &mut state, "alice", 2_000),
        Ok(Given::Already)
    );
    assert_eq!(state.votes[0].len(), 1, "nothing recorded the second time");
    // The starter may not be the second when two are needed.
    assert_eq!(
        approve_into(&plan, &mut state, "carol", 3_000).unwrap_err(),
        "`carol` started this run, and `gate` needs 2 approvals by someone else"
    );
    let second = record(approve_into(&plan, &mut state, "bob", 4_000).expect("second"));
    assert_eq!(second.len(), 2);
    assert_eq!(state.step(StepId(0)), &StepState::Succeeded);
    assert_eq!(state.outputs[0]["approved_by"], "alice, bob");
    assert_eq!(state.outputs[0]["approved_at"], "1970-01-01T00:00:04Z");
}

#[test]
fn the_starter_approves_one_approval_unless_the_runbook_says_no_and_may_always_reject() {
    let (plan, state) = waiting(&gate(""));
    let b = Bindings::default();
    assert!(approve(&plan, &state, &b, "gate", &who("carol"), 0, &asking()).is_ok());
    let (plan, state) = waiting(&gate("    starter-approves no\n"));
    assert_eq!(
        approve(&plan, &state, &b, "gate", &who("carol"), 0, &asking()).unwrap_err(),
        "`carol` started this run, and `gate` needs an approval by someone else"
    );
    let events = reject(
        &plan,
        &state,
        &b,
        "gate",
        &who("carol"),
        "not today",
        0,
        &asking(),
    )
    .expect("the starter may stop their run");
    assert_eq!(
        events[1],
        Event::StepFailed {
            step: 0,
            at: 0,
            error: "rejected by carol: not today".into()
        }
    );
    let (plan, state) = waiting(&gate("    approvals 2\n    starter-approves yes\n"));
    assert!(approve(&plan, &state, &b, "gate", &who("carol"), 0, &asking()).is_ok());
}

#[test]
fn a_member_of_a_listed_group_may_approve_and_others_are_told_who_may() {
    let (plan, state) = waiting(&gate(
        "    approvers [\"alice\"]\n    groups [\"sre\", \"dba\"]\n",
    ));
    let b = Bindings::default();
    let sre = Asking {
        starter: None,
        member: &|user, group| user == "dave" && group == "sre",
    };
    assert!(approve(&plan, &state, &b, "gate", &who("dave"), 0, &sre).is_ok());
    assert_eq!(
        approve(&plan, &state, &b, "gate", &who("erin"), 0, &sre).unwrap_err(),
        "`erin` may not approve `gate`; it may be approved by alice, a member of sre or a member of dba"
    );
    assert_eq!(
        reject(&plan, &state, &b, "gate", &who("erin"), "no", 0, &sre).unwrap_err(),
        "`erin` may not approve `gate`; it may be approved by alice, a member of sre or a member of dba"
    );
}

#[test]
fn a_rejection_needs_a_reason_and_settles_the_step_when_it_is_asked_again() {
    let (plan, mut state) = waiting(&gate("    approvals 2\n"));
    let b = Bindings::default();
    assert_eq!(
        reject(&plan, &state, &b, "gate", &who("bob"), "  ", 0, &asking()).unwrap_err(),
        "say why with --reason TEXT"
    );
    assert_eq!(
        reject(&plan, &state, &b, "gate", &who("bob"), "a\nb", 0, &asking()).unwrap_err(),
        "the reason must be one line of printable text of at most 500 characters"
    );
    record(approve_into(&plan, &mut state, "alice", 0).expect("one"));
    // Only the answer was recorded before a crash: asked again, the step
    // settles as the answers say.
    let events = reject(
        &plan,
        &state,
        &b,
        "gate",
        &who("bob"),
        "the canary is red",
        5,
        &asking(),
    )
    .expect("rejects");
    state.apply(&plan, &events[0]);
    assert_eq!(
        settled(&plan, &state, &b, StepId(0)),
        Some(Err("rejected by bob: the canary is red".into()))
    );
}

#[test]
fn status_is_told_who_approved_and_how_many_more_from_whom() {
    let (plan, mut state) = waiting(&gate(
        "    approvers [\"alice\", \"bob\"]\n    groups [\"sre\"]\n    approvals 2\n",
    ));
    record(approve_into(&plan, &mut state, "alice", 0).expect("one"));
    assert_eq!(
        awaited(&plan, &state, &Bindings::default(), StepId(0)),
        Some(Awaited {
            approved: vec!["alice (Unix user tester)".into()],
            more: 1,
            from: "alice, bob or a member of sre".into(),
            not_starter: true,
            anyone: false,
        })
    );
}

#[test]
fn each_refusal_is_one_sentence() {
    let (plan, state) = waiting(&gate("    approvers [\"alice\", \"bob\"]\n"));
    let b = Bindings::default();
    let refuse = |step: &str, by: &str| {
        approve(&plan, &state, &b, step, &who(by), 0, &asking()).unwrap_err()
    };
    assert_eq!(
        refuse("gate", "mallory"),
        "`mallory` may not approve `gate`; it may be approved by alice or bob"
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
        approve(&plan, &fresh, &b, "gate", &who("alice"), 0, &asking()).unwrap_err(),
        "`gate` is not waiting for approval (its state: pending)"
    );
    let (plan, state) = waiting(&gate("    approvals 0\n"));
    assert_eq!(
        approve(&plan, &state, &b, "gate", &who("alice"), 0, &asking()).unwrap_err(),
        "no one can approve `gate`: its number of approvals is not a whole number from 1"
    );
}

#[test]
fn an_approval_after_the_step_timed_out_is_refused() {
    let (plan, state) = waiting(&gate("    timeout 1m\n"));
    let b = Bindings::default();
    assert!(approve(&plan, &state, &b, "gate", &who("alice"), 60_000, &asking()).is_ok());
    assert_eq!(
        approve(&plan, &state, &b, "gate", &who("alice"), 60_001, &asking()).unwrap_err(),
        "the time to approve `gate` ran out (its timeout is 1m); `runbook resume` records that it failed"
    );
}
