//! Dependencies go one way: a layer never names a layer above it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's expectation failing is its report

mod common;

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
    "cli",
];

#[test]
fn no_layer_uses_one_above_it() {
    let src = common::root().join("src");
    for (rank, layer) in LAYERS.iter().enumerate() {
        let dir = src.join(layer);
        let mut files = common::files_with_extension(&dir, "rs");
        files.push(src.join(format!("{layer}.rs")));
        for file in files.into_iter().filter(|f| f.exists()) {
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
