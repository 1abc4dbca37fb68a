//! The driver against an in-memory journal and steps that only pretend.

use super::*;
use crate::engine::*;
use crate::session::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn a_run_goes_to_its_end_with_parallel_steps() {
    let plan = plan(
        "  wait a { duration 1s }\n  wait b { duration 1s }\n  wait c after a, b { duration 1s }",
    );
    let journal = MemoryJournal::default();
    let runner = pretend(1000);
    let started = tokio::time::Instant::now();
    let outcome = drive_with(plan, &journal, Arc::clone(&runner))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(2000),
        "a and b ran together"
    );
    let events = journal.events(RunId(1)).expect("events");
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            outcome: Outcome::Succeeded,
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_step_over_its_timeout_fails() {
    let plan = plan("  wait slow {\n    duration 1s\n    timeout 500ms\n  }");
    let journal = MemoryJournal::default();
    let outcome = drive_with(plan, &journal, pretend(10_000))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::Failed);
    let events = journal.events(RunId(1)).expect("events");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::StepFailed { error, .. } if error == "timed out after 500ms")));
}

#[tokio::test(start_paused = true)]
async fn resume_never_reruns_a_finished_step_and_reruns_a_safe_interrupted_one() {
    let plan = plan("  wait a { duration 1s }\n  wait b after a { duration 1s }");
    let journal = MemoryJournal::default();
    // An earlier process recorded: a finished, b started, then died.
    for event in [
        Event::RunStarted { at: 0 },
        Event::StepStarted {
            step: 0,
            attempt: 1,
            at: 0,
        },
        Event::StepSucceeded {
            step: 0,
            at: 1,
            outputs: BTreeMap::new(),
        },
        Event::StepStarted {
            step: 1,
            attempt: 1,
            at: 2,
        },
    ] {
        journal.append(RunId(1), &event).expect("appends");
    }
    let runner = pretend(10);
    let outcome = drive_with(plan, &journal, Arc::clone(&runner))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(
        *runner.calls.lock().expect("calls"),
        ["b"],
        "a is never run again"
    );
}

#[tokio::test(start_paused = true)]
async fn resume_stops_and_asks_about_an_interrupted_step_that_changes_systems() {
    let plan = plan("  run migrate {\n    command \"./migrate\"\n  }");
    let journal = MemoryJournal::default();
    journal
        .append(RunId(1), &Event::RunStarted { at: 0 })
        .expect("appends");
    journal
        .append(
            RunId(1),
            &Event::StepStarted {
                step: 0,
                attempt: 1,
                at: 0,
            },
        )
        .expect("appends");
    let runner = pretend(10);
    let err = drive_with(plan, &journal, Arc::clone(&runner))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "these steps were interrupted while running and may have done part of their work: migrate; resume with --rerun STEP (run it again), --skip STEP (leave it undone) or --done STEP (you finished it by hand) for each"
    );
    assert!(
        runner.calls.lock().expect("calls").is_empty(),
        "nothing ran"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_rolled_back_through_the_driver() {
    let plan = plan("  wait bad_check { duration 1s }\n  deploy d {\n    deployment \"api\"\n    image \"api:2\"\n  }\n  rollback-if back when bad_check.failed {\n    undo d\n  }");
    let journal = MemoryJournal::default();
    let outcome = drive_with(plan, &journal, pretend(10))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::RolledBack);
}

fn interrupted(journal: &MemoryJournal, step: usize, at: Millis) {
    for event in [
        Event::RunStarted { at: 0 },
        Event::StepStarted {
            step,
            attempt: 1,
            at,
        },
    ] {
        journal.append(RunId(1), &event).expect("appends");
    }
}

#[tokio::test(start_paused = true)]
async fn a_person_decides_about_an_interrupted_step_with_done_skip_or_rerun() {
    let src = "  run migrate {\n    command \"./migrate\"\n  }\n  wait after_it after migrate { duration 1s }";
    for (choices, after_it_runs, migrate_runs) in [
        (
            Choices {
                done: vec!["migrate".into()],
                ..Choices::default()
            },
            true,
            false,
        ),
        (
            Choices {
                skip: vec!["migrate".into()],
                ..Choices::default()
            },
            false,
            false,
        ),
        (
            Choices {
                rerun: vec!["migrate".into()],
                ..Choices::default()
            },
            true,
            true,
        ),
    ] {
        let journal = MemoryJournal::default();
        interrupted(&journal, 0, 0);
        let runner = pretend(10);
        let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let ended = steer(plan(src), &journal, Arc::clone(&runner), &choices, rx)
            .await
            .expect("drives");
        assert_eq!(ended, Ended::Finished(Outcome::Succeeded));
        let calls = runner.calls.lock().expect("calls").clone();
        assert_eq!(
            calls.contains(&"migrate".to_string()),
            migrate_runs,
            "{choices:?}"
        );
        assert_eq!(
            calls.contains(&"after_it".to_string()),
            after_it_runs,
            "{choices:?}"
        );
    }
    let journal = MemoryJournal::default();
    interrupted(&journal, 0, 0);
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let wrong = Choices {
        rerun: vec!["after_it".into()],
        ..Choices::default()
    };
    let err = steer(plan(src), &journal, pretend(10), &wrong, rx)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`after_it` was not interrupted (it is pending); only interrupted steps take --rerun, --skip or --done"
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_wait_continues_to_its_first_deadline() {
    let journal = MemoryJournal::default();
    // The wait of 10s started at 0; the process died; it is now 4s later.
    interrupted(&journal, 0, 0);
    let clock_start = tokio::time::Instant::now();
    let runner = pretend(10_000);
    let plan = plan("  wait settle { duration 10s }");
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ended = steer_at(4_000, plan, &journal, runner, &Choices::default(), rx)
        .await
        .expect("drives");
    assert_eq!(ended, Ended::Finished(Outcome::Succeeded));
    assert_eq!(
        clock_start.elapsed(),
        Duration::from_secs(6),
        "4s had passed already"
    );
}

#[tokio::test(start_paused = true)]
async fn two_approvals_are_counted_per_person_and_one_rejection_fails_the_step() {
    let plan = plan("  approve gate {\n    prompt \"go?\"\n    approvals 2\n  }\n  wait after_gate after gate { duration 1s }");
    let journal = MemoryJournal::default();
    let runner = pretend(10);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let approve = |by: &str| {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let control = Control::Approve {
            step: "gate".into(),
            by: crate::engine::approval::Approver {
                name: by.into(),
                account: by.into(),
            },
            reply,
        };
        (control, answer)
    };
    let (first, first_answer) = approve("alice");
    let (again, again_answer) = approve("alice");
    let (reply, rejected) = tokio::sync::oneshot::channel();
    let reject = Control::Reject {
        step: "gate".into(),
        by: crate::engine::approval::Approver {
            name: "bob".into(),
            account: "bob".into(),
        },
        reason: "the canary is red".into(),
        reply,
    };
    later(&tx, 100, first);
    later(&tx, 200, again);
    later(&tx, 300, reject);
    let ended = steer(plan, &journal, Arc::clone(&runner), &Choices::default(), rx)
        .await
        .expect("drives");
    assert_eq!(ended, Ended::Finished(Outcome::Failed));
    let from = "anyone who may steer the run".to_string();
    assert_eq!(
        first_answer.await.expect("answered"),
        Ok(Approved::Counted {
            more: 1,
            from: from.clone()
        })
    );
    assert_eq!(
        again_answer.await.expect("answered"),
        Ok(Approved::YoursAlready { more: 1, from })
    );
    assert_eq!(rejected.await.expect("answered"), Ok(()));
    let events = journal.events(RunId(1)).expect("events");
    let votes = events
        .iter()
        .filter(|e| matches!(e, Event::Approval { .. }))
        .count();
    assert_eq!(votes, 2, "alice once, bob's rejection once: {events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::StepFailed { error, .. } if error == "rejected by bob: the canary is red")));
    assert!(
        runner.calls.lock().expect("calls").is_empty(),
        "nothing ran after it"
    );
}

#[tokio::test(start_paused = true)]
async fn an_approval_arrives_as_a_control_and_a_wrong_one_is_refused() {
    let plan = plan("  approve gate {\n    prompt \"go?\"\n    approvers [\"alice\"]\n  }\n  wait after_gate after gate { duration 1s }");
    let journal = MemoryJournal::default();
    let runner = pretend(10);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let send = |by: &str| {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let control = Control::Approve {
            step: "gate".into(),
            by: crate::engine::approval::Approver {
                name: by.into(),
                account: "tester".into(),
            },
            reply,
        };
        (control, answer)
    };
    let (to_mallory, mallory) = send("mallory");
    let (to_alice, alice) = send("alice");
    // Once the gate waits.
    later(&tx, 100, to_mallory);
    later(&tx, 100, to_alice);
    let ended = steer(plan, &journal, Arc::clone(&runner), &Choices::default(), rx)
        .await
        .expect("drives");
    assert_eq!(ended, Ended::Finished(Outcome::Succeeded));
    assert_eq!(
        mallory.await.expect("answered"),
        Err("`mallory` may not approve `gate`; it may be approved by alice".into())
    );
    assert_eq!(alice.await.expect("answered"), Ok(Approved::ByItsProcess));
    assert_eq!(
        *runner.calls.lock().expect("calls"),
        ["after_gate"],
        "an approval runs nothing"
    );
    let events = journal.events(RunId(1)).expect("events");
    assert!(events.iter().any(|e| matches!(e, Event::StepSucceeded { step: 0, outputs, .. } if outputs["approved_by"] == "alice")));
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_running_steps_and_starts_nothing_more() {
    let plan = plan("  wait a { duration 1s }\n  wait b after a { duration 1s }");
    let journal = MemoryJournal::default();
    let runner = pretend(60_000);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    later(
        &tx,
        100,
        Control::Cancel {
            reply: None,
            by: None,
        },
    );
    let ended = steer(plan, &journal, Arc::clone(&runner), &Choices::default(), rx)
        .await
        .expect("drives");
    assert_eq!(ended, Ended::Finished(Outcome::Cancelled));
    assert_eq!(*runner.calls.lock().expect("calls"), ["a"]);
    let events = journal.events(RunId(1)).expect("events");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::StepFailed { step: 0, error, .. } if error == "cancelled")));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::StepStarted { step: 1, .. })));
}

#[tokio::test(start_paused = true)]
async fn ctrl_c_lets_running_steps_finish_and_a_second_leaves_them_interrupted() {
    let src = "  run a {\n    command \"true\"\n  }\n  run b after a {\n    command \"true\"\n  }";
    let journal = MemoryJournal::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    later(&tx, 100, Control::Stop);
    let ended = steer(plan(src), &journal, pretend(1000), &Choices::default(), rx)
        .await
        .expect("drives");
    assert_eq!(
        ended,
        Ended::Stopped {
            interrupted: vec![]
        }
    );
    let state = RunState::replay(&plan(src), &journal.events(RunId(1)).expect("events"));
    assert_eq!(
        state.steps[0],
        StepState::Succeeded,
        "a finished and was recorded"
    );
    assert_eq!(state.steps[1], StepState::Pending, "b never started");

    let journal = MemoryJournal::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    later(&tx, 100, Control::Kill);
    let ended = steer(plan(src), &journal, pretend(1000), &Choices::default(), rx)
        .await
        .expect("drives");
    assert_eq!(
        ended,
        Ended::Stopped {
            interrupted: vec!["a".into()]
        }
    );
}

#[tokio::test(start_paused = true)]
async fn the_runbook_timeout_stops_the_procedure_and_runs_on_failure() {
    let plan = plan("  timeout 5s\n  wait long { duration 1m }\n  wait next after long { duration 1s }\n  on failure {\n    wait cleanup { duration 1s }\n  }");
    let journal = MemoryJournal::default();
    let runner = pretend(60_000);
    let started = tokio::time::Instant::now();
    let outcome = drive_with(plan, &journal, Arc::clone(&runner))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::Failed);
    assert_eq!(*runner.calls.lock().expect("calls"), ["long", "cleanup"]);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(5 + 60),
        "long was stopped at 5s, then cleanup took its 60s"
    );
    let events = journal.events(RunId(1)).expect("events");
    assert!(events.iter().any(|e| matches!(e, Event::StepFailed { step: 0, error, .. } if error == "stopped: the runbook's timeout of 5s passed")));
}

#[tokio::test(start_paused = true)]
async fn a_reset_runs_a_step_and_what_follows_again_keeping_the_rest() {
    let src = "  wait a { duration 1s }\n  wait bad_b after a { duration 1s }\n  wait c after bad_b { duration 1s }";
    let journal = MemoryJournal::default();
    let outcome = drive_with(plan(src), &journal, pretend(10))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::Failed);
    journal
        .append(
            RunId(1),
            &Event::Reset {
                steps: vec![1, 2],
                at: 100,
            },
        )
        .expect("appends");
    let runner = pretend(10);
    let outcome = drive_with(plan(src), &journal, Arc::clone(&runner))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::Failed, "bad_b fails again");
    assert_eq!(
        *runner.calls.lock().expect("calls"),
        ["bad_b"],
        "a is kept; c is skipped again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_step_fails_instead_of_hanging_the_run() {
    let plan =
        plan("  wait panicky { duration 1s }\n  wait after_it after panicky { duration 1s }");
    let journal = MemoryJournal::default();
    let outcome = drive_with(plan, &journal, pretend(10))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::Failed);
    let events = journal.events(RunId(1)).expect("events");
    assert!(events.iter().any(|e| matches!(e, Event::StepFailed { step: 0, error, .. }
        if error == "the step stopped unexpectedly: pretended panic; this is a bug in runbook, please report it")));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_stopped_by_its_timeout_keeps_its_log() {
    let plan = plan("  wait slow {\n    duration 1s\n    timeout 500ms\n  }");
    let journal = MemoryJournal::default();
    drive_with(plan, &journal, pretend(10_000))
        .await
        .expect("drives");
    let logs = journal.logs.lock().expect("logs").clone();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].2.lines[0].text, "hello from slow");
}

#[tokio::test(start_paused = true)]
async fn a_command_started_again_gets_its_whole_timeout() {
    let src = "  run migrate {\n    command \"./migrate\"\n    timeout 5s\n  }";
    let journal = MemoryJournal::default();
    // Started at 0, interrupted; resumed 6s later: 4s of work must not time out.
    interrupted(&journal, 0, 0);
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let choices = Choices {
        rerun: vec!["migrate".into()],
        ..Choices::default()
    };
    let ended = steer_at(6_000, plan(src), &journal, pretend(4_000), &choices, rx)
        .await
        .expect("drives");
    assert_eq!(ended, Ended::Finished(Outcome::Succeeded));
}

#[tokio::test(start_paused = true)]
async fn a_run_resumed_after_its_timeout_starts_nothing_more_of_the_procedure() {
    let src = "  timeout 4s\n  run first {\n    command \"true\"\n    on-interrupt rerun\n  }\n  run second after first {\n    command \"true\"\n  }\n  on failure {\n    wait cleanup { duration 1s }\n  }";
    let journal = MemoryJournal::default();
    interrupted(&journal, 0, 0);
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let runner = pretend(10);
    let ended = steer_at(
        5_000,
        plan(src),
        &journal,
        Arc::clone(&runner),
        &Choices::default(),
        rx,
    )
    .await
    .expect("drives");
    assert_eq!(ended, Ended::Finished(Outcome::Failed));
    assert_eq!(*runner.calls.lock().expect("calls"), ["cleanup"]);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_after_a_stop_ends_the_run_cancelled_even_with_an_approval_let_go() {
    let src = "  approve gate {\n    prompt \"go?\"\n  }\n  wait slow { duration 3s }";
    let journal = MemoryJournal::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    later(&tx, 100, Control::Stop);
    let ended = steer(plan(src), &journal, pretend(3000), &Choices::default(), rx)
        .await
        .expect("drives");
    assert_eq!(
        ended,
        Ended::Stopped {
            interrupted: vec!["gate".into(), "slow".into()]
        },
        "the approval and the wait were let go at once"
    );
    // Started again, a cancel comes first: it ends the run.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(Control::Cancel {
        reply: None,
        by: None,
    })
    .expect("sends");
    let ended = steer(plan(src), &journal, pretend(3000), &Choices::default(), rx)
        .await
        .expect("drives");
    assert_eq!(ended, Ended::Finished(Outcome::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn a_run_resumed_after_a_cancel_was_recorded_stops_what_was_interrupted() {
    let src = "  approve gate {\n    prompt \"go?\"\n  }";
    let journal = MemoryJournal::default();
    interrupted(&journal, 0, 0);
    journal
        .append(RunId(1), &Event::CancelRequested { at: 1 })
        .expect("appends");
    let runner = pretend(10);
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ended = steer(
        plan(src),
        &journal,
        Arc::clone(&runner),
        &Choices::default(),
        rx,
    )
    .await
    .expect("drives");
    assert_eq!(ended, Ended::Finished(Outcome::Cancelled));
}

/// Sends `control` after `ms` of the (paused) clock, while the run goes.
fn later(tx: &tokio::sync::mpsc::UnboundedSender<Control>, ms: u64, control: Control) {
    let tx = tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let _ = tx.send(control);
    });
}

#[tokio::test(start_paused = true)]
async fn a_stop_or_cancel_that_came_before_the_first_step_starts_nothing() {
    let src = "  run a {\n    command \"true\"\n  }";
    for control in [
        Control::Stop,
        Control::Cancel {
            reply: None,
            by: None,
        },
    ] {
        let journal = MemoryJournal::default();
        let runner = pretend(10);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(control).expect("sends");
        steer(
            plan(src),
            &journal,
            Arc::clone(&runner),
            &Choices::default(),
            rx,
        )
        .await
        .expect("drives");
        assert!(runner.calls.lock().expect("calls").is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn an_approval_nobody_answers_in_time_is_skipped_with_on_timeout_skip_and_the_branch_runs() {
    let plan = plan("  approve gate {\n    prompt \"go?\"\n    timeout 1m\n    on-timeout skip\n  }\n  wait go_on after gate { duration 1s }\n  wait escalate when gate.skipped { duration 1s }");
    let journal = MemoryJournal::default();
    let runner = pretend(10);
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ended = steer(plan, &journal, Arc::clone(&runner), &Choices::default(), rx)
        .await
        .expect("drives");
    assert_eq!(ended, Ended::Finished(Outcome::Succeeded));
    let events = journal.events(RunId(1)).expect("events");
    let skipped: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepSkipped { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        skipped,
        [
            "no answer in time (timed out after 1m; on-timeout skip)",
            "`gate` did not succeed"
        ]
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::StepSucceeded { step: 2, .. })),
        "the branch ran: {events:?}"
    );
}
