fn main() -> std::process::ExitCode {
    // The parser and the compiler recurse; their input limits keep the depth
    // small, and a large stack is a second line of defence against a stack
    // overflow on input nobody thought of.
    let worker = std::thread::Builder::new()
        .stack_size(64 * 1024 * 1024)
        .spawn(runbook::cli::main);
    match worker.map(|w| w.join()) {
        Ok(Ok(code)) => code,
        _ => {
            eprintln!("error: runbook stopped unexpectedly; this is a bug, please report it");
            std::process::ExitCode::from(1)
        }
    }
}
