use super::*;
use crate::compile::check;

fn action(source: &str, step: &str) -> Action {
    let plan = check(source).expect("the runbook checks");
    plan.step(step).expect("the step").action.clone()
}

#[test]
fn a_verify_keeps_its_one_check_its_method_and_its_headers() {
    let found = action(
        r#"runbook r {
  verify health {
    http post "https://example.com/health"
    header "X-A" "1"
    header "X-B" "2"
    body "{}"
    expect status == 200
    hold 10s every 1s
  }
}"#,
        "health",
    );
    let Action::Verify(verify) = found else {
        panic!("a verify: {found:?}")
    };
    let Check::Http(http) = &verify.check else {
        panic!("an HTTP check: {:?}", verify.check)
    };
    assert_eq!(http.method, HttpMethod::Post);
    assert_eq!(http.url.prop, "http");
    assert_eq!(http.headers.len(), 2);
    assert!(http.body.is_some());
    assert!(verify.expect.is_some());
    assert!(verify.hold.is_some());
}

#[test]
fn words_become_values_and_their_defaults_are_settled_here() {
    let backup = r#"runbook r {
  param db: secret = env("DB")
  backup nightly {
    postgres db
    to "/var/backups"
    format plain
  }
  backup weekly {
    postgres db
    to "/var/backups"
  }
  notify page {
    webhook "https://example.com/hook"
    message "done"
    severity critical
  }
  notify tell {
    pagerduty "key"
    message "done"
  }
}"#;
    let format = |step| match action(backup, step) {
        Action::Backup(b) => b.format,
        other => panic!("a backup: {other:?}"),
    };
    assert_eq!(format("nightly"), DumpFormat::Plain);
    assert_eq!(format("weekly"), DumpFormat::Custom);
    let Action::Notify(page) = action(backup, "page") else {
        panic!("a notify")
    };
    assert_eq!(page.severity, Severity::Critical);
    assert!(matches!(page.channel, Channel::Webhook(_)));
    let Action::Notify(tell) = action(backup, "tell") else {
        panic!("a notify")
    };
    assert_eq!(tell.severity, Severity::Info);
    assert!(matches!(tell.channel, Channel::PagerDuty(_)));
}

#[test]
fn a_rollback_keeps_its_actions_in_the_order_written() {
    let found = action(
        r#"runbook r {
  deploy production {
    deployment "web"
    image "web:2"
  }
  rollback-if back when production.failed {
    scale "workers" to 0
    undo production
    restart "cache"
  }
}"#,
        "back",
    );
    let Action::RollbackIf(rollback) = found else {
        panic!("a rollback-if: {found:?}")
    };
    let order: Vec<&str> = rollback
        .actions
        .iter()
        .map(|a| match a {
            Rollback::Scale { .. } => "scale",
            Rollback::Undo(step) => {
                assert_eq!(step, "production");
                "undo"
            }
            Rollback::Restart { .. } => "restart",
        })
        .collect();
    assert_eq!(order, ["scale", "undo", "restart"]);
}

#[test]
fn a_program_is_a_command_with_its_argv_or_a_shell_script() {
    let source = r#"runbook r {
  run direct {
    command "echo"
    args ["a", "b"]
    env "X" "1"
    cwd "/tmp"
  }
  run scripted {
    shell "echo hi"
  }
}"#;
    let Action::Run(direct) = action(source, "direct") else {
        panic!("a run")
    };
    assert!(matches!(
        direct.launch,
        Launch::Command { args: Some(_), .. }
    ));
    assert_eq!(direct.env.len(), 1);
    assert!(direct.cwd.is_some());
    let Action::Run(scripted) = action(source, "scripted") else {
        panic!("a run")
    };
    assert!(matches!(scripted.launch, Launch::Shell(_)));
}

#[test]
fn lowering_says_what_the_checker_let_through_instead_of_running_it() {
    let err = lower(StepKind::Deploy, &[]).expect_err("a deploy needs its deployment");
    assert!(err.contains("`deployment`"), "{err}");
    let err = lower(StepKind::Verify, &[]).expect_err("a verify needs a check");
    assert!(err.contains("check"), "{err}");
}
