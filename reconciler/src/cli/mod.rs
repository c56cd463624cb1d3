//! The command line: argument parsing, then one function per command. `anyhow` is used
//! only here, at the edge; errors print as one paragraph, never a backtrace.

mod args;
mod doctor;
mod reconcile;
mod status;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};

pub use args::{Cli, Command, GlobalArgs, GraphFormat, LogFormat, OutputFormat};

use crate::load;
use crate::model::Kind;

/// Exit code for "the plan has changes" with `--detailed-exitcode`.
pub const EXIT_CHANGES: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines go to stderr. Which: `GITVISOR_LOG`, else `RUST_LOG` (both in `EnvFilter`
/// syntax), else the verbosity: warnings only, `-v` adds gitvisor's own debug lines,
/// `-vv` its trace lines; dependencies (netlink, redb, …) stay at warn unless one of the
/// variables asks for more. Colour only when stderr is a terminal and `NO_COLOR` is unset,
/// so journald and CI logs never store escape codes.
fn init_logging(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;

    let default = match global.verbose {
        0 => "warn",
        1 => "warn,gitvisor=debug",
        _ => "warn,gitvisor=trace",
    };
    let mut rejected = None;
    let mut filter = None;
    for variable in ["GITVISOR_LOG", "RUST_LOG"] {
        let Some(value) = std::env::var_os(variable) else {
            continue;
        };
        match EnvFilter::try_new(value.to_string_lossy()) {
            Ok(parsed) => {
                filter = Some(parsed);
                break;
            }
            Err(err) => rejected = Some(format!("ignoring {variable}: {err}")),
        }
    }
    let filter = filter.unwrap_or_else(|| EnvFilter::new(default));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Some(rejected) = rejected {
        tracing::warn!("{rejected}");
    }
}

pub fn host_name(global: &GlobalArgs) -> String {
    global.host.clone().unwrap_or_else(crate::hostname::current)
}

pub fn color_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> Result<ExitCode> {
    let global = &cli.global;
    match cli.command {
        Command::Validate { path } => {
            let host = host_name(global);
            match load::load_revision(&path, &host) {
                Ok(revision) => {
                    println!(
                        "{}: valid, {} resource{} for host {host} (revision {})",
                        path.display(),
                        revision.resources.len(),
                        if revision.resources.len() == 1 {
                            ""
                        } else {
                            "s"
                        },
                        revision.id
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    eprint!("{errors}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Plan {
            path,
            output,
            detailed_exitcode,
        } => runtime()?.block_on(reconcile::plan(global, &path, output, detailed_exitcode)),
        Command::Apply {
            path,
            output,
            concurrency,
        } => runtime()?.block_on(reconcile::apply(global, &path, output, concurrency)),
        Command::Status { output } => status::status(global, output),
        Command::Graph { path, format } => {
            let revision = load_or_report(&path, &host_name(global))?;
            match format {
                GraphFormat::Dot => print!("{}", revision.graph.to_dot()),
                GraphFormat::Mermaid => print!("{}", revision.graph.to_mermaid()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { path, output } => doctor::doctor(global, path.as_deref(), output),
        Command::Schema { kind } => {
            let kind = kind
                .map(|k| k.parse::<Kind>().map_err(anyhow::Error::msg))
                .transpose()?;
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::schema::schema(kind))?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "gitvisor",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads a revision, turning validation errors into one error listing every diagnostic.
pub fn load_or_report(path: &std::path::Path, host: &str) -> Result<load::Revision> {
    load::load_revision(path, host).map_err(|errors| anyhow::anyhow!("{errors}"))
}
