use super::{color_stderr, EXIT_DIAGNOSTICS, EXIT_ERROR, EXIT_OK};
use crate::diagnostic;
use crate::error::{read_source, Error};
use std::path::PathBuf;

/// `runbook check`: every file, every diagnostic.
pub fn run(files: &[PathBuf], json: bool) -> Result<u8, Error> {
    let mut unreadable = false;
    let mut with_diagnostics = 0usize;
    let mut report = Vec::new();
    for path in files {
        let name = path.display().to_string();
        let source = match read_source(path) {
            Ok(s) => s,
            Err(e) => {
                unreadable = true;
                if json {
                    report.push(serde_json::json!({"file": name, "error": e.to_string()}));
                } else {
                    eprintln!("error: {e}");
                }
                continue;
            }
        };
        let diagnostics = match crate::compile::check(&source) {
            Ok(_) => continue,
            Err(d) => d,
        };
        with_diagnostics += 1;
        if json {
            report.extend(diagnostics.iter().map(|d| diagnostic::to_json(&name, &source, d)));
        } else {
            eprint!("{}", diagnostic::render(&name, &source, &diagnostics, color_stderr()));
            eprintln!("{name}: {} {}", diagnostics.len(), plural(diagnostics.len(), "error"));
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(report));
    } else if with_diagnostics == 0 && !unreadable {
        println!("{} {} checked, no problems", files.len(), plural(files.len(), "file"));
    }
    Ok(if unreadable {
        EXIT_ERROR
    } else if with_diagnostics > 0 {
        EXIT_DIAGNOSTICS
    } else {
        EXIT_OK
    })
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
