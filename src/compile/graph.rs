//! The DAG: edges from `after`, `when` and references; cycles; steps that can never run.

use super::plan::{Edge, Phase, Step, StepId};
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::ast::{BinaryOp, Expr, ExprKind};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use std::collections::{HashMap, HashSet};

pub fn build<A>(
    steps: &[Step<A>],
    edges: &[(StepId, StepId, Edge)],
    diagnostics: &mut Vec<Diagnostic>,
) -> DiGraph<StepId, Edge> {
    let mut graph = DiGraph::with_capacity(steps.len(), edges.len());
    for step in steps {
        graph.add_node(step.id);
    }
    // One edge per pair; `Succeeded` is the stronger requirement and wins.
    let mut strongest: HashMap<(StepId, StepId), Edge> = HashMap::new();
    for (from, to, why) in edges {
        let entry = strongest.entry((*from, *to)).or_insert(*why);
        if *why == Edge::Succeeded {
            *entry = Edge::Succeeded;
        }
    }
    let mut pairs: Vec<_> = strongest.into_iter().collect();
    pairs.sort_by_key(|((f, t), _)| (*f, *t));
    for ((from, to), why) in pairs {
        if from.0 < steps.len() && to.0 < steps.len() {
            graph.add_edge(from.node(), to.node(), why);
        }
    }
    cycles(steps, &graph, diagnostics);
    graph
}

fn cycles<A>(steps: &[Step<A>], graph: &DiGraph<StepId, Edge>, diagnostics: &mut Vec<Diagnostic>) {
    for scc in petgraph::algo::tarjan_scc(graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let members: HashSet<_> = scc.iter().copied().collect();
        let start = scc.iter().copied().min().unwrap_or(scc[0]);
        let path = shortest_cycle(graph, &members, start);
        let names: Vec<&str> = path
            .iter()
            .map(|n| steps[n.index()].name.as_str())
            .collect();
        let mut shown = names.clone();
        shown.push(names[0]);
        let mut d = Diagnostic::new(
            Code::Cycle,
            format!(
                "dependency cycle: {} (each waits for the next)",
                shown.join(" → ")
            ),
        );
        for (i, n) in path.iter().enumerate() {
            let waits_for = names[(i + 1) % names.len()];
            d = d.label(
                steps[n.index()].name_span,
                format!("waits for `{waits_for}`"),
            );
        }
        diagnostics.push(
            d.help("every step in the cycle waits for another; remove one of these dependencies"),
        );
    }
}

/// The shortest real cycle through `start` along "waits for" links (edges
/// backwards), found breadth-first inside its strongly connected component.
fn shortest_cycle(
    graph: &DiGraph<StepId, Edge>,
    members: &HashSet<NodeIndex>,
    start: NodeIndex,
) -> Vec<NodeIndex> {
    let waits_for = |n: NodeIndex| {
        let mut next: Vec<NodeIndex> = graph
            .edges_directed(n, petgraph::Direction::Incoming)
            .map(|e| e.source())
            .filter(|m| members.contains(m))
            .collect();
        next.sort();
        next
    };
    let mut came_from: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for next in waits_for(at) {
            if next == start {
                let mut path = vec![at];
                while let Some(prev) = came_from.get(path.last().unwrap_or(&start)) {
                    path.push(*prev);
                }
                path.reverse();
                return path;
            }
            if !came_from.contains_key(&next) && next != start {
                came_from.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    vec![start]
}

/// Steps that can never run: a condition that is always false, `after X`
/// with a condition that needs X to fail, or waiting for a step that never runs.
pub fn unreachable<A>(
    steps: &[Step<A>],
    graph: &DiGraph<StepId, Edge>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let Ok(order) = petgraph::algo::toposort(graph, None) else {
        return;
    };
    let mut never: HashSet<StepId> = HashSet::new();
    for node in order {
        let step = &steps[node.index()];
        let required: Vec<StepId> = graph
            .edges_directed(node, petgraph::Direction::Incoming)
            .filter(|e| *e.weight() == Edge::Succeeded)
            .map(|e| StepId(e.source().index()))
            .collect();
        let reason = if let Some(dep) = required.iter().find(|d| never.contains(d)) {
            Some((
                format!("it waits for `{}`, which never runs", steps[dep.0].name),
                "fix that step first".to_string(),
            ))
        } else if let Some(dep) = required
            .iter()
            .find(|d| step.phase == Phase::Main && steps[d.0].phase == Phase::OnFailure)
        {
            Some((
                format!(
                    "`{}` runs only after the procedure has failed",
                    steps[dep.0].name
                ),
                "move this step into `on failure`, or stop waiting for that step".to_string(),
            ))
        } else if step.when.as_ref().is_some_and(always_false) {
            Some((
                "its condition is always false".to_string(),
                "remove the step, or fix its `when`".to_string(),
            ))
        } else {
            let needs_failure = step
                .when
                .as_ref()
                .map(requires_not_succeeded)
                .unwrap_or_default();
            required.iter().find(|d| needs_failure.contains(&steps[d.0].name)).map(|d| {
                let name = &steps[d.0].name;
                (
                    format!("it needs `{name}` to succeed (`after`, or using its outputs), but its condition needs `{name}` to fail or be skipped"),
                    format!("to react to a failure of `{name}`, name it in `when` only: not in `after`, and do not use its outputs"),
                )
            })
        };
        if let Some((reason, help)) = reason {
            never.insert(step.id);
            diagnostics.push(
                Diagnostic::new(
                    Code::Unreachable,
                    format!("the step `{}` can never run", step.name),
                )
                .label(step.name_span, reason)
                .help(help),
            );
        }
    }
}

fn always_false(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Bool(b) => !b,
        ExprKind::Not(inner) => matches!(inner.kind, ExprKind::Bool(true)),
        ExprKind::Binary {
            op: BinaryOp::And,
            lhs,
            rhs,
        } => always_false(lhs) || always_false(rhs),
        ExprKind::Binary {
            op: BinaryOp::Or,
            lhs,
            rhs,
        } => always_false(lhs) && always_false(rhs),
        _ => false,
    }
}

/// Steps that must have failed or been skipped for `e` to hold (top-level `and` only).
fn requires_not_succeeded(e: &Expr) -> Vec<String> {
    match &e.kind {
        ExprKind::Binary {
            op: BinaryOp::And,
            lhs,
            rhs,
        } => {
            let mut names = requires_not_succeeded(lhs);
            names.extend(requires_not_succeeded(rhs));
            names
        }
        ExprKind::Path(parts)
            if parts.len() == 2 && matches!(parts[1].name.as_str(), "failed" | "skipped") =>
        {
            vec![parts[0].name.clone()]
        }
        ExprKind::Not(inner) => match &inner.kind {
            ExprKind::Path(parts) if parts.len() == 2 && parts[1].name == "succeeded" => {
                vec![parts[0].name.clone()]
            }
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}
