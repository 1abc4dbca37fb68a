//! The local runner on real programs and a real (loopback) webhook.

use super::*;
use crate::actions::http::standin::Standin;
use crate::actions::steps::Line;
use crate::compile::check;
use crate::compile::eval::bind_for_run;
use crate::engine::{LogBuffer, RunId, StepLog};
use std::sync::Mutex;

fn local(src: &str, env: &[(&str, &str)]) -> (Plan, LocalRunner, Arc<Mutex<Vec<String>>>) {
    let plan = check(src).expect("checks");
    let vars: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let bindings = bind_for_run(&plan, &[], &lookup).expect("binds");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shown = Arc::clone(&seen);
    let sink: Sink = Arc::new(move |line: Line| {
        if let Ok(mut s) = shown.lock() {
            s.push(format!("{}: {}", line.step, line.text));
        }
    });
    let env: Env = Arc::new(lookup);
    // One try: the tests of retrying are beside `notify::deliver`.
    let once = crate::actions::notify::Tries {
        times: 1,
        pause: std::time::Duration::ZERO,
    };
    let runner = LocalRunner::new(bindings, env, sink).notify_tries(once);
    (plan, runner, seen)
}

/// The step's result (a failure as its sentence), why it failed, and what
/// it printed.
struct Attempt {
    result: Result<BTreeMap<String, String>, String>,
    failure: Option<crate::actions::step::StepError>,
    log: StepLog,
}

async fn attempt(plan: &Plan, runner: &LocalRunner, step: &str) -> Attempt {
    let step = plan.step(step).expect("a step").clone();
    let log = LogBuffer::default();
    let result = runner
        .run(StepCall {
            run: RunId(1),
            step,
            attempt: 1,
            elapsed: Duration::ZERO,
            inputs: Vec::new(),
            log: log.clone(),
            notes: crate::actions::step::Notes::unrecorded(Default::default()),
            undone: Vec::new(),
        })
        .await;
    Attempt {
        failure: result.as_ref().err().cloned(),
        result: result.map_err(|e| e.message),
        log: log.take(),
    }
}

#[tokio::test]
async fn a_verify_checks_its_expectation_on_the_output() {
    let src = "runbook r {\n  verify up {\n    command \"echo\"\n    args [\"status: ok\"]\n    expect stdout contains \"ok\" and exit_code == 0\n  }\n  verify down {\n    command \"echo\"\n    args [\"status: degraded\"]\n    expect stdout contains \"ok\"\n  }\n  verify crashed {\n    command \"false\"\n  }\n}\n";
    let (plan, runner, _) = local(src, &[]);
    let up = attempt(&plan, &runner, "up").await.result.expect("passes");
    assert_eq!(up["stdout"], "status: ok");
    let down = attempt(&plan, &runner, "down").await.result.unwrap_err();
    assert_eq!(
        down,
        "expected stdout contains \"ok\", but stdout was \"status: degraded\""
    );
    let crashed = attempt(&plan, &runner, "crashed").await.result.unwrap_err();
    assert_eq!(crashed, "the check exited with code 1");
}

#[tokio::test]
async fn a_failure_says_its_kind_and_points_at_what_it_concerns() {
    use crate::actions::step::FailureKind;
    let src = "runbook r {\n  param token: secret = env(\"RB_T\")\n  verify down {\n    command \"echo\"\n    args [\"degraded\"]\n    expect stdout contains \"ok\"\n  }\n  verify crashed {\n    command \"false\"\n  }\n  run exits {\n    shell \"exit 3\"\n  }\n  let argv = [\"a\", token]\n  run sneaky {\n    command \"echo\"\n    args argv\n  }\n  run quoted after exits {\n    shell \"echo ${exits.output.stdout}\"\n  }\n}\n";
    let (plan, runner, _) = local(src, &[("RB_T", "tok-1")]);
    let failed = |name: &'static str| {
        let plan = &plan;
        let runner = &runner;
        async move {
            let failure = attempt(plan, runner, name).await.failure.expect("fails");
            let at = failure.at.expect("points somewhere");
            (failure.kind, &src[at.start..at.end])
        }
    };
    assert_eq!(
        failed("down").await,
        (FailureKind::Expectation, "stdout contains \"ok\"")
    );
    // No `expect`: the check's own rule failed; it points at the check.
    assert_eq!(
        failed("crashed").await,
        (FailureKind::Expectation, "\"false\"")
    );
    assert_eq!(failed("exits").await, (FailureKind::Exited, "\"exit 3\""));
    assert_eq!(failed("sneaky").await, (FailureKind::Value, "argv"));
    // Inside a script: the interpolation itself (the step it reads has no
    // outputs here).
    assert_eq!(
        failed("quoted").await,
        (FailureKind::Value, "exits.output.stdout")
    );
}

#[tokio::test]
async fn hold_samples_until_the_time_is_up_and_fails_on_the_first_bad_sample() {
    let dir = std::env::temp_dir().join(format!("runbook-hold-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let counter = dir.join("count");
    // Passes twice, then fails: the third sample must fail the step.
    let src = format!("runbook r {{\n  verify steady {{\n    command \"sh\"\n    args [\"-c\", \"echo x >> {0}; test $(wc -l < {0}) -le 2\"]\n    expect exit_code == 0\n    hold 1s every 100ms\n  }}\n}}\n", counter.display());
    let (plan, runner, _) = local(&src, &[]);
    let failed = attempt(&plan, &runner, "steady").await.result.unwrap_err();
    assert_eq!(failed, "expected exit_code == 0, but exit_code was 1");
    let samples = std::fs::read_to_string(&counter)
        .expect("reads")
        .lines()
        .count();
    assert_eq!(samples, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn secret_values_are_scrubbed_from_lines_outputs_logs_and_errors() {
    let src = "runbook r {\n  param token: secret = env(\"RB_T\")\n  run leak {\n    shell \"echo the token is $T; echo $T >&2; exit 3\"\n    env \"T\" \"${token}\"\n  }\n  run quiet {\n    shell \"echo t=$T u=$U\"\n    env \"T\" \"${token}\"\n    env \"U\" env(\"RB_U\")\n  }\n}\n";
    let (plan, runner, seen) = local(src, &[("RB_T", "tok-98765"), ("RB_U", "inline-4321")]);
    let leak = attempt(&plan, &runner, "leak").await;
    assert_eq!(leak.result.unwrap_err(), "exited with code 3");
    let log = leak.log;
    let texts: Vec<&str> = log.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["the token is ***", "***"]);
    assert!(log.lines[1].err);
    let quiet = attempt(&plan, &runner, "quiet").await.result.expect("runs");
    assert_eq!(
        quiet["stdout"], "t=*** u=***",
        "env() read in the step itself too"
    );
    let shown = seen.lock().expect("lines").join("\n");
    assert!(
        !shown.contains("tok-98765") && !shown.contains("inline-4321"),
        "{shown}"
    );
}

/// A webhook on loopback that answers `status`, at a path that must never
/// be shown; the stand-in keeps the requests.
async fn webhook(status: u16) -> (String, Standin) {
    let server = Standin::answering(move |_, _| (status, String::new())).await;
    (format!("{}/hooks/secret-path-123", server.url), server)
}

#[tokio::test]
async fn notify_posts_slack_compatible_json_and_never_names_the_url() {
    let (url, server) = webhook(200).await;
    let src = "runbook r {\n  param hook: secret = env(\"RB_HOOK\")\n  notify tell {\n    webhook hook\n    message \"deploy done\"\n    severity warning\n  }\n}\n";
    let (plan, runner, _) = local(src, &[("RB_HOOK", &url)]);
    let told = attempt(&plan, &runner, "tell").await.result.expect("posts");
    assert_eq!(told["status"], "200");
    let request = server.seen()[0].clone();
    assert!(
        request.starts_with("POST /hooks/secret-path-123 HTTP/1.1"),
        "{request}"
    );
    assert!(
        request.contains(r#""text":"[warning] deploy done""#),
        "{request}"
    );

    let (url, _server) = webhook(500).await;
    let (plan, runner, _) = local(src, &[("RB_HOOK", &url)]);
    let refused = attempt(&plan, &runner, "tell").await.result.unwrap_err();
    assert_eq!(refused, "the webhook answered 500 Internal Server Error");

    let closed = "http://127.0.0.1:9/hooks/secret-path-123";
    let (plan, runner, _) = local(src, &[("RB_HOOK", closed)]);
    let unreachable = attempt(&plan, &runner, "tell").await.result.unwrap_err();
    assert!(
        unreachable
            .starts_with("the webhook could not be reached: 127.0.0.1:9 refused the connection"),
        "{unreachable}"
    );
    assert!(!unreachable.contains("secret-path"), "{unreachable}");
}

#[tokio::test]
async fn a_secret_never_becomes_an_argument_and_any_env_value_is_scrubbed_everywhere() {
    let src = "runbook r {\n  param token: secret = env(\"RB_TOK\")\n  let argv = [\"-c\", \"true\", token]\n  run sneaky {\n    command \"sh\"\n    args argv\n  }\n  run printer {\n    command \"echo\"\n    args [\"other-secret-9\"]\n  }\n  run reader after printer {\n    command \"true\"\n    env \"X\" env(\"RB_OTHER\")\n  }\n}\n";
    let (plan, runner, seen) = local(src, &[("RB_TOK", "tok-1"), ("RB_OTHER", "other-secret-9")]);
    let runner = runner.scrubbing(&plan);
    let refused = attempt(&plan, &runner, "sneaky").await.result.unwrap_err();
    assert_eq!(
        refused,
        "`args` holds a secret; pass secrets to a program with `env NAME VALUE`, never as an argument"
    );
    // `printer` reads nothing secret itself (it prints what a program could
    // find in the environment it inherits); `reader` reads RB_OTHER with env().
    let printed = attempt(&plan, &runner, "printer").await;
    assert_eq!(printed.result.expect("runs")["stdout"], "***");
    assert!(!seen
        .lock()
        .expect("lines")
        .join("\n")
        .contains("other-secret-9"));
}

#[tokio::test]
async fn a_secret_cut_by_the_output_cap_leaves_no_beginning_behind() {
    let src = "runbook r {\n  param token: secret = env(\"RB_TOK\")\n  run long {\n    shell \"head -c 8180 /dev/zero | tr '\\\\0' x; printf '%s\\\\n' \\\"$T\\\"\"\n    env \"T\" token\n  }\n}\n";
    let token = "abcdefghijklmnopqrstuvwxyz0123456789";
    let (plan, runner, _) = local(src, &[("RB_TOK", token)]);
    let out = attempt(&plan, &runner, "long").await.result.expect("runs");
    assert!(
        out["stdout"].ends_with("x***"),
        "{}",
        &out["stdout"][8100..]
    );
    assert!(!out["stdout"].contains("abcdefgh"));
}

#[tokio::test]
async fn a_value_interpolated_into_a_shell_script_stays_one_word() {
    // (A secret in a script is refused by the compiler already.)
    let src = "runbook r {\n  param name: string\n  run greet {\n    shell \"printf '%s|' ${name} done\"\n  }\n}\n";
    let plan = check(src).expect("checks");
    let lookup = |name: &str| (name == "RB_TOK").then(|| "tok-1".to_string());
    let hostile = "x; touch /tmp/runbook-pwned $(id)";
    let bindings = bind_for_run(&plan, &[("name".into(), hostile.into())], &lookup).expect("binds");
    let sink: Sink = Arc::new(|_: Line| {});
    let runner = LocalRunner::new(bindings, Arc::new(lookup), sink);
    let greeted = attempt(&plan, &runner, "greet").await.result.expect("runs");
    assert_eq!(greeted["stdout"], format!("{hostile}|done|"));
    assert!(!std::path::Path::new("/tmp/runbook-pwned").exists());
}

#[tokio::test]
async fn an_http_check_judges_status_body_and_json_fields() {
    let server = Standin::answering(|_, _| {
        let body = r#"{"status":"Healthy","db":{"ok":true,"latency_ms":12}}"#;
        (200, body.to_string())
    })
    .await;
    let url = format!("{}/health", server.url);
    let src = format!(
        "runbook r {{\n  verify good {{\n    http get \"{url}\"\n    expect status == 200 and json.status == \"Healthy\" and json.db.ok and json.db.latency_ms < 50\n  }}\n  verify bad {{\n    http get \"{url}\"\n    expect json.db.latency_ms < 10\n  }}\n  verify missing {{\n    http get \"{url}\"\n    expect json.nothing == 1\n  }}\n}}\n"
    );
    let (plan, runner, _) = local(&src, &[]);
    let good = attempt(&plan, &runner, "good")
        .await
        .result
        .expect("passes");
    assert_eq!(good["status"], "200");
    let bad = attempt(&plan, &runner, "bad").await.result.unwrap_err();
    assert_eq!(bad, "expected json.db.latency_ms < 10");
    let missing = attempt(&plan, &runner, "missing").await.result.unwrap_err();
    assert!(
        missing.starts_with("`expect json.nothing == 1` could not be decided"),
        "{missing}"
    );
}

const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----";

/// Everything a step's output reached: the live lines, the kept log, the
/// outputs.
fn everything(seen: &Mutex<Vec<String>>, attempt: &Attempt) -> String {
    let mut all = seen.lock().expect("lines").join("\n");
    for line in &attempt.log.lines {
        all.push('\n');
        all.push_str(&line.text);
    }
    if let Ok(out) = &attempt.result {
        for value in out.values() {
            all.push('\n');
            all.push_str(value);
        }
    }
    all
}

#[tokio::test]
async fn every_line_of_a_multi_line_secret_is_hidden_when_printed_line_by_line() {
    let src = "runbook r {\n  param key: secret = env(\"RB_KEY\")\n  run show {\n    shell \"printf '%s\\\\n' \\\"$K\\\"; printf '%s\\\\n' \\\"$K\\\" >&2\"\n    env \"K\" key\n  }\n}\n";
    let (plan, runner, seen) = local(src, &[("RB_KEY", PEM_KEY)]);
    let shown = attempt(&plan, &runner, "show").await;
    let all = everything(&seen, &shown);
    for line in PEM_KEY.lines() {
        assert!(!all.contains(line), "{line} shown in:\n{all}");
    }
    assert!(all.contains("show: ***"), "{all}");
}

#[tokio::test]
async fn secrets_cut_at_the_64_kib_boundary_of_a_long_line_are_hidden_whole() {
    // The line is cut after 65,536 bytes: 6 bytes into the first secret.
    let src = "runbook r {\n  param a: secret = env(\"RB_A\")\n  param b: secret = env(\"RB_B\")\n  run long {\n    shell \"head -c 65530 /dev/zero | tr '\\\\0' x; printf '%s%s tail\\\\n' \\\"$A\\\" \\\"$B\\\"\"\n    env \"A\" a\n    env \"B\" b\n  }\n}\n";
    let a = "first-secret-0123456789";
    let b = "second-secret-abcdefghij";
    let (plan, runner, seen) = local(src, &[("RB_A", a), ("RB_B", b)]);
    let shown = attempt(&plan, &runner, "long").await;
    assert!(shown.result.is_ok(), "{:?}", shown.result);
    let all = everything(&seen, &shown);
    for secret in [a, b] {
        for piece in (0..secret.len() - 4).map(|i| &secret[i..i + 5]) {
            assert!(!all.contains(piece), "{piece} of {secret} shown");
        }
    }
    assert!(all.contains("*** tail"), "both hidden, then the rest");
}

#[tokio::test]
async fn a_secret_whose_character_is_cut_at_the_64_kib_boundary_is_hidden() {
    // 65,535 bytes, then the secret: its `é` straddles the 65,536th byte.
    let src = "runbook r {\n  param a: secret = env(\"RB_A\")\n  run long {\n    shell \"head -c 65535 /dev/zero | tr '\\\\0' x; printf '%s tail\\\\n' \\\"$A\\\"\"\n    env \"A\" a\n  }\n}\n";
    let a = "é-secret-ü-0123456789";
    let (plan, runner, seen) = local(src, &[("RB_A", a)]);
    let shown = attempt(&plan, &runner, "long").await;
    let all = everything(&seen, &shown);
    assert!(!all.contains("secret-ü"), "the secret's rest is shown");
    assert!(!all.contains('\u{fffd}'), "a character was cut in two");
    assert!(all.contains("*** tail"), "hidden, then the rest");
}
