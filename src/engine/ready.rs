//! What `decide` needs to know of a run without looking at every step:
//! which steps could start now, how many run, how many of each phase have
//! not settled. Kept up to date as each event is folded in, so that a turn
//! of the driver costs what the event changed instead of a pass over every
//! step (a pass per turn made a run of n steps cost O(n²)). Pure, like the
//! rest of the state: the same events give the same index.

use super::state::StepState;
use crate::compile::{Edge, Phase, Plan};
use std::collections::BTreeSet;
use std::sync::Arc;

/// What the index needs to know of a step's state before it changes.
#[derive(Debug, Clone, Copy)]
pub struct Class {
    settled: bool,
    running: bool,
    succeeded: bool,
}

impl Class {
    pub fn of(state: &StepState) -> Class {
        Class {
            settled: state.settled(),
            running: matches!(state, StepState::Running { .. }),
            succeeded: *state == StepState::Succeeded,
        }
    }
}

/// What never changes in a run: who waits for whom, phases, conditions.
/// Shared by every copy of the index.
#[derive(Debug, PartialEq)]
struct Shape {
    /// Per step: the steps that wait for it, and how.
    dependents: Vec<Vec<(usize, Edge)>>,
    /// Per step: its phase, as an index into `ReadyIndex::unsettled`.
    phase: Vec<u8>,
    /// Per step: whether it has a `when` condition.
    conditional: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadyIndex {
    /// Per step: how many of the steps it waits for have not settled.
    unsettled_deps: Vec<u32>,
    /// Per step: how many of the steps it needs to succeed have not.
    unmet: Vec<u32>,
    /// Pending steps that will start when there is room: every dependency
    /// settled as needed, no condition. `decide` takes as many as there is
    /// room for and need not look at the rest.
    plain: BTreeSet<usize>,
    /// The other steps `decide` must look at on every turn: pending with
    /// every dependency settled, but with a condition to evaluate or a
    /// dependency that failed (to be skipped), and steps waiting to retry.
    examine: BTreeSet<usize>,
    running: usize,
    /// Steps not settled, per phase (`Phase::Main`, `Phase::OnFailure`).
    unsettled: [usize; 2],
    shape: Arc<Shape>,
}

fn phase_index(phase: Phase) -> usize {
    match phase {
        Phase::Main => 0,
        Phase::OnFailure => 1,
    }
}

impl ReadyIndex {
    /// The index of `steps` (in the plan's order), computed whole.
    pub fn new(plan: &Plan, steps: &[StepState]) -> Self {
        let n = plan.steps.len();
        let mut dependents = vec![Vec::new(); n];
        for s in &plan.steps {
            for (dep, why) in plan.dependencies(s.id) {
                if let Some(list) = dependents.get_mut(dep.0) {
                    list.push((s.id.0, *why));
                }
            }
        }
        let shape = Shape {
            dependents,
            phase: plan
                .steps
                .iter()
                .map(|s| phase_index(s.phase) as u8)
                .collect(),
            conditional: plan.steps.iter().map(|s| s.when.is_some()).collect(),
        };
        let mut index = ReadyIndex {
            unsettled_deps: vec![0; n],
            unmet: vec![0; n],
            plain: BTreeSet::new(),
            examine: BTreeSet::new(),
            running: 0,
            unsettled: [0; 2],
            shape: Arc::new(shape),
        };
        let shape = Arc::clone(&index.shape);
        for (i, state) in steps.iter().enumerate().take(n) {
            let class = Class::of(state);
            if !class.settled {
                index.unsettled[usize::from(shape.phase[i])] += 1;
            }
            index.running += usize::from(class.running);
            for &(d, why) in &shape.dependents[i] {
                index.unsettled_deps[d] += u32::from(!class.settled);
                index.unmet[d] += u32::from(why == Edge::Succeeded && !class.succeeded);
            }
        }
        for (i, state) in steps.iter().enumerate().take(n) {
            index.refresh(i, state);
        }
        index
    }

    /// Step `step` changed, from a state of the class `before`; `steps` is
    /// every step's state after the change.
    pub fn changed(&mut self, step: usize, before: Class, steps: &[StepState]) {
        let (Some(after), true) = (steps.get(step), step < self.unsettled_deps.len()) else {
            return;
        };
        let now = Class::of(after);
        match (before.running, now.running) {
            (false, true) => self.running += 1,
            (true, false) => self.running = self.running.saturating_sub(1),
            _ => {}
        }
        if before.settled != now.settled {
            let phase = usize::from(self.shape.phase[step]);
            if now.settled {
                self.unsettled[phase] = self.unsettled[phase].saturating_sub(1);
            } else {
                self.unsettled[phase] += 1;
            }
        }
        if before.settled != now.settled || before.succeeded != now.succeeded {
            let shape = Arc::clone(&self.shape);
            for &(d, why) in &shape.dependents[step] {
                if before.settled != now.settled {
                    self.unsettled_deps[d] = adjust(self.unsettled_deps[d], !now.settled);
                }
                if why == Edge::Succeeded && before.succeeded != now.succeeded {
                    self.unmet[d] = adjust(self.unmet[d], !now.succeeded);
                }
                self.refresh(d, &steps[d]);
            }
        }
        self.refresh(step, after);
    }

    fn refresh(&mut self, step: usize, state: &StepState) {
        let (plain, examine) = match state {
            StepState::Pending if self.unsettled_deps[step] == 0 => {
                let plain = self.unmet[step] == 0 && !self.shape.conditional[step];
                (plain, !plain)
            }
            StepState::Retrying { .. } => (false, true),
            _ => (false, false),
        };
        set(&mut self.plain, step, plain);
        set(&mut self.examine, step, examine);
    }

    /// Steps that will start when there is room, in plan order.
    pub fn plain(&self) -> impl Iterator<Item = usize> + '_ {
        self.plain.iter().copied()
    }

    /// Steps to look at on every turn, in plan order.
    pub fn examine(&self) -> impl Iterator<Item = usize> + '_ {
        self.examine.iter().copied()
    }

    pub fn running(&self) -> usize {
        self.running
    }

    pub fn phase_settled(&self, phase: Phase) -> bool {
        self.unsettled[phase_index(phase)] == 0
    }
}

/// A count one up (`up`) or one down.
fn adjust(count: u32, up: bool) -> u32 {
    if up {
        count + 1
    } else {
        count.saturating_sub(1)
    }
}

fn set(set: &mut BTreeSet<usize>, step: usize, member: bool) {
    if member {
        set.insert(step);
    } else {
        set.remove(&step);
    }
}
