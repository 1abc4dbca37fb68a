//! Notes: what a running step records before it acts, kept for the rest of
//! the run and handed to later attempts and to the steps that undo it.

use super::*;
use crate::engine::*;
use std::sync::Arc;

#[tokio::test(start_paused = true)]
async fn a_note_is_journaled_once_and_handed_to_the_next_attempt_and_to_undo() {
    let plan = plan(concat!(
        "  deploy noting_web {\n    deployment \"web\"\n    image \"web:2\"\n    retry 1\n  }\n",
        "  undo back after noting_web {\n    deploy noting_web\n  }"
    ));
    let journal = MemoryJournal::default();
    let outcome = drive_with(plan, &journal, pretend(10))
        .await
        .expect("drives");
    assert_eq!(outcome, Outcome::Succeeded);
    let events = journal.events(RunId(1)).expect("events");
    let noted: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::StepNoted { .. }))
        .collect();
    assert_eq!(
        noted,
        [&Event::StepNoted {
            step: 0,
            key: "before".into(),
            value: "seen by attempt 1".into(),
        }],
        "noted once, by the first attempt"
    );
    // Recorded before the first attempt's failure, which came after it.
    let at = |want: fn(&Event) -> bool| events.iter().position(want).expect("present");
    assert!(
        at(|e| matches!(e, Event::StepNoted { .. }))
            < at(|e| matches!(e, Event::StepFailed { .. }))
    );
    let outputs = |step: usize| {
        events.iter().find_map(|e| match e {
            Event::StepSucceeded {
                step: s, outputs, ..
            } if *s == step => Some(outputs.clone()),
            _ => None,
        })
    };
    assert_eq!(
        outputs(0).expect("succeeded")["before"],
        "seen by attempt 1"
    );
    assert_eq!(
        outputs(1).expect("undo ran")["undid"],
        "noting_web: seen by attempt 1"
    );
}

#[tokio::test(start_paused = true)]
async fn notes_survive_a_replay_of_the_journal() {
    let plan = plan("  deploy noting_web {\n    deployment \"web\"\n    image \"web:2\"\n  }");
    let journal = MemoryJournal::default();
    let _ = drive_with(Arc::clone(&plan), &journal, pretend(10)).await;
    let state = RunState::replay(&plan, &journal.events(RunId(1)).expect("events"));
    assert_eq!(state.notes[0]["before"], "seen by attempt 1");
    assert!(
        matches!(state.steps[0], StepState::Failed { .. }),
        "a failed step keeps its notes"
    );
}
