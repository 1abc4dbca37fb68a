//! Secrets in every form they can come back in, looked for in every channel
//! an operator or another process can read: the live output, `--json`,
//! `status`, `logs`, and every byte of the state directory.

use crate::common::*;
use crate::standin::Standin;

const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----";
const CUT: &str = "cutX9qZ7w3LmV5tR2yKp";
const PASSWORD: &str = "pw-Secret-42";

/// A server that answers every request 500, with the request's head as
/// the body: a server that echoes what it was sent.
fn echo_server() -> u16 {
    Standin::start(|seen, _| (500, seen.head.clone())).port()
}

/// Every form of the test's secrets that must never be seen.
fn forms(url_user: &str) -> Vec<String> {
    use base64::Engine;
    let mut forms: Vec<String> = PEM_KEY.lines().map(str::to_string).collect();
    forms.push(PASSWORD.to_string());
    forms.push(base64::engine::general_purpose::STANDARD.encode(format!("{url_user}:{PASSWORD}")));
    // Any six bytes of the secret cut at the 64 KiB boundary.
    forms.extend((0..=CUT.len() - 6).map(|i| CUT[i..i + 6].to_string()));
    forms
}

fn look(channel: &str, bytes: &[u8], forms: &[String]) {
    let text = String::from_utf8_lossy(bytes);
    for form in forms {
        assert!(!text.contains(form.as_str()), "{channel} shows `{form}`");
    }
}

#[test]
fn no_form_of_a_secret_reaches_any_channel() {
    let dir = scratch("sec-masks");
    let state = dir.join("state");
    let port = echo_server();
    let site = format!("http://admin:{PASSWORD}@127.0.0.1:{port}/health");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  param key: secret = env(\"RB_KEY\")\n  param cut: secret = env(\"RB_CUT\")\n  param site: secret = env(\"RB_SITE\")\n  concurrency 1\n  run pem {\n    shell \"printf '%s\\\\n' \\\"$K\\\"; printf '%s\\\\n' \\\"$K\\\" >&2\"\n    env \"K\" key\n  }\n  run long after pem {\n    shell \"head -c 65530 /dev/zero | tr '\\\\0' x; printf '%s tail\\\\n' \\\"$C\\\"\"\n    env \"C\" cut\n  }\n  verify echoed after long {\n    http get site\n    expect status == 500\n  }\n  run show after echoed {\n    shell \"printf '%s\\\\n' \\\"$B\\\"\"\n    env \"B\" \"${echoed.output.body}\"\n  }\n}\n",
    );
    let run = |args: &[&str]| {
        command(&state, args)
            .env("RB_KEY", PEM_KEY)
            .env("RB_CUT", CUT)
            .env("RB_SITE", &site)
            .output()
            .expect("runs")
    };
    let forms = forms("admin");
    let first = run(&["run", path(&file)]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    look("the run's output", &first.stdout, &forms);
    look("the run's errors", &first.stderr, &forms);
    assert!(stdout(&first).contains("***"), "{}", stdout(&first));
    let json = run(&["run", path(&file), "--json"]);
    look("--json", &json.stdout, &forms);
    look("--json's errors", &json.stderr, &forms);
    for args in [
        vec!["status"],
        vec!["status", "1", "--json"],
        vec!["logs", "1"],
        vec!["logs", "2"],
    ] {
        let out = run(&args);
        look(&format!("{args:?}"), &out.stdout, &forms);
        look(&format!("{args:?}'s errors"), &out.stderr, &forms);
    }
    // The echo reached the step's outputs (hidden), so the test saw what
    // it looks for.
    let shown = stdout(&run(&["logs", "1", "show"]));
    assert!(shown.contains("Basic ***"), "{shown}");
    for file in walk(&state) {
        look(
            &file.display().to_string(),
            &std::fs::read(&file).expect("reads"),
            &forms,
        );
    }
}

#[test]
fn programs_do_not_inherit_the_variables_secrets_are_read_from() {
    let dir = scratch("sec-withheld");
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  param token: secret = env(\"RB_SEC_TOKEN\")\n  run inherits {\n    shell \"echo inherited [$(printenv RB_SEC_TOKEN || echo none)] other [$RB_SEC_OTHER]\"\n  }\n  run maps {\n    shell \"echo mapped [$RB_SEC_TOKEN]\"\n    env \"RB_SEC_TOKEN\" token\n  }\n}\n",
    );
    let out = command(&dir.join("state"), &["run", path(&file)])
        .env("RB_SEC_TOKEN", "tok-7f3a9")
        .env("RB_SEC_OTHER", "plain")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(shown.contains("inherited [none] other [plain]"), "{shown}");
    assert!(shown.contains("mapped [***]"), "{shown}");
}

#[test]
fn a_url_that_is_a_secret_is_shown_by_its_origin_only() {
    let dir = scratch("sec-secret-url");
    let port = echo_server();
    let file = write(
        &dir,
        "t.runbook",
        "runbook t {\n  param odd: secret = env(\"RB_ODD\")\n  param hook: secret = env(\"RB_HOOK\")\n  verify broken {\n    http get odd\n  }\n  verify short {\n    http get hook\n    expect status == 500\n  }\n}\n",
    );
    let out = command(&dir.join("state"), &["run", path(&file)])
        .env("RB_ODD", "http://admin:Pw7q#t4il9@127.0.0.1:9/x")
        .env("RB_HOOK", format!("http://127.0.0.1:{port}/s/tok9z?k=v1x"))
        .output()
        .expect("runs");
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    for part in ["Pw7q", "t4il9", "tok9z", "v1x", "/s/"] {
        assert!(!shown.contains(part), "`{part}` shown in:\n{shown}");
    }
    assert!(
        shown.contains(&format!("GET http://127.0.0.1:{port} answered 500")),
        "{shown}"
    );
    assert!(
        shown.contains("`(not a URL)` is not a URL runbook can request"),
        "{shown}"
    );
}
