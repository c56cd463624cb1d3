//! The command line: argument parsing, then one function per command that asks the
//! library ([`crate::reconcile::Reconciler`]) and renders what it says. `anyhow` is used
//! only here, at the edge; errors print as one paragraph, never a backtrace.
//!
//! Exit codes (docs/cli.md): 0 success or nothing to do, 1 an error or a host that is not
//! (or cannot be) converged, 2 changes (`plan --detailed-exitcode`), 64 a usage error.
//! With `--output json`, errors are one JSON object on stdout too.

mod apply;
mod arenas;
mod args;
mod console;
mod controller;
mod doctor;
mod errors;
mod events;
mod exec;
mod image;
pub mod output;
mod plan;
mod run;
mod status;
mod sync;
mod table;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};

pub use args::{
    Cli, Command, GlobalArgs, GraphFormat, ImageCommand, LogFormat, OutputFormat, RunArgs,
    ScopeArgs,
};

use crate::reconcile::{self, Reconciler, ReconcilerOptions, Source};

/// Where this gitvisor keeps its files, as the drivers' extras take it.
fn host_settings(global: &GlobalArgs) -> crate::drivers::HostSettings {
    crate::drivers::HostSettings {
        run_dir: global.run_dir.clone(),
        state_dir: global.state_dir.clone(),
    }
}

/// Exit code for "the plan has changes" with `--detailed-exitcode`.
pub const EXIT_CHANGES: u8 = 2;
/// Exit code for an error, or a host that is not (or cannot be) converged.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage error (BSD `EX_USAGE`), distinct from "changes".
pub const EXIT_USAGE: u8 = 64;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return errors::usage(&err),
    };
    init_logging(&cli.global, matches!(cli.command, Command::Run(_)));
    let output = cli.command.output();
    match run(cli) {
        Ok(code) => code,
        Err(err) => errors::report(&err, output),
    }
}

/// Log lines go to stderr. Which: `GITVISOR_LOG`, else `RUST_LOG` (both in `EnvFilter`
/// syntax), else the verbosity: warnings only (the controller, `daemon`: its info lines
/// too, what it applied and why), `-v` adds gitvisor's own debug lines, `-vv` its trace
/// lines; dependencies (netlink, redb, …) stay at warn unless one of the variables asks
/// for more. Colour only when stderr is a terminal and `NO_COLOR` is unset, so journald
/// and CI logs never store escape codes; under systemd (`JOURNAL_STREAM`) without
/// timestamps, which journald adds.
fn init_logging(global: &GlobalArgs, daemon: bool) {
    use tracing_subscriber::EnvFilter;

    let default = match (global.verbose, daemon) {
        (0, false) => "warn",
        (0, true) => "warn,gitvisor=info",
        (1, _) => "warn,gitvisor=debug",
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
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    // The controller under systemd speaks journald's native protocol, so every line keeps
    // its structured fields (the resource and revision of the spans it happened in, as
    // `S<n>_…`/`F_…` fields). Without the journal socket it falls back to plain lines on
    // stderr, which journald stores too.
    if daemon
        && journal
        && global.log_format == LogFormat::Text
        && let Ok(layer) = tracing_journald::layer()
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(layer.with_syslog_identifier("gitvisor".to_owned()))
            .try_init();
        if let Some(rejected) = rejected {
            tracing::warn!("{rejected}");
        }
        return;
    }
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .with_writer(std::io::stderr);
    let _ = match (global.log_format, journal) {
        (LogFormat::Text, false) => builder.try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Json, _) => builder.json().try_init(),
    };
    if let Some(rejected) = rejected {
        tracing::warn!("{rejected}");
    }
}

pub fn host_name(global: &GlobalArgs) -> String {
    global.host.clone().unwrap_or_else(crate::hostname::current)
}

pub fn color_stdout() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map(|runtime| Runtime(Some(runtime)))
        .context("cannot start the async runtime")
}

/// How long a command, once done, waits for blocking work still running (a step it
/// abandoned: an import stuck on a stalled download) before it exits anyway.
pub(crate) const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A command's async runtime. Dropping a plain Tokio runtime waits for every blocking
/// task to return, and a step abandoned at its deadline or on SIGTERM may be blocked in
/// one for a long time: this one waits [`SHUTDOWN_GRACE`] at most, then lets the process
/// exit.
pub(crate) struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match &self.0 {
            Some(runtime) => runtime.block_on(future),
            None => unreachable!("a runtime is only taken by its drop"),
        }
    }

    /// Drops the runtime without waiting for blocking tasks at all.
    pub(crate) fn shutdown_background(mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
        }
    }
}

fn options(global: &GlobalArgs, concurrency: usize) -> ReconcilerOptions {
    ReconcilerOptions {
        state_dir: global.state_dir.clone(),
        run_dir: global.run_dir.clone(),
        host: host_name(global),
        concurrency,
    }
}

/// The reconciler for this host, with its drivers connected (inside `runtime`).
fn reconciler(global: &GlobalArgs, concurrency: usize) -> Result<Reconciler> {
    Ok(Reconciler::connect(options(global, concurrency))?)
}

/// Loads the revision the paths form, or fails with every diagnostic (kept typed, so
/// `--output json` can list them).
fn load(paths: &[PathBuf], global: &GlobalArgs) -> Result<(Source, crate::load::Revision)> {
    let source = Source::from_paths(paths);
    let revision = reconcile::load(&source, &host_name(global)).map_err(anyhow::Error::new)?;
    Ok((source, revision))
}

fn run(cli: Cli) -> Result<ExitCode> {
    let global = &cli.global;
    match cli.command {
        Command::Validate { paths, output } => {
            let (_, revision) = load(&paths, global)?;
            let host = host_name(global);
            let count = revision.resources.len();
            let text = match output {
                OutputFormat::Json => format!(
                    "{}\n",
                    serde_json::json!({
                        "valid": true,
                        "host": host,
                        "revision": revision.id,
                        "resources": count,
                    })
                ),
                OutputFormat::Text => format!(
                    "{}: valid, {count} resource{} for host {host} (revision {})\n",
                    paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                    if count == 1 { "" } else { "s" },
                    revision.id
                ),
            };
            output::stdout(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            paths,
            output,
            detailed_exitcode,
            scope,
        } => {
            let (source, revision) = load(&paths, global)?;
            runtime()?.block_on(async {
                let reconciler = reconciler(global, reconcile::DEFAULT_CONCURRENCY)?;
                plan::plan(
                    &reconciler,
                    &revision,
                    &source,
                    &scope,
                    output,
                    detailed_exitcode,
                    global.verbose > 0,
                )
                .await
            })
        }
        Command::Apply {
            paths,
            output,
            scope,
            concurrency,
        } => {
            let (source, revision) = load(&paths, global)?;
            // A running controller owns this state dir: an apply beside it is refused
            // with the way to go through it (`gitvisor sync`) or stop it.
            crate::state::ControllerClaim::refuse_if_claimed(&global.state_dir)?;
            runtime()?.block_on(async {
                let reconciler = reconciler(global, usize::from(concurrency))?;
                apply::apply(&reconciler, &revision, &source, &scope, output).await
            })
        }
        Command::Status { output, offline } => runtime()?.block_on(async {
            // A running controller answers from its snapshot (it holds the store's lock
            // only while it applies, and its snapshot is fresher); `--offline` reads the
            // store itself.
            if !offline
                && let Some(client) = crate::daemon::api::ApiClient::find(&global.run_dir).await?
            {
                // The snapshot is as of the last reconcile: observe the host now too
                // (read-only, as without a controller) for the LIVE column.
                let host = match reconciler(global, reconcile::DEFAULT_CONCURRENCY) {
                    Ok(reconciler) => match reconciler.status(false).await {
                        Ok(report) => report
                            .host
                            .ok_or_else(|| "the host was not observed".to_owned()),
                        Err(error) => Err(crate::contract::chain(&error)),
                    },
                    Err(error) => Err(format!("{error:#}")),
                };
                return controller::status(&client, output, host).await;
            }
            let reconciler = if offline {
                // The store alone: no driver is connected, nothing on the host is read.
                Reconciler::new(options(global, 1), crate::drivers::Drivers::default())
            } else {
                reconciler(global, reconcile::DEFAULT_CONCURRENCY)?
            };
            status::status(&reconciler, output, offline).await
        }),
        Command::Run(args) => run::run(global, &args),
        Command::Events {
            follow,
            limit,
            output,
        } => runtime()?.block_on(events::events(&global.run_dir, follow, limit, output)),
        Command::Sync { no_wait, output } => {
            runtime()?.block_on(sync::sync(&global.run_dir, no_wait, output))
        }
        Command::Graph { paths, format } => {
            let (_, revision) = load(&paths, global)?;
            output::stdout(&match format {
                GraphFormat::Dot => revision.graph.to_dot(),
                GraphFormat::Mermaid => revision.graph.to_mermaid(),
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { path, output } => doctor::doctor(global, path.as_deref(), output),
        Command::Schema { kind } => {
            output::stdout(&format!(
                "{}\n",
                serde_json::to_string_pretty(&crate::schema::schema(kind))?
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Console { name } => console::run(global, &name),
        Command::Image {
            command: ImageCommand::Prune { dry_run, output },
        } => image::prune(global, dry_run, output),
        Command::Exec {
            name,
            interactive,
            tty,
            command,
        } => exec::run(global, &name, interactive, tty, &command),
        Command::Logs { name, follow } => {
            // The kind that keeps its resources' logs (containers).
            let logs = crate::drivers::registry()
                .iter()
                .find_map(|registration| registration.logs)
                .context("no kind of this build keeps logs")?;
            logs(&host_settings(global), &name, follow).map_err(|error| anyhow::anyhow!(error))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ContainerShim { args } => {
            let Some(helper) = crate::drivers::registry()
                .iter()
                .filter_map(|registration| registration.helper)
                .find(|helper| helper.command == "container-shim")
            else {
                anyhow::bail!("no kind of this build has a container-shim");
            };
            Ok((helper.run)(args))
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "gitvisor", &mut script);
            output::stdout(&String::from_utf8_lossy(&script))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
