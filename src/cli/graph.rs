use super::{load, GraphFormat, EXIT_DIAGNOSTICS, EXIT_OK};
use crate::compile::{Edge, Phase, Plan, StepId};
use crate::error::Error;
use std::fmt::Write;
use std::path::Path;

/// `runbook graph`: the DAG as stages, Graphviz dot, or Mermaid.
pub fn run(path: &Path, format: GraphFormat) -> Result<u8, Error> {
    let Some(plan) = load(path)? else {
        return Ok(EXIT_DIAGNOSTICS);
    };
    let out = match format {
        GraphFormat::Text => text(&plan),
        GraphFormat::Dot => dot(&plan),
        GraphFormat::Mermaid => mermaid(&plan),
    };
    print!("{out}");
    Ok(EXIT_OK)
}

pub fn waits_for(plan: &Plan, id: StepId) -> String {
    let deps = plan.dependencies(id);
    let names = |why: Edge| -> Vec<&str> {
        deps.iter()
            .filter(|(_, w)| *w == why)
            .map(|(d, _)| plan.steps[d.0].name.as_str())
            .collect()
    };
    let mut parts = Vec::new();
    let after = names(Edge::Succeeded);
    if !after.is_empty() {
        parts.push(format!("after {}", after.join(", ")));
    }
    let settled = names(Edge::Settled);
    if !settled.is_empty() {
        parts.push(format!("once {} settled", settled.join(", ")));
    }
    parts.join("; ")
}

/// Stages of steps that can run together, for people.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let main = plan.stages(Phase::Main);
    let count = plan.steps.iter().filter(|s| s.phase == Phase::Main).count();
    let _ = writeln!(
        out,
        "{}: {} in {}",
        plan.name,
        counted(count, "step"),
        counted(main.len(), "stage")
    );
    write_stages(&mut out, plan, &main, "");
    let failure = plan.stages(Phase::OnFailure);
    if !failure.is_empty() {
        let _ = writeln!(out, "\non failure:");
        write_stages(&mut out, plan, &failure, "  ");
    }
    out
}

fn counted(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn write_stages(out: &mut String, plan: &Plan, stages: &[Vec<StepId>], indent: &str) {
    for (i, stage) in stages.iter().enumerate() {
        let _ = writeln!(out, "{indent}stage {}:", i + 1);
        for id in stage {
            let step = &plan.steps[id.0];
            let deps = waits_for(plan, *id);
            let deps = if deps.is_empty() {
                String::new()
            } else {
                format!("  ({deps})")
            };
            let _ = writeln!(out, "{indent}  {} {}{deps}", step.kind.name, step.name);
        }
    }
}

fn dot(plan: &Plan) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n",
        plan.name
    );
    for step in &plan.steps {
        let style = if step.phase == Phase::OnFailure {
            ", style=dashed"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{} {}\"{style}];",
            step.name, step.kind.name, step.name
        );
    }
    for edge in plan.graph.raw_edges() {
        let (from, to) = (
            &plan.steps[edge.source().index()].name,
            &plan.steps[edge.target().index()].name,
        );
        let attrs = match edge.weight {
            Edge::Succeeded => "",
            Edge::Settled => " [style=dashed, label=\"settled\"]",
        };
        let _ = writeln!(out, "  \"{from}\" -> \"{to}\"{attrs};");
    }
    out.push_str("}\n");
    out
}

fn mermaid(plan: &Plan) -> String {
    // Ids get a prefix: Mermaid reserves words such as `end`.
    let mut out = String::from("flowchart TD\n");
    for step in &plan.steps {
        let _ = writeln!(
            out,
            "  s_{}[\"{} {}\"]",
            step.name, step.kind.name, step.name
        );
    }
    for edge in plan.graph.raw_edges() {
        let (from, to) = (
            &plan.steps[edge.source().index()].name,
            &plan.steps[edge.target().index()].name,
        );
        let arrow = match edge.weight {
            Edge::Succeeded => "-->",
            Edge::Settled => "-. settled .->",
        };
        let _ = writeln!(out, "  s_{from} {arrow} s_{to}");
    }
    out
}
