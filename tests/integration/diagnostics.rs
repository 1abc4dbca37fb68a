//! Every diagnostic, rendered as a person sees it (no colour, fixed width).

use runbook::diagnostic::{render, Code};

/// (snapshot name, the code it must produce, source)
const CASES: &[(&str, Code, &str)] = &[
    ("syntax", Code::Syntax, "runbook r {\n  deploy d {\n    image \"x\n  }\n}\n"),
    ("unknown_kind", Code::UnknownKind, "runbook r {\n  deplyo d {}\n}\n"),
    (
        "duplicate_step",
        Code::DuplicateStep,
        "runbook r {\n  wait pause { duration 1s }\n  wait pause { duration 2s }\n}\n",
    ),
    (
        "unknown_step_after",
        Code::UnknownStep,
        "runbook r {\n  wait staging { duration 1s }\n  wait check after stagin { duration 1s }\n}\n",
    ),
    (
        "unknown_step_expression",
        Code::UnknownStep,
        "runbook r {\n  wait staging { duration 1s }\n  wait check when stagng.failed { duration 1s }\n}\n",
    ),
    (
        "cycle",
        Code::Cycle,
        "runbook r {\n  wait a after c { duration 1s }\n  wait b after a { duration 1s }\n  wait c after b { duration 1s }\n}\n",
    ),
    (
        "unknown_property",
        Code::UnknownProperty,
        "runbook r {\n  deploy d {\n    deployment \"api\"\n    imag \"api:1\"\n    image \"api:1\"\n  }\n}\n",
    ),
    ("missing_property", Code::MissingProperty, "runbook r {\n  deploy d {\n    deployment \"api\"\n  }\n}\n"),
    (
        "duplicate_property",
        Code::DuplicateProperty,
        "runbook r {\n  wait w {\n    duration 1s\n    duration 2s\n  }\n}\n",
    ),
    ("type_mismatch", Code::TypeMismatch, "runbook r {\n  wait w {\n    duration 1s\n    timeout \"ten\"\n  }\n}\n"),
    (
        "undefined_name",
        Code::UndefinedName,
        "runbook r {\n  param service: string\n  deploy d {\n    deployment servce\n    image \"api:1\"\n  }\n}\n",
    ),
    (
        "undo_not_deploy",
        Code::UndoNotDeploy,
        "runbook r {\n  wait w { duration 1s }\n  rollback-if back when w.failed {\n    undo w\n  }\n}\n",
    ),
    (
        "unreachable",
        Code::Unreachable,
        "runbook r {\n  wait w { duration 1s }\n  wait never after w when w.failed { duration 1s }\n}\n",
    ),
    (
        "rollback_names_no_step",
        Code::RollbackNamesNoStep,
        "runbook r {\n  param go: bool = true\n  deploy d {\n    deployment \"api\"\n    image \"api:2\"\n  }\n  rollback-if back when go {\n    undo d\n  }\n}\n",
    ),
    (
        "rollback_without_when",
        Code::RollbackWithoutWhen,
        "runbook r {\n  deploy d {\n    deployment \"api\"\n    image \"api:2\"\n  }\n  rollback-if back {\n    undo d\n  }\n}\n",
    ),
    (
        "wrong_arguments",
        Code::WrongArguments,
        "runbook r {\n  run dns { command \"./switch-dns.sh\" args [\"dr\"] }\n}\n",
    ),
    ("unknown_setting", Code::UnknownSetting, "runbook r {\n  concurency 2\n}\n"),
    (
        "duplicate_name",
        Code::DuplicateName,
        "runbook r {\n  param tag: string\n  let tag = \"latest\"\n}\n",
    ),
    ("unknown_type", Code::UnknownType, "runbook r {\n  param replicas: integer\n}\n"),
    (
        "secret_literal",
        Code::SecretLiteral,
        "runbook r {\n  param db: secret = \"postgres://neo:hunter2@db/neo\"\n}\n",
    ),
    ("invalid_value", Code::InvalidValue, "runbook r {\n  concurrency 0\n}\n"),
    (
        "conflict",
        Code::Conflict,
        "runbook r {\n  verify v {\n    http get \"http://localhost/health\"\n    command \"true\"\n  }\n}\n",
    ),
    (
        "unknown_field",
        Code::UnknownField,
        "runbook r {\n  wait w { duration 1s }\n  wait x when w.faild { duration 1s }\n}\n",
    ),
    ("unknown_function", Code::UnknownFunction, "runbook r {\n  param db: secret = envv(\"DB\")\n}\n"),
    // The scheduler's settings: more cases of RB020.
    (
        "window_longer_than_the_time_between_fires",
        Code::InvalidValue,
        "runbook r {\n  schedule \"*/30 * * * *\" window 2h\n}\n",
    ),
    (
        "blackout_until_not_after_its_start",
        Code::InvalidValue,
        "runbook r {\n  blackout \"2026-12-24\" until \"2026-12-20\"\n}\n",
    ),
    (
        "blackout_from_a_time_without_until",
        Code::InvalidValue,
        "runbook r {\n  blackout \"2026-12-24 18:00\"\n}\n",
    ),
    (
        "blackout_cron_without_for",
        Code::InvalidValue,
        "runbook r {\n  blackout \"0 17 * * FRI\"\n}\n",
    ),
    ("lock_name", Code::InvalidValue, "runbook r {\n  lock \"neo/db\"\n}\n"),
];

fn diagnose(source: &str) -> Vec<runbook::diagnostic::Diagnostic> {
    match runbook::compile::check(source) {
        Ok(_) => Vec::new(),
        Err(d) => d,
    }
}

#[test]
fn every_diagnostic_renders_as_its_snapshot() {
    for (name, code, source) in CASES {
        let diagnostics = diagnose(source);
        assert!(
            diagnostics.iter().any(|d| d.code == *code),
            "{name}: expected {} in {diagnostics:#?}",
            code.id()
        );
        let text = render(&format!("{name}.runbook"), source, &diagnostics, false);
        insta::assert_snapshot!(*name, text);
    }
}

#[test]
fn every_code_has_a_case() {
    for code in Code::ALL {
        assert!(
            CASES.iter().any(|(_, c, _)| *c == code),
            "{} has no snapshot case",
            code.id()
        );
    }
}

#[test]
fn one_check_reports_every_syntax_error() {
    let source = "runbook r {\n  deploy staging {\n    deployment \"api\"\n    image \"api:1\n  }\n  verify staging-health after staging {\n    http get \"http://api/health\"\n  }\n  wait w { duration 1s } wait x { duration 2s }\n}\n";
    let diagnostics = diagnose(source);
    assert_eq!(diagnostics.len(), 3, "{diagnostics:#?}");
    insta::assert_snapshot!(
        "several_syntax_errors",
        render("several.runbook", source, &diagnostics, false)
    );
}

#[test]
fn one_check_reports_every_mistake() {
    let source = "runbook r {\n  param t: strin\n  deplyo a {}\n  wait b after nope { duration 1s }\n  wait c { duration \"x\" }\n}\n";
    let codes: Vec<String> = diagnose(source).iter().map(|d| d.code.id()).collect();
    assert_eq!(codes, ["RB018", "RB002", "RB004", "RB009"]);
}

#[test]
fn diagnostics_never_show_a_secret_value() {
    let source = "runbook r {\n  param db: secret = env(\"DB\")\n  run r {\n    command \"psql\"\n    args [db]\n  }\n}\n";
    let d = diagnose(source);
    assert!(d
        .iter()
        .any(|d| d.message.contains("secret cannot be a command argument")));
}

/// Mistakes found in review, each with the message it must get: (runbook body, code, message).
const MISTAKES: &[(&str, &str, &str)] = &[
        ("  param b: int = 2\n  wait w {\n    duration 1s\n    retry 3 every 10s backoff b\n  }\n", "RB020", "`backoff` must be written as a literal"),
        ("  wait w {\n    duration 1s\n    retry 3 every 0s backoff 11\n  }\n", "RB020", "`every` must be longer than zero"),
        ("  wait w {\n    duration 1s\n    retry 3 every 0s backoff 11\n  }\n", "RB020", "`backoff` must be between 1 and 10"),
        ("  schedule \"0 2 * * *\" window 0s\n", "RB020", "`window` must be longer than zero"),
        ("  deploy d {\n    deployment \"api\"\n    image \"api:2\"\n  }\n  rollback-if back when d.failed {\n    scale \"api\" to -5\n  }\n", "RB020", "`scale` must be between 0 and 10000"),
        ("  on failure {\n    wait a { duration 1s }\n  }\n  on failure {\n    wait b { duration 1s }\n  }\n", "RB008", "`on failure` is given twice"),
        ("  param service: string = \"api\"\n  restart service {\n    deployment \"api\"\n  }\n", "RB017", "`service` is both a step and a parameter or `let`"),
        ("  deploy d {\n    deployment \"api\"\n    image \"api:2\"\n  }\n  rollback-if back when d.failed {\n    undo d\n  }\n  undo u {\n    deploy back\n  }\n", "RB011", "`back` is a `rollback-if` step"),
        ("  approve a {\n    prompt \"ok?\"\n  }\n  undo u {\n    deploy a\n  }\n", "RB011", "`a` is an `approve` step"),
        ("  param a: int = 1\n  wait w when a < 2 < 3 {\n    duration 1s\n  }\n", "RB009", "comparisons do not chain"),
        ("  notify n {\n    webhook env (\"X\")\n    message \"m\"\n  }\n", "RB010", "`env` is a function"),
        ("  wait w { duration 1s }\n  wait x when w.failed.now { duration 1s }\n", "RB022", "`w.failed` is a boolean and has no fields"),
        ("  verify staging-health {\n    command \"true\"\n  }\n", "RB001", "names cannot contain `-`"),
        ("  verify when {\n    command \"true\"\n  }\n", "RB001", "`when` is a reserved word"),
        ("  let x = true and \\\n    false\n", "RB001", "`\\` does not continue a line"),
        ("  param a: int param b: int\n", "RB001", "expected a new line"),
        ("  let n = 99999999999999999999\n", "RB020", "is too large"),
        ("  let d = 99999999999999999999d\n", "RB020", "is too long"),
        ("  let l = [[1]]\n", "RB009", "lists cannot be nested"),
        ("  let c = 5m < \"x\"\n", "RB009", "cannot compare a duration with a string"),
        ("  let e = env(5)\n", "RB009", "the arguments of `env` must be strings"),
        ("  param n: int = \"six\"\n", "RB009", "the default of `n` is a string"),
        ("  param s: string = \"a\"\n  let t = s.x\n", "RB022", "`s` is a value and has no fields"),
        ("  verify v {\n    http get \"http://x\"\n    expect status.code == 1\n  }\n", "RB022", "`status` has no fields"),
        ("  run r {\n    command \"true\"\n  }\n  wait w when r.output.stdout.x == 1 { duration 1s }\n", "RB022", "`r.output.stdout` is a value"),
        ("  verify v {\n    expect true\n  }\n", "RB007", "needs one check"),
        ("  schedule \"0 0 30 2 *\"\n", "RB020", "`0 0 30 2 *` never fires"),
        ("  param hour: string = \"2\"\n  schedule \"0 ${hour} * * *\"\n", "RB020", "`schedule` must be written out"),
        ("  param db: secret = env(\"DB\", \"postgres://a:hunter2@x/y\")\n", "RB019", "the secret `db` has a value written in the runbook"),
        ("  wait a after b { duration 1s }\n  wait b after c, d { duration 1s }\n  wait c after b { duration 1s }\n  wait d after a { duration 1s }\n", "RB005", "a → b → d → a"),
        ("  verify v {\n    http get \"http://x\"\n    sql \"db\" \"SELECT 1\"\n    http get \"http://y\"\n  }\n", "RB021", "this one has 2"),
        ("  schedule \"0 25 * * *\"\n", "RB020", "`0 25 * * *` is not a cron expression"),
        ("  schedule \"0 2 * * *\" timezone \"Europe/Amsterdm\"\n", "RB020", "unknown time zone `Europe/Amsterdm`"),
        ("  schedule \"0 2 * * *\" catch-up 0s\n", "RB020", "`catch-up` must be longer than zero"),
        ("  param p: duration = 1h\n  schedule \"0 2 * * *\" catch-up p\n", "RB020", "`catch-up` must be written as a literal"),
        ("  schedule \"0 * * * *\" window 90m\n", "RB020", "the window (1h30m) is longer than the shortest time between two fires (1h)"),
        ("  schedule \"0 2 * * *\" catchup 6h\n", "RB015", "wrong arguments for `schedule`: unexpected argument"),
        ("  blackout \"2026-12-24\"\n  about \"x\"\n  blackout \"2026-12-25\"\n  lock \"a\"\n  lock \"b\"\n  about \"y\"\n", "RB008", "`about` is given twice"),
        ("  blackout \"2026-02-30\"\n", "RB020", "\"2026-02-30\" is not a day of the calendar"),
        ("  blackout \"24-12-2026\"\n", "RB020", "\"24-12-2026\" is not a date: write YYYY-MM-DD or YYYY-MM-DD HH:MM"),
        ("  blackout \"2026-12-24\" until \"2026-12-24 25:00\"\n", "RB020", "is not a day and time of the calendar"),
        ("  blackout \"2026-12-24\" until \"2026-12-24\"\n", "RB020", "the blackout's `until` is not after its start"),
        ("  blackout \"2026-12-24 18:00\"\n", "RB020", "the blackout from \"2026-12-24 18:00\" has no end"),
        ("  blackout \"2026-12-24\" for 1h\n", "RB020", "`for` is for a blackout that repeats"),
        ("  blackout \"0 17 * * FRI\" until \"2026-12-24\"\n", "RB020", "`until` is for a blackout with a date"),
        ("  blackout \"0 17 * * FRI\"\n", "RB020", "the blackout from each `0 17 * * FRI` has no length"),
        ("  blackout \"0 17 * * FRI\" for 0s\n", "RB020", "`for` must be longer than zero"),
        ("  blackout \"0 0 30 2 *\" for 1h\n", "RB020", "`0 0 30 2 *` never fires"),
        ("  blackout \"0 17 * * FRY\" for 1h\n", "RB020", "`0 17 * * FRY` is not a cron expression"),
        ("  blackout \"0 17 * * FRI\" for 367d\n", "RB020", "a blackout of 367d is longer than a year"),
        ("  blackout \"2026-01-01\" until \"2027-01-03\"\n", "RB020", "a blackout of 367d is longer than a year"),
        ("  blackout \"2026-12-24\" timezone \"Europe/Amsterdm\"\n", "RB020", "unknown time zone `Europe/Amsterdm`"),
        ("  param day: string = \"2026-12-24\"\n  blackout day\n", "RB020", "`blackout` must be written out"),
        ("  blackout \"2026-12-24\" until 3\n", "RB009", "`blackout` expects text, found an integer"),
        ("  param pw: secret = env(\"PW\")\n  sql q {\n    postgres \"postgres://db/app\"\n    query \"SELECT $1\"\n    params [pw]\n  }\n", "RB009", "a secret cannot be a query parameter"),
        ("  param pw: secret = env(\"PW\")\n  run r {\n    command \"echo\"\n    args [pw]\n  }\n", "RB009", "a secret cannot be a command argument"),
        ("  lock \".hidden\"\n", "RB020", "the lock name \".hidden\" starts with `.`"),
        ("  lock \"neo db\"\n", "RB020", "the lock name \"neo db\" has ' '"),
        ("  param db: string = \"x\"\n  lock \"neo-${db}\"\n", "RB020", "`lock` must be written out"),
        ("  verify v {\n    http get \"http://x\"\n    header \"X-Db\" neo-db\n  }\n", "RB010", "undefined name `neo-db`"),
        ("  wait w {\n    duration neo-db\n  }\n", "RB001", "names cannot contain `-`"),
];

#[test]
fn common_mistakes_get_plain_messages() {
    for (body, code, expected) in MISTAKES {
        let source = format!("runbook r {{\n{body}}}\n");
        let found = diagnose(&source);
        assert!(
            found
                .iter()
                .any(|d| d.code.id() == *code && d.message.contains(expected)),
            "expected {code} `{expected}` for\n{source}\ngot {:#?}",
            found
                .iter()
                .map(|d| format!("{} {}", d.code.id(), d.message))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn every_diagnostic_has_a_label_and_a_help_line() {
    let mut sources: Vec<String> = CASES.iter().map(|(_, _, s)| s.to_string()).collect();
    sources.extend(
        MISTAKES
            .iter()
            .map(|(body, _, _)| format!("runbook r {{\n{body}}}\n")),
    );
    for source in sources {
        for d in diagnose(&source) {
            assert!(
                !d.labels.is_empty(),
                "{} has no label:\n{source}",
                d.message
            );
            assert!(
                d.help.is_some(),
                "{} `{}` has no help line:\n{source}",
                d.code.id(),
                d.message
            );
        }
    }
}
