#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(diagnostics) = runbook::compile::check(source) {
        // Rendering must not panic on any diagnostic the checker produces.
        let _ = runbook::diagnostic::render("fuzz.runbook", source, &diagnostics, false);
    }
});
