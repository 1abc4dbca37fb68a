//! Dependencies go one way: a layer never names a layer above it.

use crate::common;
/// Lowest first; a module may use only those before it in this list.
const LAYERS: &[&str] = &[
    "diagnostic",
    "syntax",
    "error",
    "compile",
    "engine",
    "scheduler",
    "store",
    "actions",
    "session",
    "serve",
    "cli",
];

/// The core that knows no I/O: what it decides depends on its inputs only,
/// so it is tested event by event without a runtime, a clock or a disk.
const PURE: &[&str] = &["diagnostic", "syntax", "compile", "engine", "scheduler"];

/// What the pure core never names: a runtime, the file system, the
/// environment, other processes, the clock.
const IMPURE: &[&str] = &[
    "tokio",
    "std::fs",
    "std::env",
    "std::process",
    "SystemTime::now",
    "Instant::now",
];

/// The source files of a layer: its folder's and its own `LAYER.rs`.
fn layer_files(src: &std::path::Path, layer: &str) -> Vec<std::path::PathBuf> {
    let mut files = common::files_with_extension(&src.join(layer), "rs");
    files.push(src.join(format!("{layer}.rs")));
    files.retain(|f| f.exists());
    files
}

#[test]
fn no_layer_uses_one_above_it() {
    let src = common::root().join("src");
    for (rank, layer) in LAYERS.iter().enumerate() {
        for file in layer_files(&src, layer) {
            let text = std::fs::read_to_string(&file).expect("readable");
            for higher in &LAYERS[rank + 1..] {
                assert!(
                    !text.contains(&format!("crate::{higher}")),
                    "{} uses `{higher}`, a layer above `{layer}`",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn the_pure_core_does_no_io_and_reads_no_clock() {
    let src = common::root().join("src");
    let mut read = 0;
    for layer in PURE {
        for file in layer_files(&src, layer) {
            read += 1;
            let text = std::fs::read_to_string(&file).expect("readable");
            for (n, line) in text.lines().enumerate() {
                // Comments may say what the core does not do.
                let code = line.split("//").next().unwrap_or("");
                for name in IMPURE {
                    assert!(
                        !code.contains(name),
                        "{}:{}: the pure `{layer}` names `{name}`: {}",
                        file.display(),
                        n + 1,
                        line.trim()
                    );
                }
            }
        }
    }
    assert!(read > 20, "only {read} files of the pure core were found");
}

/// Inside `actions`, the step adapters (`steps/`) use the protocol clients
/// beside them, never the other way: a client knows nothing of steps.
#[test]
fn no_protocol_client_names_the_step_adapters() {
    let actions = common::root().join("src/actions");
    let steps = actions.join("steps");
    let clients: Vec<_> = common::files_with_extension(&actions, "rs")
        .into_iter()
        .filter(|f| !f.starts_with(&steps) && !f.ends_with("actions/mod.rs"))
        .collect();
    assert!(
        clients.len() > 15,
        "only {} client files were found",
        clients.len()
    );
    for file in clients {
        let text = std::fs::read_to_string(&file).expect("readable");
        for name in ["actions::steps", "super::steps", "super::super::steps"] {
            assert!(
                !text.contains(name),
                "{} names `{name}`: a protocol client uses no step adapter",
                file.display()
            );
        }
    }
}

/// Above `store`, runs and schedules are kept behind its interface
/// (`RunStore`, `ScheduleStore`): no code there names the embedded store.
#[test]
fn nothing_above_the_store_names_sled() {
    let src = common::root().join("src");
    let above = ["actions", "session", "serve", "cli"];
    let mut read = 0;
    for layer in above {
        for file in common::files_with_extension(&src.join(layer), "rs") {
            read += 1;
            let text = std::fs::read_to_string(&file).expect("readable");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                assert!(
                    !code.contains("sled") && !code.contains("Sled"),
                    "{}:{}: names sled above the store: {}",
                    file.display(),
                    n + 1,
                    line.trim()
                );
            }
        }
    }
    assert!(read > 40, "only {read} files above the store were found");
}

#[test]
fn nothing_below_the_cli_prints() {
    let src = common::root().join("src");
    let mut found = Vec::new();
    for layer in LAYERS.iter().filter(|l| **l != "cli") {
        // Tests say what they skipped; that is theirs to print.
        let files = layer_files(&src, layer).into_iter().filter(|f| {
            !f.ends_with("tests.rs") && !f.components().any(|c| c.as_os_str() == "tests")
        });
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if ["println!(", "eprintln!(", "print!(", "dbg!("]
                    .iter()
                    .any(|m| code.contains(m))
                {
                    found.push(format!("{}:{}", file.display(), n + 1));
                }
            }
        }
    }
    // The one exception: the last words of a process that could not close
    // in time (`session::leave_within`), when no sink can be trusted.
    assert_eq!(found.len(), 1, "printing below the cli: {found:#?}");
    assert!(found[0].contains("session/run.rs"), "{found:?}");
}

/// Where runbook itself may be `unsafe` or call libc's functions, and why:
/// everywhere else, the system is reached through safe functions (rustix,
/// std, tokio).
const UNSAFE_ALLOWED: &[(&str, &str)] = &[
    (
        "actions/spawn.rs",
        "a program starts with a raw clone(2) (CLONE_VM | CLONE_VFORK), whose child may only make async-signal-safe calls; rustix offers no clone",
    ),
    (
        "actions/spawn/clone3.rs",
        "a program in a cgroup starts with a raw clone3(2) (CLONE_INTO_CGROUP), in a few instructions of assembly: no C library wraps it, and with CLONE_VM the new process must run on its own stack",
    ),
    (
        "actions/child.rs",
        "tokio's AsyncFd::register_with_interest on the pidfd is an unsafe function",
    ),
    (
        "session/run.rs",
        "_exit on the way out of a process that could not close in time",
    ),
    (
        "store/locks.rs",
        "open file description locks (F_OFD_*), which rustix's fcntl_lock does not take",
    ),
    (
        "store/accounts.rs",
        "user and group names (getpwuid_r, getpwnam_r, getgrgid_r, getgrnam_r): the C library's lookups, which rustix does not make",
    ),
    (
        "store/sled_store.rs",
        "a failed sled Db is never dropped (ManuallyDrop): its drop would flush into a full disk for ever",
    ),
];

#[test]
fn unsafe_code_stays_where_it_is_needed() {
    // The compiler refuses `unsafe` (and so any call into libc) wherever
    // `unsafe_code` is not allowed (Cargo.toml's `[lints.rust]`); here, the
    // allowances are held to the list above.
    let src = common::root().join("src");
    let mut allowing = Vec::new();
    for file in common::files_with_extension(&src, "rs") {
        let relative = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .into_owned();
        if relative.ends_with("tests.rs") || relative.contains("/tests/") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable");
        if text.contains("allow(unsafe_code)") {
            allowing.push(relative);
        }
    }
    allowing.sort();
    let mut listed: Vec<String> = UNSAFE_ALLOWED.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(
        allowing, listed,
        "the modules that allow unsafe code are not the ones listed with a reason"
    );
    let manifest = std::fs::read_to_string(common::root().join("Cargo.toml")).expect("readable");
    assert!(
        manifest.contains("unsafe_code = \"deny\""),
        "Cargo.toml no longer denies unsafe code"
    );
}
