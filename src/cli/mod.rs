//! The command line: parses arguments and calls the layers below.

mod check;
mod fmt;
mod graph;
mod plan;

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
pub const EXIT_ERROR: u8 = 1;
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
    let result = match cli.command {
        Command::Check { files, format } => check::run(&files, matches!(format, CheckFormat::Json)),
        Command::Fmt { files, check } => fmt::run(&files, check),
        Command::Graph { file, format } => graph::run(&file, format),
        Command::Plan { file, params } => plan::run(&file, &params),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Reads and compiles one file, printing its diagnostics; `Ok(None)` when it has some.
fn load(path: &std::path::Path) -> Result<Option<crate::compile::Plan>, Error> {
    let source = crate::error::read_source(path)?;
    match crate::compile::check(&source) {
        Ok(plan) => Ok(Some(plan)),
        Err(diagnostics) => {
            let name = path.display().to_string();
            eprint!(
                "{}",
                crate::diagnostic::render(&name, &source, &diagnostics, color_stderr())
            );
            Ok(None)
        }
    }
}

fn color_stderr() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}
