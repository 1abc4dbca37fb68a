//! Generated input: the formatter is idempotent and keeps meaning; nothing panics.

use crate::common;
use proptest::prelude::*;
use runbook::syntax::{format::format, parse};

/// The syntax tree without positions: equal values mean equal meaning.
fn shape(source: &str) -> serde_json::Value {
    let parsed = parse(source).unwrap_or_else(|d| panic!("does not parse: {d:?}\n{source}"));
    parsed.runbook.meaning()
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,6}".prop_filter("not a keyword", |s| {
        ![
            "and", "or", "not", "true", "false", "after", "when", "contains", "runbook", "param",
            "let", "on",
        ]
        .contains(&s.as_str())
    })
}

fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        name(),
        "[0-9]{1,4}".prop_map(|s| s),
        "[0-9]{1,3}(ms|s|m|h|d)".prop_map(|s| s),
        "[0-9]{1,2}(\\.[0-9])?%".prop_map(|s| s),
        "[a-z ]{0,8}".prop_map(|s| format!("\"{s}\"")),
        (name(), name()).prop_map(|(a, b)| format!("\"x ${{{a}}} y\\\"{b}\"")),
        (name(), prop_oneof![Just("failed"), Just("succeeded")])
            .prop_map(|(a, f)| format!("{a}.{f}")),
        name().prop_map(|a| format!("env(\"{a}\")")),
        Just("true".to_string()),
        Just("\"\"\"multi\nline ${x}\"\"\"".to_string()),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    atom().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop_oneof![
                    Just("and"),
                    Just("or"),
                    Just("=="),
                    Just("<"),
                    Just("contains")
                ],
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
            inner.clone().prop_map(|a| format!("not ({a})")),
            inner.clone().prop_map(|a| format!("({a})")),
            prop::collection::vec(inner, 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
        ]
    })
}

/// Optional trailing comment and the separator after an item.
fn ending() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\n".to_string()),
        Just("\n\n".to_string()),
        Just("  # note\n".to_string()),
        Just(";".to_string()),
        Just("\n# own line\n".to_string()),
    ]
}

fn property() -> impl Strategy<Value = String> {
    (name(), prop::collection::vec(expr(), 0..3), ending())
        .prop_map(|(n, args, end)| format!("{n} {}{end}", args.join(" ")))
}

fn item() -> impl Strategy<Value = String> {
    prop_oneof![
        (name(), name(), prop::option::of(expr()), ending()).prop_map(|(n, t, d, end)| match d {
            Some(d) => format!("param {n}: {t} = {d}{end}"),
            None => format!("param {n}: {t}{end}"),
        }),
        (name(), expr(), ending()).prop_map(|(n, e, end)| format!("let {n} = {e}{end}")),
        property(),
        (
            name(),
            name(),
            prop::collection::vec(name(), 0..3),
            prop::option::of(expr()),
            prop::collection::vec(property(), 0..4),
            ending()
        )
            .prop_map(|(kind, n, after, when, body, end)| {
                let after = if after.is_empty() {
                    String::new()
                } else {
                    format!(" after {}", after.join(", "))
                };
                let when = when.map(|w| format!(" when {w}")).unwrap_or_default();
                format!("{kind} {n}{after}{when} {{\n{}}}{end}", body.concat())
            }),
    ]
}

fn runbook_source() -> impl Strategy<Value = String> {
    (name(), prop::collection::vec(item(), 0..8))
        .prop_map(|(n, items)| format!("# head\nrunbook {n} {{\n{}}}\n", items.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn fmt_is_idempotent_and_keeps_meaning(source in runbook_source()) {
        let parsed = parse(&source).unwrap_or_else(|d| panic!("{d:?}\n{source}"));
        let once = format(&parsed, &source);
        prop_assert_eq!(shape(&once), shape(&source), "meaning changed:\n{}\n---\n{}", source, once);
        let twice = format(&parse(&once).expect("formatted text parses"), &once);
        prop_assert_eq!(&twice, &once);
        let texts = |p: &runbook::syntax::Parsed| p.comments.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
        prop_assert_eq!(texts(&parse(&once).expect("parses")), texts(&parsed), "comments changed:\n{}\n---\n{}", source, once);
    }

    #[test]
    fn checking_arbitrary_text_never_panics(source in "\\PC{0,300}") {
        let _ = runbook::compile::check(&source);
    }

    #[test]
    fn checking_grammar_shaped_noise_never_panics(
        tokens in prop::collection::vec(prop_oneof![
            Just("runbook"), Just("r"), Just("{"), Just("}"), Just("\n"), Just("deploy"), Just("after"),
            Just("when"), Just("\""), Just("${"), Just("("), Just(")"), Just("["), Just("]"), Just(","),
            Just("10m"), Just("1%"), Just("a.failed"), Just("and"), Just("not"), Just("#"), Just(";"),
            Just("param"), Just(":"), Just("="), Just("rollback-if"), Just("undo"), Just("\"\"\""),
        ], 0..80)
    ) {
        let _ = runbook::compile::check(&tokens.join(" "));
    }

    #[test]
    fn mutated_workflows_never_panic(index in 0usize..13, at in any::<prop::sample::Index>(), cut in 0usize..20, insert in "\\PC{0,5}") {
        let files = common::files_with_extension(&common::root().join("workflows"), "runbook");
        prop_assume!(!files.is_empty());
        let source = std::fs::read_to_string(&files[index % files.len()]).expect("readable");
        let mut chars: Vec<char> = source.chars().collect();
        let pos = at.index(chars.len().max(1)).min(chars.len());
        let end = (pos + cut).min(chars.len());
        chars.splice(pos..end, insert.chars());
        let mutated: String = chars.into_iter().collect();
        let _ = runbook::compile::check(&mutated);
        if let Ok(parsed) = parse(&mutated) {
            let once = format(&parsed, &mutated);
            prop_assert_eq!(shape(&once), shape(&mutated));
            let reparsed = parse(&once).expect("formatted text parses");
            prop_assert_eq!(reparsed.comments.len(), parsed.comments.len(), "a comment was lost");
            prop_assert_eq!(format(&reparsed, &once), once);
        }
    }
}

#[test]
fn every_workflow_survives_fmt_with_its_meaning() {
    for path in common::files_with_extension(&common::root().join("workflows"), "runbook") {
        let source = std::fs::read_to_string(&path).expect("readable");
        let parsed = parse(&source).expect("parses");
        let once = format(&parsed, &source);
        assert_eq!(shape(&once), shape(&source), "{}", path.display());
    }
}
