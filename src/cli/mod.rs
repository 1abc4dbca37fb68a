//! The command line: parses arguments and calls the layers below.

/// `println!` that ignores a closed pipe (`runbook status | head`).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::view::out(&format!($($arg)*))
    };
}

mod args;
mod check;
mod fmt;
mod graph;
mod history;
mod plan;
mod run;
mod run_end;
mod runs;
mod schedule;
mod serve;
mod submitted;
mod view;
mod watch;

use crate::error::Error;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "runbook",
    version,
    about = "Operational procedures as code that runs, checkpoints itself and resumes.",
    after_help = "Example:\n  runbook check workflows/*.runbook\n  runbook plan workflows/rolling_deploy.runbook -p service=api"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where runs are kept [default: $RUNBOOK_STATE, else $XDG_STATE_HOME/runbook, else ~/.local/state/runbook].
    #[arg(long, global = true, value_name = "DIR")]
    state: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Check runbooks and report every mistake at once.
    #[command(
        after_help = "Exit status: 0 when clean, 2 when a file has diagnostics, 1 when a file cannot be read.\n\nExample:\n  runbook check workflows/*.runbook\n  runbook check --format json deploy.runbook"
    )]
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = CheckFormat::Human)]
        format: CheckFormat,
    },
    /// Rewrite runbooks in the canonical layout (comments are kept).
    #[command(
        after_help = "Example:\n  runbook fmt workflows/*.runbook\n  runbook fmt --check workflows/*.runbook   # exit 1 if a file would change"
    )]
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; list the files that are not formatted and exit 1.
        #[arg(long)]
        check: bool,
    },
    /// Show the DAG of steps.
    #[command(
        after_help = "The text form lists stages: the steps of one stage can run together.\n\nExample:\n  runbook graph workflows/disaster_recovery.runbook --format text\n  runbook graph deploy.runbook --format dot | dot -Tsvg > deploy.svg"
    )]
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Show what a run would do with these parameters, without running anything.
    #[command(
        after_help = "Example:\n  runbook plan workflows/rolling_deploy.runbook -p service=api -p tag=v1.4.2"
    )]
    Plan {
        file: PathBuf,
        /// A parameter, NAME=VALUE (repeatable).
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Run a runbook; every step is recorded, so an interrupted run can be resumed.
    #[command(
        after_help = "Exit status: 0 succeeded, 1 failed (or could not start), 2 the runbook has diagnostics, 3 rolled back, 4 cancelled, 5 a lock it needs is held by another run, 130 stopped by Ctrl-C or SIGTERM (resumable).\n\nExample:\n  runbook run workflows/demo.runbook -p release=v2\n  runbook run deploy.runbook -p service=api --json > events.jsonl\n  runbook run db_maintenance.runbook --until 2026-11-28T04:00:00Z"
    )]
    Run {
        file: PathBuf,
        /// A parameter, NAME=VALUE (repeatable).
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Print one JSON object per event and per output line.
        #[arg(long)]
        json: bool,
        /// Be over by this time (RFC 3339): then the procedure stops as at its `timeout` and the `on failure` steps run.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// How the stop is explained when `--until` passes (the scheduler names the window).
        #[arg(long, value_name = "TEXT", hide = true, requires = "until")]
        until_reason: Option<String>,
    },
    /// Continue a run that was stopped or interrupted, without re-running finished steps.
    #[command(
        after_help = "A step interrupted while running starts again when that is safe (wait, approve, verify, or `on-interrupt rerun`). Otherwise say what to do with it.\n\nExample:\n  runbook resume 7\n  runbook resume 7 --rerun migrate\n  runbook resume 7 --done restore_db   # you finished it by hand"
    )]
    Resume {
        run: u64,
        /// Run this interrupted step again (repeatable).
        #[arg(long, value_name = "STEP")]
        rerun: Vec<String>,
        /// Leave this interrupted step undone; what needs it is skipped (repeatable).
        #[arg(long, value_name = "STEP")]
        skip: Vec<String>,
        /// Record this interrupted step as done by hand (repeatable).
        #[arg(long, value_name = "STEP")]
        done: Vec<String>,
        /// A secret that was given with -p when the run started.
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List runs, or show one run's steps.
    #[command(after_help = "Example:\n  runbook status\n  runbook status 7 --json")]
    Status {
        run: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Show what a run's steps printed (every attempt).
    #[command(after_help = "Example:\n  runbook logs 7\n  runbook logs 7 migrate")]
    Logs { run: u64, step: Option<String> },
    /// Everything a run recorded: who started it with which parameters, every step's start and end, every approval, resume, retry and cancel with who did it.
    #[command(
        after_help = "--json prints JSON lines: the run first, then one line per event, for a log system.\n\nExample:\n  runbook history 7\n  runbook history 7 --json >> /var/log/runbook/history.jsonl"
    )]
    History {
        run: u64,
        #[arg(long)]
        json: bool,
    },
    /// How the process that holds the state directory's store stands: the runs it drives, and what it cannot do (a runbook it cannot schedule, and why).
    #[command(
        after_help = "Exit code 0 when a process holds the store and reports no problem; 1 when it reports one, or when no process holds it (for a monitoring check of `runbook serve`).\n\nExample:\n  runbook health --state /var/lib/runbook"
    )]
    Health {
        #[arg(long)]
        json: bool,
    },
    /// Write a run as one JSON document (its source, parameters, every event, what each attempt printed), for review elsewhere.
    #[command(
        after_help = "Secrets are not in it (the journal never holds them). Written to standard output, or to a new private file with --output.\n\nExample:\n  runbook export 7 --output incident-7.json"
    )]
    Export {
        run: u64,
        /// A new file to write it to (never one already there).
        #[arg(long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
    /// Import an exported run into this state directory as a new run, a copy for review: status, logs and history read it; nothing resumes or approves it here.
    #[command(after_help = "Example:\n  runbook import incident-7.json --state ~/review")]
    Import { file: std::path::PathBuf },
    /// Follow a live run from another terminal, as its own terminal shows it.
    #[command(
        after_help = "Ctrl-C stops watching, not the run. Exits as the run does: 0 succeeded, 1 failed, 3 rolled back, 4 cancelled, 130 stopped.\n\nExample:\n  runbook watch 7"
    )]
    Watch {
        run: u64,
        #[arg(long)]
        json: bool,
    },
    /// Approve a step that is waiting for approval.
    #[command(
        after_help = "Recorded as your Unix user (the kernel says who), with the time.\n\nExample:\n  runbook approve 7 go_live"
    )]
    Approve {
        run: u64,
        step: String,
        /// A name to record in place of your Unix user, where the process
        /// that holds the store allows names (RUNBOOK_ALLOW_AS=1).
        #[arg(long = "as", value_name = "NAME")]
        by: Option<String>,
    },
    /// Reject an approval step, saying why: the step fails, and the run goes on to its `on failure` steps.
    #[command(
        after_help = "Example:\n  runbook reject 7 go_live --reason \"error rate on the canary is 4%\""
    )]
    Reject {
        run: u64,
        step: String,
        /// Why (one line, recorded with who and when).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// A name to record in place of your Unix user, where allowed.
        #[arg(long = "as", value_name = "NAME")]
        by: Option<String>,
    },
    /// Cancel a run: running steps are stopped (their whole process group), nothing more starts.
    #[command(after_help = "Example:\n  runbook cancel 7")]
    Cancel { run: u64 },
    /// Start the scheduled runbooks of a directory at their times, until SIGTERM.
    #[command(
        after_help = "Runs started here are kept in STATE/scheduled/NAME (see `runbook schedule DIR` for where), the scheduler's own state and history in STATE/scheduler, named locks in STATE/locks. SIGTERM or Ctrl-C: nothing new starts, runs stop at a checkpoint; a second one stops their running steps now.\n\nExample:\n  runbook serve workflows/ --state /var/lib/runbook"
    )]
    Serve { dir: PathBuf },
    /// List each scheduled runbook of a directory: its next fire times and its recent history.
    #[command(
        after_help = "Example:\n  runbook schedule workflows/\n  runbook schedule workflows/ --count 5 --from 2027-03-27T00:00:00Z   # across a clock change"
    )]
    Schedule {
        dir: PathBuf,
        /// How many fire times to list per runbook (1 to 1000).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1000))]
        count: u16,
        /// List the fires after this time (RFC 3339) instead of after now.
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
    },
    /// Run a finished run again from a step; the steps before it keep their results and outputs.
    #[command(after_help = "Example:\n  runbook retry 7 --from deploy")]
    Retry {
        run: u64,
        /// The first step to run again; every step after it runs again too.
        #[arg(long, value_name = "STEP")]
        from: String,
        /// A secret that was given with -p when the run started.
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CheckFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
    Mermaid,
}

/// Exit codes shared by the commands.
pub const EXIT_OK: u8 = 0;
pub use crate::error::EXIT_ERROR;
pub const EXIT_DIAGNOSTICS: u8 = 2;

pub fn main() -> ExitCode {
    // Usage mistakes exit 1 like other errors; 2 means "the runbook has diagnostics".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { EXIT_OK });
        }
    };
    let state = args::state_dir(cli.state);
    crate::session::say_notes_with(|text| eprintln!("note: {}", view::printable(text)));
    crate::actions::spawn::private_umask(crate::store::private::umask());
    let contain = match std::env::var("RUNBOOK_CGROUPS").as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("auto") => true,
        Ok("off") => false,
        _ => {
            eprintln!("error: RUNBOOK_CGROUPS is `auto` (contain step programs in cgroups where runbook may make them, the default) or `off` (process groups alone)");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let found = match check_state(&cli.command, &state) {
        Ok(found) => found,
        Err(why) => {
            eprintln!("error: {}", view::printable(&why));
            return ExitCode::from(EXIT_ERROR);
        }
    };
    // A state directory that was missing when checked is not opened: one
    // made meanwhile (by someone else) was never checked.
    if found == Some(Found::Missing) {
        if let Some(code) = without_state(&cli.command, &state) {
            return ExitCode::from(code);
        }
    }
    let opts = |json: bool| run::RunOptions {
        state: state.clone(),
        json,
        until: None,
        contain,
    };
    let result = match cli.command {
        Command::Check { files, format } => check::run(&files, matches!(format, CheckFormat::Json)),
        Command::Fmt { files, check } => fmt::run(&files, check),
        Command::Graph { file, format } => graph::run(&file, format),
        Command::Plan { file, params } => plan::run(&file, &params),
        Command::Run {
            file,
            params,
            json,
            until,
            until_reason,
        } => run::parse_until(until.as_deref(), until_reason).and_then(|until| {
            let opts = run::RunOptions {
                until,
                ..opts(json)
            };
            run::start(&file, &params, &opts)
        }),
        Command::Serve { dir } => serve::run(&dir, &state, contain),
        Command::Schedule { dir, count, from } => {
            let present = found == Some(Found::Present);
            schedule::run(&dir, &state, present, usize::from(count), from.as_deref())
        }
        Command::Resume {
            run,
            rerun,
            skip,
            done,
            params,
            json,
        } => {
            let choices = crate::session::Choices { rerun, skip, done };
            run::resume(run, &params, choices, &opts(json))
        }
        Command::Status { run, json } => runs::status(&state, run, json),
        Command::Logs { run, step } => runs::logs(&state, run, step.as_deref()),
        Command::Watch { run, json } => watch::watch(&state, run, json),
        Command::History { run, json } => history::history(&state, run, json),
        Command::Export { run, output } => history::export(&state, run, output.as_deref()),
        Command::Health { json } => runs::health(&state, json),
        Command::Import { file } => history::import(&state, &file),
        Command::Approve { run, step, by } => runs::approve(&state, run, &step, by.as_deref()),
        Command::Reject {
            run,
            step,
            reason,
            by,
        } => runs::reject(&state, run, &step, &reason, by.as_deref()),
        Command::Cancel { run } => runs::cancel(&state, run),
        Command::Retry {
            run,
            from,
            params,
            json,
        } => run::retry(run, &from, &params, &opts(json)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", view::printable(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

/// The state directory, checked before a command reads or writes it, and
/// made only by the commands that record runs; `None` for the commands that
/// do not use one.
fn check_state(command: &Command, state: &std::path::Path) -> Result<Option<Found>, String> {
    let creates = match command {
        Command::Check { .. }
        | Command::Fmt { .. }
        | Command::Graph { .. }
        | Command::Plan { .. } => return Ok(None),
        Command::Run { .. } | Command::Serve { .. } | Command::Import { .. } => true,
        _ => false,
    };
    crate::store::private::state_dir(state, creates).map(Some)
}

/// What a command that reads or steers runs says when there is no state
/// directory: its exit code; `None` for one that goes on without it.
fn without_state(command: &Command, state: &std::path::Path) -> Option<u8> {
    let run = match command {
        Command::Status { run: None, json } => {
            match json {
                true => say!("[]"),
                false => say!("no runs yet in {}", state.display()),
            }
            return Some(EXIT_OK);
        }
        Command::Status { run: Some(run), .. }
        | Command::Logs { run, .. }
        | Command::Watch { run, .. }
        | Command::History { run, .. }
        | Command::Export { run, .. }
        | Command::Approve { run, .. }
        | Command::Reject { run, .. }
        | Command::Cancel { run }
        | Command::Resume { run, .. }
        | Command::Retry { run, .. } => *run,
        _ => return None,
    };
    eprintln!(
        "error: {}",
        view::printable(&crate::session::no_store_sentence(state, run))
    );
    Some(EXIT_ERROR)
}

use crate::store::private::Found;

/// Reads and compiles one file, printing its diagnostics; `Ok(None)` when it has some.
/// The plan of the runbook at `path`, or its diagnostics printed and `None`.
fn load(path: &std::path::Path) -> Result<Option<crate::compile::Plan>, Error> {
    compile_read(path, &crate::error::read_source(path)?)
}

/// The plan of `source`, the text read from `path` (read once: what a run
/// records is what it runs), or its diagnostics printed and `None`.
fn compile_read(
    path: &std::path::Path,
    source: &str,
) -> Result<Option<crate::compile::Plan>, Error> {
    match crate::compile::check(source) {
        Ok(plan) => Ok(Some(plan)),
        Err(diagnostics) => {
            let name = path.display().to_string();
            eprint!(
                "{}",
                crate::diagnostic::render(&name, source, &diagnostics, color_stderr())
            );
            Ok(None)
        }
    }
}

fn color_stderr() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}
