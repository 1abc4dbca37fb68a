use super::{color_stderr, EXIT_DIAGNOSTICS, EXIT_ERROR, EXIT_OK};
use crate::diagnostic;
use crate::error::{read_source, Error};
use std::io::Write;
use std::path::PathBuf;

/// `runbook check`: every file, every diagnostic.
pub fn run(files: &[PathBuf], json: bool) -> Result<u8, Error> {
    let mut unreadable = false;
    let mut with_diagnostics = 0usize;
    let mut out = JsonArray::new(json);
    for path in files {
        let name = path.display().to_string();
        let source = match read_source(path) {
            Ok(s) => s,
            Err(e) => {
                unreadable = true;
                if json {
                    out.push(&serde_json::json!({"file": name, "error": e.to_string()}));
                } else {
                    eprintln!("error: {}", super::view::printable(&e.to_string()));
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
            let lines = diagnostic::LineIndex::new(&source);
            for d in &diagnostics {
                out.push(&diagnostic::to_json(&name, &lines, d));
            }
        } else {
            eprint!(
                "{}",
                diagnostic::render(&name, &source, &diagnostics, color_stderr())
            );
            eprintln!(
                "{name}: {} {}",
                diagnostics.len(),
                plural(diagnostics.len(), "error")
            );
        }
    }
    out.finish();
    if !json && with_diagnostics == 0 && !unreadable {
        println!(
            "{} {} checked, no problems",
            files.len(),
            plural(files.len(), "file")
        );
    }
    Ok(if unreadable {
        EXIT_ERROR
    } else if with_diagnostics > 0 {
        EXIT_DIAGNOSTICS
    } else {
        EXIT_OK
    })
}

/// A JSON array written item by item, so that a file with very many
/// diagnostics is never held twice in memory.
struct JsonArray {
    enabled: bool,
    first: bool,
    out: std::io::BufWriter<std::io::Stdout>,
}

impl JsonArray {
    fn new(enabled: bool) -> Self {
        JsonArray {
            enabled,
            first: true,
            out: std::io::BufWriter::new(std::io::stdout()),
        }
    }

    fn push(&mut self, item: &serde_json::Value) {
        let sep = if self.first { "[" } else { "," };
        self.first = false;
        let _ = write!(self.out, "{sep}{item}");
    }

    fn finish(mut self) {
        if self.enabled {
            let close = if self.first { "[]" } else { "]" };
            let _ = writeln!(self.out, "{close}");
            let _ = self.out.flush();
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}
