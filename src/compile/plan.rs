//! The compiled, checked, immutable form of a runbook: what the executor runs.

use super::action::Action;
use super::schema;
use crate::diagnostic::Span;
use crate::syntax::ast::Expr;
use petgraph::graph::{DiGraph, NodeIndex};
use std::time::Duration;

/// Index of a step in `Plan::steps`; also its node in `Plan::graph`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct StepId(pub usize);

impl StepId {
    pub fn node(self) -> NodeIndex {
        NodeIndex::new(self.0)
    }
}

/// Why one step waits for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Edge {
    /// `after`, or a property uses the step's outputs: it must succeed.
    Succeeded,
    /// Named in `when`: it must settle (succeed, fail or be skipped).
    Settled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Type {
    Str,
    Int,
    Float,
    Bool,
    Duration,
    Percent,
    Path,
    Secret,
    List,
    /// Known only at run time (a step output, a JSON field).
    Dynamic,
}

impl Type {
    pub fn from_name(name: &str) -> Option<Type> {
        Some(match name {
            "string" => Type::Str,
            "int" => Type::Int,
            "bool" => Type::Bool,
            "duration" => Type::Duration,
            "path" => Type::Path,
            "secret" => Type::Secret,
            _ => return None,
        })
    }

    pub fn describe(self) -> &'static str {
        match self {
            Type::Str => "a string",
            Type::Int => "an integer",
            Type::Float => "a number",
            Type::Bool => "a boolean",
            Type::Duration => "a duration",
            Type::Percent => "a percentage",
            Type::Path => "a path",
            Type::Secret => "a secret",
            Type::List => "a list",
            Type::Dynamic => "a run-time value",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ParamDef {
    pub name: String,
    pub ty: Type,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LetDef {
    pub name: String,
    pub ty: Type,
    pub value: Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Overlap {
    Skip,
    Queue,
    Cancel,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    pub cron: String,
    /// When it fires, in words ("At 02:00").
    pub description: String,
    pub timezone: String,
    pub window: Option<Duration>,
    pub overlap: Overlap,
    /// `catch-up 6h`: after the scheduler was down, the latest missed fire
    /// starts if it is younger than this. `None`: missed fires only recorded.
    pub catch_up: Option<Duration>,
}

impl Schedule {
    /// The first fire strictly after `after`, by croner's DST rules (see
    /// `schedule::next_fire`). `None` if the expression or zone is bad or
    /// it never fires again.
    pub fn next_fire(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        super::schedule::next_fire(&self.cron, &self.timezone, after)
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    pub about: Option<String>,
    pub concurrency: usize,
    pub timeout: Option<Duration>,
    pub schedule: Option<Schedule>,
    /// The Kubernetes namespace and kubeconfig context of every step that
    /// names none of its own.
    pub namespace: Option<String>,
    pub context: Option<String>,
    /// Periods in which the scheduler starts nothing of this runbook.
    pub blackouts: Vec<super::schedule::Blackout>,
    /// Named locks a run holds from its start to its end, so that runbooks
    /// sharing one (the same database, say) never run at the same time.
    pub locks: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            about: None,
            concurrency: 4,
            timeout: None,
            schedule: None,
            namespace: None,
            context: None,
            blackouts: Vec::new(),
            locks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// The procedure itself.
    Main,
    /// `on failure { ... }`: runs only when the run fails.
    OnFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Interrupt {
    Rerun,
    Ask,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Retry {
    pub attempts: u32,
    pub every: Duration,
    pub backoff: f64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Property {
    pub name: String,
    pub args: Vec<Expr>,
    pub span: Span,
}

/// A step: `A` is its action once lowered (`compile` checks steps as
/// `Step<()>` and lowers them only when nothing was found wrong).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Step<A = Action> {
    pub id: StepId,
    pub name: String,
    #[serde(with = "kind_by_name")]
    pub kind: &'static schema::Kind,
    pub phase: Phase,
    pub when: Option<Expr>,
    /// The properties as written, checked against the kind's schema: for
    /// showing the step (`plan`) and finding every expression it holds.
    /// What the step does is read from `action`.
    pub properties: Vec<Property>,
    pub timeout: Option<Duration>,
    pub retry: Option<Retry>,
    pub on_interrupt: Interrupt,
    /// Deploy steps this step undoes (`undo`).
    pub undoes: Vec<StepId>,
    pub span: Span,
    pub name_span: Span,
    pub action: A,
}

impl<A> Step<A> {
    /// The same step with its action.
    pub(super) fn with_action<B>(self, action: B) -> Step<B> {
        Step {
            id: self.id,
            name: self.name,
            kind: self.kind,
            phase: self.phase,
            when: self.when,
            properties: self.properties,
            timeout: self.timeout,
            retry: self.retry,
            on_interrupt: self.on_interrupt,
            undoes: self.undoes,
            span: self.span,
            name_span: self.name_span,
            action,
        }
    }

    pub fn needs_approval(&self) -> bool {
        self.kind.id == schema::StepKind::Approve
    }

    pub fn changes_systems(&self) -> bool {
        self.kind.changes_systems
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "PlanParts", try_from = "PlanParts")]
pub struct Plan {
    pub name: String,
    pub settings: Settings,
    pub params: Vec<ParamDef>,
    pub lets: Vec<LetDef>,
    pub steps: Vec<Step>,
    /// Nodes are step ids; an edge `a -> b` means b waits for a.
    pub graph: DiGraph<StepId, Edge>,
    /// Per step, the steps it waits for, with why (the graph's incoming
    /// edges, sorted): the executor asks this after every event.
    deps: Vec<Vec<(StepId, Edge)>>,
    /// Step index by name.
    by_name: std::collections::HashMap<String, StepId>,
}

impl Plan {
    pub fn new(
        name: String,
        settings: Settings,
        params: Vec<ParamDef>,
        lets: Vec<LetDef>,
        steps: Vec<Step>,
        graph: DiGraph<StepId, Edge>,
    ) -> Plan {
        let deps = (0..steps.len())
            .map(|i| {
                let mut deps: Vec<(StepId, Edge)> = graph
                    .edges_directed(StepId(i).node(), petgraph::Direction::Incoming)
                    .map(|e| {
                        use petgraph::visit::EdgeRef;
                        (StepId(e.source().index()), *e.weight())
                    })
                    .collect();
                deps.sort_by_key(|(d, _)| *d);
                deps
            })
            .collect();
        let by_name = steps.iter().map(|s| (s.name.clone(), s.id)).collect();
        Plan {
            name,
            settings,
            params,
            lets,
            steps,
            graph,
            deps,
            by_name,
        }
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.by_name.get(name).map(|id| &self.steps[id.0])
    }

    /// The steps `id` waits for, with why.
    pub fn dependencies(&self, id: StepId) -> &[(StepId, Edge)] {
        self.deps.get(id.0).map(Vec::as_slice).unwrap_or_default()
    }

    /// Steps grouped into stages: every step comes after all steps it waits
    /// for, and the steps of one stage can run together. `phase` selects the
    /// procedure or its `on failure` steps.
    pub fn stages(&self, phase: Phase) -> Vec<Vec<StepId>> {
        let order = match petgraph::algo::toposort(&self.graph, None) {
            Ok(order) => order,
            Err(_) => return Vec::new(),
        };
        let mut level = vec![0usize; self.steps.len()];
        for node in &order {
            let here = node.index();
            for dep in self.dependencies(StepId(here)) {
                if self.steps[dep.0 .0].phase == self.steps[here].phase {
                    level[here] = level[here].max(level[dep.0 .0] + 1);
                }
            }
        }
        let mut stages: Vec<Vec<StepId>> = Vec::new();
        for step in self.steps.iter().filter(|s| s.phase == phase) {
            let l = level[step.id.0];
            if stages.len() <= l {
                stages.resize(l + 1, Vec::new());
            }
            stages[l].push(step.id);
        }
        stages.retain(|s| !s.is_empty());
        stages
    }
}

/// A plan as it is kept (`session::kept_plan`): what `Plan::new` is given,
/// the graph as its edges in index order, so that the plan read back is
/// built exactly as the one compiled was. Read back, every step number in
/// it is checked to name a step: a plan file that says otherwise is
/// refused (and compiled again), never indexed out of bounds.
#[derive(serde::Serialize, serde::Deserialize)]
struct PlanParts {
    name: String,
    settings: Settings,
    params: Vec<ParamDef>,
    lets: Vec<LetDef>,
    steps: Vec<Step>,
    edges: Vec<(usize, usize, Edge)>,
}

impl From<Plan> for PlanParts {
    fn from(plan: Plan) -> PlanParts {
        let edges = plan
            .graph
            .raw_edges()
            .iter()
            .map(|e| (e.source().index(), e.target().index(), e.weight))
            .collect();
        PlanParts {
            name: plan.name,
            settings: plan.settings,
            params: plan.params,
            lets: plan.lets,
            steps: plan.steps,
            edges,
        }
    }
}

impl TryFrom<PlanParts> for Plan {
    type Error = &'static str;

    fn try_from(parts: PlanParts) -> Result<Plan, &'static str> {
        let n = parts.steps.len();
        let numbered = parts
            .steps
            .iter()
            .enumerate()
            .all(|(i, step)| step.id.0 == i && step.undoes.iter().all(|undone| undone.0 < n));
        if !numbered
            || parts
                .edges
                .iter()
                .any(|(from, to, _)| *from >= n || *to >= n)
        {
            return Err("a step number that names no step");
        }
        // Node i is step i, as `compile` adds them.
        let mut graph = DiGraph::new();
        for step in &parts.steps {
            graph.add_node(step.id);
        }
        for (from, to, edge) in parts.edges {
            graph.add_edge(NodeIndex::new(from), NodeIndex::new(to), edge);
        }
        Ok(Plan::new(
            parts.name,
            parts.settings,
            parts.params,
            parts.lets,
            parts.steps,
            graph,
        ))
    }
}

/// A step's kind kept by its name, and found again in the schema.
mod kind_by_name {
    use super::schema::{self, Kind};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(kind: &&'static Kind, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_str(kind.name)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<&'static Kind, D::Error> {
        let name = String::deserialize(from)?;
        schema::kind(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("no step kind `{name}`")))
    }
}
