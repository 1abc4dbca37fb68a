//! Every procedure in `workflows/` and every runbook example in the book checks
//! clean, and the workflows are already in canonical layout.

use crate::common::{files_with_extension, root};
use runbook::syntax::{format::format, parse};

#[test]
fn every_workflow_checks_clean_and_is_formatted() {
    let files = files_with_extension(&root().join("workflows"), "runbook");
    assert!(
        files.len() >= 13,
        "expected the 13 procedures, found {}",
        files.len()
    );
    for path in files {
        let source = std::fs::read_to_string(&path).expect("readable");
        let name = path.display().to_string();
        match runbook::compile::check(&source) {
            Err(d) => panic!("{}", runbook::diagnostic::render(&name, &source, &d, false)),
            // Each step is lowered to a typed action of its own kind.
            Ok(plan) => {
                for step in &plan.steps {
                    assert_eq!(step.action.kind(), step.kind.id, "{name}: {}", step.name);
                }
            }
        }
        let parsed = parse(&source).expect("parses");
        assert_eq!(
            format(&parsed, &source),
            source,
            "{name} is not formatted: run `runbook fmt {name}`"
        );
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        assert_eq!(
            parsed.runbook.name.name, stem,
            "{name}: the runbook name should match the file name"
        );
    }
}

/// The ```runbook blocks of a markdown file, with the line each starts on.
fn runbook_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```runbook") => current = Some((i + 1, String::new())),
            Some(_) if fence.starts_with("```") => blocks.extend(current.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The path of a block that is only mdBook's `{{#include PATH}}` line, as
/// the cookbook's pages include the files of `workflows/`.
fn included_path(block: &str) -> Option<&str> {
    let line = block.trim();
    if line.contains('\n') {
        return None;
    }
    line.strip_prefix("{{#include ")?
        .strip_suffix("}}")
        .map(str::trim)
}

#[test]
fn every_runbook_block_in_the_book_checks_clean() {
    let pages = files_with_extension(&root().join("book"), "md");
    let mut count = 0;
    for page in pages {
        let text = std::fs::read_to_string(&page).expect("readable");
        for (line, block) in runbook_blocks(&text) {
            count += 1;
            // A block that only includes a file (the cookbook's pages include
            // `workflows/`) is checked as that file, found from the page's directory.
            let (name, source) = match included_path(&block) {
                Some(path) => {
                    let file = page.parent().expect("a page is in a directory").join(path);
                    let source = std::fs::read_to_string(&file).unwrap_or_else(|e| {
                        panic!(
                            "{}:{line}: the included file {} cannot be read: {e}",
                            page.display(),
                            file.display()
                        )
                    });
                    (file.display().to_string(), source)
                }
                None => (format!("{}:{line}", page.display()), block),
            };
            if let Err(d) = runbook::compile::check(&source) {
                panic!("{}", runbook::diagnostic::render(&name, &source, &d, false));
            }
        }
    }
    assert!(
        count >= 10,
        "the book should have runbook examples; found {count}"
    );
}

#[test]
fn the_block_extractor_finds_blocks() {
    let md = "text\n```runbook\nrunbook a {}\n```\n```text\nno\n```\n";
    assert_eq!(runbook_blocks(md), vec![(2, "runbook a {}\n".to_string())]);
}

#[test]
fn an_include_line_names_its_file() {
    let page = "{{#include ../../../workflows/demo.runbook}}\n";
    let inline = "runbook a {}\n";
    let both = "{{#include a.runbook}}\nrunbook a {}\n";
    assert_eq!(included_path(page), Some("../../../workflows/demo.runbook"));
    assert_eq!(included_path(inline), None);
    assert_eq!(included_path(both), None);
}
