//! `cargo bench --bench check`: check (parse + compile) of a generated
//! 10,000-step runbook. Prints the median and best wall time of several runs
//! and the process's peak resident memory. Figures go in book/src/performance.md.
//! `BENCH_FILE=PATH` checks that file instead; `BENCH_PHASES=1` first times
//! parsing and compiling apart.
//!
//! This benchmark is why pest is held at 2.7 patch releases (`~2.7.15` in
//! Cargo.toml): from 2.9 pest probes the native stack at every rule call,
//! and `check` of this file took a quarter longer.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot set up stops there

use std::time::{Duration, Instant};

/// A runbook with `steps` steps of mixed kinds; each waits for one or two
/// earlier steps, so the DAG is wide and deep.
pub fn generate(steps: usize) -> String {
    let mut s = String::from("runbook big {\n  about \"generated\"\n  param service: string = \"api\"\n  param db: secret = env(\"DATABASE_URL\")\n  let image = \"reg/${service}:1\"\n\n");
    for i in 0..steps {
        let after = match i {
            0 => String::new(),
            1..=9 => format!(" after s{}", i - 1),
            _ => format!(" after s{}, s{}", i - 1, i / 2),
        };
        let body = match i % 5 {
            0 => "    deployment service\n    image image\n    namespace \"neo-${service}\"\n    timeout 10m\n".to_string(),
            1 => "    http get \"http://${service}.svc/health\"\n    expect status == 200\n    retry 5 every 10s\n".to_string(),
            2 => "    command \"echo\"\n    args [\"step\", service]\n".to_string(),
            3 => "    database db\n    query \"SELECT 1\"\n    expect rows > 0\n".to_string(),
            _ => "    duration 1s\n".to_string(),
        };
        let kind = ["deploy", "verify", "run", "sql", "wait"][i % 5];
        s.push_str(&format!("  {kind} s{i}{after} {{\n{body}  }}\n\n"));
    }
    s.push_str("}\n");
    s
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let steps = std::env::var("BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let runs = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    // BENCH_FILE: a runbook of one's own instead (the resume benchmark's, say).
    let source = match std::env::var_os("BENCH_FILE") {
        Some(path) => std::fs::read_to_string(path).expect("reads BENCH_FILE"),
        None => generate(steps),
    };
    let steps = runbook::compile::check(&source)
        .map(|plan| plan.steps.len())
        .unwrap_or(steps);
    if let Some(path) = std::env::var_os("BENCH_WRITE") {
        // For measuring the binary end to end: `runbook check` on this file.
        std::fs::write(&path, &source).expect("writes the generated runbook");
    }
    if std::env::var_os("BENCH_PHASES").is_some() {
        phases(&source);
    }
    let before = peak_rss_kib();
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let plan = runbook::compile::check(&source);
        let count = match plan {
            Ok(plan) => plan.steps.len(), // the plan is freed here: part of the cost
            Err(d) => panic!("the generated runbook does not check: {:?}", d.first()),
        };
        times.push(start.elapsed());
        assert_eq!(count, steps);
    }
    times.sort();
    let kib = |k: Option<u64>| {
        k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or("unknown".into())
    };
    println!(
        "check of a generated {steps}-step runbook ({} KiB): median {:.1} ms, best {:.1} ms over {runs} runs; peak RSS {} (before: {})",
        source.len() / 1024,
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        kib(peak_rss_kib()),
        kib(before),
    );
}

#[allow(dead_code)]
fn phases(source: &str) {
    let t = Instant::now();
    let parsed = runbook::syntax::parse(source).expect("parses");
    let parse = t.elapsed();
    let t = Instant::now();
    let _ = runbook::compile::compile(parsed.runbook);
    println!(
        "parse {:.1} ms, compile {:.1} ms",
        parse.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );
}
