//! Runbooks of random shapes for the crash harness: chains, fan-out and
//! fan-in, diamonds and random DAGs, at concurrency 1, 2 or 4, whose steps
//! are `run` steps that ask or rerun after an interruption, `verify` and
//! `wait` steps, steps that fail their first attempt and are retried, and
//! steps whose `when` is true or false.
//!
//! Every step that does work takes an exclusive `flock` on a file of its
//! own for as long as any of its processes lives, and writes "STEP overlap
//! PID" to the ledger when it cannot: two programs of one step alive at
//! once are seen by the programs themselves.

use super::rng::Rng;
use std::fmt::Write;

/// A generated runbook's text. `ledger` and `locks` are its parameters.
pub(crate) fn generate(rng: &mut Rng, index: usize) -> String {
    let mut edges: Vec<Vec<usize>> = Vec::new();
    match rng.below(4) {
        // A chain.
        0 => {
            for i in 0..3 + rng.below(8) as usize {
                edges.push(if i == 0 { vec![] } else { vec![i - 1] });
            }
        }
        // Fan-out from one step, fan-in to another.
        1 => {
            let width = 2 + rng.below(5) as usize;
            edges.push(vec![]);
            for _ in 0..width {
                edges.push(vec![0]);
            }
            edges.push((1..=width).collect());
        }
        // Diamonds, one after another.
        2 => {
            edges.push(vec![]);
            for _ in 0..1 + rng.below(3) {
                let top = edges.len() - 1;
                edges.push(vec![top]);
                edges.push(vec![top]);
                edges.push(vec![top + 1, top + 2]);
            }
        }
        // Any DAG: each step after up to two earlier ones.
        _ => {
            for i in 0..4 + rng.below(9) as usize {
                let mut after = Vec::new();
                for _ in 0..rng.below(3) {
                    if i > 0 {
                        let dep = rng.below(i as u64) as usize;
                        if !after.contains(&dep) {
                            after.push(dep);
                        }
                    }
                }
                edges.push(after);
            }
        }
    }
    let concurrency = [1, 2, 4][rng.below(3) as usize];
    let mut names: Vec<String> = Vec::new();
    let mut body = String::new();
    for (i, after) in edges.iter().enumerate() {
        // What the step is: a `run` that asks (most), one that reruns, a
        // check, a wait, or one whose first attempt fails.
        let (kind, suffix, extra) = match rng.below(10) {
            0..=3 => ("run", "", ""),
            4 | 5 => ("run", "_rr", "    on-interrupt rerun\n"),
            6 => ("verify", "_v", ""),
            7 => ("wait", "_w", ""),
            _ => ("run", "_rt", "    retry 2 every 10ms\n"),
        };
        let name = format!("s{i}{suffix}");
        let deps: Vec<&str> = after.iter().map(|d| names[*d].as_str()).collect();
        let after = if deps.is_empty() {
            String::new()
        } else {
            format!(" after {}", deps.join(", "))
        };
        let _ = writeln!(body, "  {kind} {name}{after} {{");
        if kind == "wait" {
            let _ = writeln!(body, "    duration {}ms", rng.below(20));
        } else {
            let _ = writeln!(body, "{}", ledger_step(&name, suffix == "_rt", rng));
        }
        body.push_str(extra);
        body.push_str("  }\n");
        names.push(name);
    }
    // Leaves with a condition: some run, some are skipped.
    for j in 0..rng.below(3) {
        let on = rng.one_in(2);
        let name = format!("c{j}_{}", if on { "on" } else { "off" });
        let dep = &names[rng.below(names.len() as u64) as usize];
        let mode = if on { "full" } else { "quick" };
        let _ = writeln!(
            body,
            "  run {name} after {dep} when mode == \"{mode}\" {{\n{}\n  }}",
            ledger_step(&name, false, rng)
        );
    }
    format!(
        "# Generated for crash trial {index}.\nrunbook shape_{index} {{\n  param ledger: path\n  param locks: path\n  param mode: string = \"full\"\n\n  concurrency {concurrency}\n\n{body}}}\n"
    )
}

/// The properties of a step that writes its ledger lines, holding its lock
/// while it lives; `fails_once`: its first attempt fails without doing any
/// work (a file in `locks` remembers it did).
fn ledger_step(name: &str, fails_once: bool, rng: &mut Rng) -> String {
    // A quarter of the steps take a while, so that kills find programs
    // alive and resumes find them still running.
    let pause = match rng.below(4) {
        0 => format!("sleep 0.{:02}; ", 1 + rng.below(20)),
        _ => String::new(),
    };
    let first = if fails_once {
        "if [ ! -e \\\"$3/$1.failed-once\\\" ]; then : > \\\"$3/$1.failed-once\\\"; exit 1; fi; "
    } else {
        ""
    };
    format!(
        "    command \"sh\"\n    args [\"-c\", \"{first}exec 9>>\\\"$3/$1.lock\\\"; flock -n 9 || echo \\\"$1 overlap $$\\\" >> \\\"$2\\\"; echo \\\"$1 start $$\\\" >> \\\"$2\\\"; {pause}echo \\\"$1 end $$\\\" >> \\\"$2\\\"\", \"sh\", \"{name}\", \"${{ledger}}\", \"${{locks}}\"]"
    )
}
