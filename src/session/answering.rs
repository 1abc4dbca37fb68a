//! Answers to approval steps, as the driver records them: an approval
//! counted (and the step approved once enough people have), a rejection
//! that fails the step, each checked by the pure rules of
//! `engine::approval` against who started the run and who is in which
//! group.

use super::running::Running;
use crate::actions::step::{FailureKind, StepError};
use crate::engine::{approval, Event, Journal, StoreError};

impl<J: Journal + ?Sized> Running<'_, '_, J> {
    pub(super) fn approve(
        &mut self,
        step: &str,
        by: &approval::Approver,
    ) -> Result<Result<super::Approved, String>, StoreError> {
        let asking = approval::Asking {
            starter: self.d.starter.as_deref(),
            member: &crate::store::private::member_of,
        };
        let given = approval::approve(
            &self.d.plan,
            &self.state,
            self.d.bindings,
            step,
            by,
            self.d.clock.now(),
            &asking,
        );
        let events = match given {
            Ok(approval::Given::Record(events)) => events,
            Ok(approval::Given::Already) => {
                return Ok(Ok(self.counted(step, true)));
            }
            Err(why) => return Ok(Err(why)),
        };
        let done = self.record_answer(events)?;
        Ok(Ok(if done {
            super::Approved::ByItsProcess
        } else {
            self.counted(step, false)
        }))
    }

    pub(super) fn reject(
        &mut self,
        step: &str,
        by: &approval::Approver,
        reason: &str,
    ) -> Result<Result<(), String>, StoreError> {
        let asking = approval::Asking {
            starter: self.d.starter.as_deref(),
            member: &crate::store::private::member_of,
        };
        match approval::reject(
            &self.d.plan,
            &self.state,
            self.d.bindings,
            step,
            by,
            reason,
            self.d.clock.now(),
            &asking,
        ) {
            Ok(events) => {
                self.record_answer(events)?;
                Ok(Ok(()))
            }
            Err(why) => Ok(Err(why)),
        }
    }

    /// Records an answer to an approval; when it settles the step, the
    /// step's waiting ends (and a rejection is told as a failure is).
    /// Whether it settled the step.
    fn record_answer(&mut self, events: Vec<Event>) -> Result<bool, StoreError> {
        let mut settled = false;
        for event in events {
            let ended = match &event {
                Event::StepSucceeded { step, .. } => Some((*step, None)),
                Event::StepFailed { step, error, .. } => Some((*step, Some(error.clone()))),
                _ => None,
            };
            if let Some((step, _)) = &ended {
                if let Some(task) = self.tasks.remove(step) {
                    task.abort();
                }
            }
            self.record(event)?;
            if let Some((step, failed)) = ended {
                settled = true;
                if let Some(error) = failed {
                    let failure = StepError::new(FailureKind::Rejected, error).nowhere();
                    (self.d.failed)(step, &failure);
                }
            }
        }
        Ok(settled)
    }

    /// An approval counted, with more to come (`again`: this person's,
    /// given before).
    fn counted(&self, step: &str, again: bool) -> super::Approved {
        let awaited = self
            .d
            .plan
            .step(step)
            .and_then(|s| approval::awaited(&self.d.plan, &self.state, self.d.bindings, s.id));
        let (more, from) = awaited.map(|a| (a.more, a.from)).unwrap_or_default();
        if again {
            super::Approved::YoursAlready { more, from }
        } else {
            super::Approved::Counted { more, from }
        }
    }
}
