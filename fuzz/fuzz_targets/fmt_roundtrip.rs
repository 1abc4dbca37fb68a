#![no_main]

use libfuzzer_sys::fuzz_target;
use runbook::syntax::{format::format, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = parse(source) else {
        return;
    };
    let once = format(&parsed, source);
    let reparsed = match parse(&once) {
        Ok(p) => p,
        Err(diagnostics) => panic!(
            "formatted output does not parse\n--- input ---\n{source:?}\n--- formatted ---\n{once:?}\n--- diagnostics ---\n{}",
            runbook::diagnostic::render("formatted.runbook", &once, &diagnostics, false)
        ),
    };
    assert!(
        parsed.runbook.meaning() == reparsed.runbook.meaning(),
        "formatting changed the meaning\n--- input ---\n{source:?}\n--- formatted ---\n{once:?}"
    );
    let twice = format(&reparsed, &once);
    assert_eq!(
        once, twice,
        "format is not idempotent\n--- input ---\n{source:?}"
    );
    assert_eq!(
        parsed.comments.len(),
        reparsed.comments.len(),
        "formatting changed the number of comments\n--- input ---\n{source:?}\n--- formatted ---\n{once:?}"
    );
});
