//! What each step kind and each runbook setting accepts: the single table the
//! compiler checks properties against, and the book's reference describes.

/// The type of one argument position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// Text: a string, a path, or a value only known at run time.
    Text,
    /// Text that may carry a secret (connection strings, URLs, header values).
    SecretText,
    Int,
    /// Int, float or percentage.
    Number,
    Duration,
    List,
    /// A condition in the step's check context (`expect`).
    Condition,
    /// One of these bare words.
    Word(&'static [&'static str]),
    /// The name of another step; `Some(kind)` when it must be of that kind.
    Step(Option<&'static str>),
}

/// `NAME ARG... [WORD ARG...]...`: positional arguments, then optional
/// keyword-led groups in any order.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub args: &'static [Arg],
    pub options: &'static [(&'static str, &'static [Arg])],
    pub usage: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Prop {
    pub name: &'static str,
    pub shape: Shape,
    pub required: bool,
    pub repeatable: bool,
    /// Properties in the same group exclude each other; see `Kind::groups`.
    pub group: Option<&'static str>,
    /// Other properties this one needs.
    pub requires: &'static [&'static str],
}

#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub name: &'static str,
    /// Whether exactly one member is required (otherwise at most one, or at
    /// least one when `many`).
    pub required: bool,
    pub many: bool,
    pub what: &'static str,
}

/// A kind of step, as a value: what the engine, the session and the
/// runner match on (the name is for people and the parser).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    Deploy,
    Verify,
    RollbackIf,
    Restore,
    Backup,
    Run,
    Sql,
    Restart,
    Scale,
    Undo,
    Wait,
    Approve,
    Notify,
}

#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub id: StepKind,
    pub name: &'static str,
    pub changes_systems: bool,
    /// Safe to run again after a crash interrupted it (the default for `on-interrupt`).
    pub rerun_safe: bool,
    pub props: &'static [Prop],
    pub groups: &'static [Group],
    pub outputs: &'static [&'static str],
    /// Names usable inside `expect`, with their types.
    pub check_names: &'static [(&'static str, CheckName)],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckName {
    Int,
    Number,
    Text,
    Bool,
    /// `json.a.b`: any depth, any type.
    Dynamic,
}

const fn shape(args: &'static [Arg], usage: &'static str) -> Shape {
    Shape {
        args,
        options: &[],
        usage,
    }
}

const fn prop(name: &'static str, shape: Shape) -> Prop {
    Prop {
        name,
        shape,
        required: false,
        repeatable: false,
        group: None,
        requires: &[],
    }
}

const fn required(p: Prop) -> Prop {
    Prop {
        required: true,
        ..p
    }
}

const fn repeatable(p: Prop) -> Prop {
    Prop {
        repeatable: true,
        ..p
    }
}

const fn grouped(group: &'static str, p: Prop) -> Prop {
    Prop {
        group: Some(group),
        ..p
    }
}

const fn needs(requires: &'static [&'static str], p: Prop) -> Prop {
    Prop { requires, ..p }
}

const TEXT: &[Arg] = &[Arg::Text];
const SECRET: &[Arg] = &[Arg::SecretText];
const INT: &[Arg] = &[Arg::Int];
const DURATION: &[Arg] = &[Arg::Duration];
const LIST: &[Arg] = &[Arg::List];

pub const HTTP_METHODS: &[&str] = &["get", "head", "post", "put", "patch", "delete"];

/// Properties every step kind takes.
pub const COMMON: &[Prop] = &[
    prop("about", shape(TEXT, "about \"what this step does\"")),
    prop("timeout", shape(DURATION, "timeout DURATION")),
    prop(
        "retry",
        Shape {
            args: INT,
            options: &[("every", DURATION), ("backoff", &[Arg::Number])],
            usage: "retry COUNT [every DURATION] [backoff FACTOR]",
        },
    ),
    prop(
        "on-interrupt",
        shape(&[Arg::Word(&["rerun", "ask"])], "on-interrupt rerun|ask"),
    ),
];

const KUBE_TARGET: [Prop; 2] = [
    prop("namespace", shape(TEXT, "namespace NAME")),
    prop("context", shape(TEXT, "context NAME")),
];

pub const KINDS: &[Kind] = &[
    Kind {
        id: StepKind::Deploy,
        name: "deploy",
        changes_systems: true,
        rerun_safe: false,
        props: &[
            required(prop("deployment", shape(TEXT, "deployment NAME"))),
            required(prop("image", shape(TEXT, "image IMAGE"))),
            prop("container", shape(TEXT, "container NAME")),
            KUBE_TARGET[0],
            KUBE_TARGET[1],
        ],
        groups: &[],
        outputs: &["revision", "previous_revision", "previous_image"],
        check_names: &[],
    },
    Kind {
        id: StepKind::Verify,
        name: "verify",
        changes_systems: false,
        rerun_safe: true,
        props: &[
            grouped(
                "check",
                prop(
                    "http",
                    shape(
                        &[Arg::Word(HTTP_METHODS), Arg::SecretText],
                        "http METHOD URL",
                    ),
                ),
            ),
            grouped(
                "check",
                prop(
                    "sql",
                    shape(&[Arg::SecretText, Arg::Text], "sql CONNECTION QUERY"),
                ),
            ),
            grouped("check", prop("prometheus", shape(TEXT, "prometheus QUERY"))),
            grouped("check", prop("command", shape(TEXT, "command PROGRAM"))),
            grouped("check", prop("rollout", shape(TEXT, "rollout DEPLOYMENT"))),
            grouped(
                "check",
                prop("certificate", shape(TEXT, "certificate HOST:PORT|FILE")),
            ),
            needs(
                &["http"],
                repeatable(prop(
                    "header",
                    shape(&[Arg::Text, Arg::SecretText], "header NAME VALUE"),
                )),
            ),
            needs(&["http"], prop("body", shape(TEXT, "body TEXT"))),
            needs(&["sql"], prop("params", shape(LIST, "params [VALUE, ...]"))),
            needs(&["prometheus"], prop("server", shape(SECRET, "server URL"))),
            needs(&["command"], prop("args", shape(LIST, "args [ARG, ...]"))),
            needs(
                &["command"],
                repeatable(prop(
                    "env",
                    shape(&[Arg::Text, Arg::SecretText], "env NAME VALUE"),
                )),
            ),
            needs(&["rollout"], KUBE_TARGET[0]),
            needs(&["rollout"], KUBE_TARGET[1]),
            prop("expect", shape(&[Arg::Condition], "expect CONDITION")),
            needs(
                &["expect"],
                prop(
                    "hold",
                    shape(
                        &[Arg::Duration, Arg::Word(&["every"]), Arg::Duration],
                        "hold DURATION every INTERVAL",
                    ),
                ),
            ),
        ],
        groups: &[Group {
            name: "check",
            required: true,
            many: false,
            what: "one check: http, sql, prometheus, command, rollout or certificate",
        }],
        outputs: &[
            "value",
            "status",
            "body",
            "exit_code",
            "stdout",
            "days_left",
        ],
        check_names: &[
            ("status", CheckName::Int),
            ("body", CheckName::Text),
            ("json", CheckName::Dynamic),
            ("value", CheckName::Number),
            ("rows", CheckName::Int),
            ("exit_code", CheckName::Int),
            ("stdout", CheckName::Text),
            ("stderr", CheckName::Text),
            ("days_left", CheckName::Number),
            ("ready", CheckName::Bool),
        ],
    },
    Kind {
        id: StepKind::RollbackIf,
        name: "rollback-if",
        changes_systems: true,
        rerun_safe: false,
        props: &[
            repeatable(grouped(
                "action",
                prop(
                    "undo",
                    shape(&[Arg::Step(Some("deploy"))], "undo DEPLOY_STEP"),
                ),
            )),
            repeatable(grouped(
                "action",
                prop("restart", shape(TEXT, "restart DEPLOYMENT")),
            )),
            repeatable(grouped(
                "action",
                prop(
                    "scale",
                    shape(
                        &[Arg::Text, Arg::Word(&["to"]), Arg::Int],
                        "scale DEPLOYMENT to REPLICAS",
                    ),
                ),
            )),
            KUBE_TARGET[0],
            KUBE_TARGET[1],
        ],
        groups: &[Group {
            name: "action",
            required: true,
            many: true,
            what: "at least one action: undo, restart or scale",
        }],
        outputs: &[],
        check_names: &[],
    },
    Kind {
        id: StepKind::Restore,
        name: "restore",
        changes_systems: true,
        rerun_safe: false,
        props: &[
            grouped(
                "target",
                prop("postgres", shape(SECRET, "postgres CONNECTION")),
            ),
            grouped("target", prop("redis", shape(SECRET, "redis URL"))),
            grouped("target", prop("files", shape(TEXT, "files DIRECTORY"))),
            required(prop("from", shape(TEXT, "from PATH"))),
            needs(&["postgres"], prop("jobs", shape(INT, "jobs COUNT"))),
        ],
        groups: &[Group {
            name: "target",
            required: true,
            many: false,
            what: "one target: postgres, redis or files",
        }],
        outputs: &["keys"],
        check_names: &[],
    },
    Kind {
        id: StepKind::Backup,
        name: "backup",
        changes_systems: true,
        rerun_safe: false,
        props: &[
            required(prop("postgres", shape(SECRET, "postgres CONNECTION"))),
            required(prop("to", shape(TEXT, "to DIRECTORY"))),
            prop("keep", shape(DURATION, "keep DURATION")),
            prop(
                "format",
                shape(&[Arg::Word(&["custom", "plain"])], "format custom|plain"),
            ),
        ],
        groups: &[],
        outputs: &["file"],
        check_names: &[],
    },
    Kind {
        id: StepKind::Run,
        name: "run",
        changes_systems: true,
        rerun_safe: false,
        props: &[
            grouped("program", prop("command", shape(TEXT, "command PROGRAM"))),
            grouped("program", prop("shell", shape(TEXT, "shell SCRIPT"))),
            needs(&["command"], prop("args", shape(LIST, "args [ARG, ...]"))),
            repeatable(prop(
                "env",
                shape(&[Arg::Text, Arg::SecretText], "env NAME VALUE"),
            )),
            prop("cwd", shape(TEXT, "cwd DIRECTORY")),
        ],
        groups: &[Group {
            name: "program",
            required: true,
            many: false,
            what: "either `command` (run directly, with `args`) or `shell` (run by /bin/sh)",
        }],
        outputs: &["exit_code", "stdout", "stderr"],
        check_names: &[],
    },
    Kind {
        id: StepKind::Sql,
        name: "sql",
        changes_systems: true,
        rerun_safe: false,
        props: &[
            required(prop("database", shape(SECRET, "database CONNECTION"))),
            required(prop("query", shape(TEXT, "query SQL"))),
            prop("params", shape(LIST, "params [VALUE, ...]")),
            prop("expect", shape(&[Arg::Condition], "expect CONDITION")),
        ],
        groups: &[],
        outputs: &["rows", "value"],
        check_names: &[("rows", CheckName::Int), ("value", CheckName::Number)],
    },
    Kind {
        id: StepKind::Restart,
        name: "restart",
        changes_systems: true,
        rerun_safe: false,
        props: &[
            required(prop("deployment", shape(TEXT, "deployment NAME"))),
            KUBE_TARGET[0],
            KUBE_TARGET[1],
        ],
        groups: &[],
        outputs: &[],
        check_names: &[],
    },
    Kind {
        id: StepKind::Scale,
        name: "scale",
        changes_systems: true,
        rerun_safe: false,
        props: &[
            required(prop("deployment", shape(TEXT, "deployment NAME"))),
            required(prop("replicas", shape(INT, "replicas COUNT"))),
            KUBE_TARGET[0],
            KUBE_TARGET[1],
        ],
        groups: &[],
        outputs: &["previous_replicas"],
        check_names: &[],
    },
    Kind {
        id: StepKind::Undo,
        name: "undo",
        changes_systems: true,
        rerun_safe: false,
        props: &[required(prop(
            "deploy",
            shape(&[Arg::Step(Some("deploy"))], "deploy DEPLOY_STEP"),
        ))],
        groups: &[],
        outputs: &[],
        check_names: &[],
    },
    Kind {
        id: StepKind::Wait,
        name: "wait",
        changes_systems: false,
        rerun_safe: true,
        props: &[required(prop(
            "duration",
            shape(DURATION, "duration DURATION"),
        ))],
        groups: &[],
        outputs: &[],
        check_names: &[],
    },
    Kind {
        id: StepKind::Approve,
        name: "approve",
        changes_systems: false,
        rerun_safe: true,
        props: &[
            required(prop("prompt", shape(TEXT, "prompt QUESTION"))),
            prop("approvers", shape(LIST, "approvers [USER, ...]")),
            prop("groups", shape(LIST, "groups [GROUP, ...]")),
            prop("approvals", shape(INT, "approvals COUNT")),
            prop(
                "starter-approves",
                shape(&[Arg::Word(&["yes", "no"])], "starter-approves yes|no"),
            ),
            needs(
                &["timeout"],
                prop(
                    "on-timeout",
                    shape(&[Arg::Word(&["fail", "skip"])], "on-timeout fail|skip"),
                ),
            ),
        ],
        groups: &[],
        outputs: &["approved_by", "approved_at"],
        check_names: &[],
    },
    Kind {
        id: StepKind::Notify,
        name: "notify",
        changes_systems: false,
        rerun_safe: false,
        props: &[
            grouped("channel", prop("webhook", shape(SECRET, "webhook URL"))),
            grouped(
                "channel",
                prop("pagerduty", shape(SECRET, "pagerduty ROUTING_KEY")),
            ),
            required(prop("message", shape(TEXT, "message TEXT"))),
            prop(
                "severity",
                shape(
                    &[Arg::Word(&["info", "warning", "error", "critical"])],
                    "severity info|warning|error|critical",
                ),
            ),
        ],
        groups: &[Group {
            name: "channel",
            required: true,
            many: false,
            what: "one channel: webhook or pagerduty",
        }],
        outputs: &[],
        check_names: &[],
    },
];

/// Runbook-level settings.
pub const SETTINGS: &[Prop] = &[
    prop("about", shape(TEXT, "about \"what this runbook is for\"")),
    prop("concurrency", shape(INT, "concurrency COUNT")),
    prop("timeout", shape(DURATION, "timeout DURATION")),
    prop("namespace", shape(TEXT, "namespace NAME")),
    prop("context", shape(TEXT, "context NAME")),
    prop(
        "schedule",
        Shape {
            args: TEXT,
            options: &[
                ("timezone", TEXT),
                ("window", DURATION),
                ("overlap", &[Arg::Word(&["skip", "queue", "cancel"])]),
                ("catch-up", DURATION),
            ],
            usage: "schedule \"CRON\" [timezone ZONE] [window DURATION] [overlap skip|queue|cancel] [catch-up DURATION]",
        },
    ),
    // The two that may be given more than once (RB008 exempts them).
    repeatable(prop(
        "blackout",
        Shape {
            args: TEXT,
            options: &[("until", TEXT), ("for", DURATION), ("timezone", TEXT)],
            usage: "blackout \"DATE\" [until \"DATE\"] [timezone ZONE], or blackout \"CRON\" for DURATION [timezone ZONE]",
        },
    )),
    repeatable(prop("lock", shape(TEXT, "lock \"NAME\""))),
];

pub const TYPES: &[&str] = &["string", "int", "bool", "duration", "path", "secret"];

pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

impl Kind {
    /// "a `deploy` step", "an `undo` step": how messages name a step of this kind.
    pub fn a_step(&self) -> String {
        let article = if self.name.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{article} `{}` step", self.name)
    }

    pub fn prop(&self, name: &str) -> Option<&'static Prop> {
        let props: &'static [Prop] = self.props;
        props.iter().chain(COMMON.iter()).find(|p| p.name == name)
    }

    pub fn prop_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.props.iter().chain(COMMON.iter()).map(|p| p.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_typed_id_and_is_found_by_its_name() {
        let mut seen = std::collections::HashSet::new();
        for k in KINDS {
            assert!(seen.insert(k.id), "{} shares its id", k.name);
            assert_eq!(kind(k.name).map(|found| found.id), Some(k.id), "{}", k.name);
        }
        assert_eq!(seen.len(), 13);
    }
}
