//! Command-line arguments (docs/cli.md). Scripts depend on these names and exit codes.
//!
//! Every numeric flag is bounded here, so no value a user can type reaches the engine out
//! of range; kinds are parsed case-insensitively and offered to shell completion.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand, ValueEnum};

use crate::model::{Kind, Name, ResourceId};

/// The heading global flags are listed under in every command's help.
const GLOBAL: &str = "Global options";

/// The most resources one apply may change at once.
pub const MAX_CONCURRENCY: u16 = 1024;

#[derive(Debug, Parser)]
#[command(
    name = "gitvisor",
    version,
    about = "Declarative GitOps reconciler for Linux hosts: VMs, containers, bridges and volumes from manifests in git",
    after_help = "Exit codes: 0 nothing to do / success, 1 error or not converged, \
                  2 changes (plan --detailed-exitcode), 64 usage error. See docs/cli.md."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Where gitvisor keeps its state store.
    #[arg(
        long,
        global = true,
        env = "GITVISOR_STATE_DIR",
        default_value = "/var/lib/gitvisor",
        help_heading = GLOBAL
    )]
    pub state_dir: PathBuf,
    /// Where runtime files (sockets, pid files) live.
    #[arg(
        long,
        global = true,
        env = "GITVISOR_RUN_DIR",
        default_value = "/run/gitvisor",
        help_heading = GLOBAL
    )]
    pub run_dir: PathBuf,
    /// The host name matched against `metadata.host` (default: this machine's hostname).
    #[arg(long, global = true, env = "GITVISOR_HOST", help_heading = GLOBAL)]
    pub host: Option<String>,
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Log lines on stderr as text or JSON.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, help_heading = GLOBAL)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON object on stdout (errors too), for scripts and CI; see docs/cli.md.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz: `gitvisor graph PATH | dot -Tsvg > graph.svg`.
    Dot,
    /// A Mermaid flowchart, for Markdown pages that render Mermaid.
    Mermaid,
}

/// `--prune` / `--no-prune` / `--target`, shared by `plan` and `apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScopeArgs {
    /// Confirm the deletes that are otherwise left out: objects last declared by another
    /// source, or every managed resource at once (an emptied repository).
    #[arg(long, conflicts_with = "no_prune")]
    pub prune: bool,
    /// Delete nothing; objects no longer declared stay on the host.
    #[arg(long)]
    pub no_prune: bool,
    /// Only this resource (KIND/NAME, e.g. Bridge/br-lan) and what it depends on;
    /// repeatable. Nothing outside the targets is changed or deleted.
    #[arg(long = "target", value_name = "KIND/NAME", value_parser = parse_target)]
    pub targets: Vec<ResourceId>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests without touching the host.
    ///
    /// Exit 0 valid, 1 invalid (every error printed as file:line:col: field: message).
    Validate {
        /// Manifest files or directories (searched for *.yaml / *.yml); several form one
        /// revision.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Show what apply would change; never changes anything.
    ///
    /// Exit 0: nothing to do (or changes, without --detailed-exitcode); 2: changes apply
    /// can make, with --detailed-exitcode; 1: an error, or a plan apply cannot converge
    /// (a conflict `!`, a kind without a driver `?`).
    Plan {
        /// Manifest files or directories (searched for *.yaml / *.yml); several form one
        /// revision.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Exit 2 when apply would change something.
        #[arg(long)]
        detailed_exitcode: bool,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Converge the host; never prompts.
    ///
    /// Exit 0 converged (and confirmed by observing the host again), 1 not, or an error.
    Apply {
        /// Manifest files or directories (searched for *.yaml / *.yml); several form one
        /// revision.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[command(flatten)]
        scope: ScopeArgs,
        /// How many resources may be changed at once (1 to 1024).
        #[arg(
            long,
            default_value_t = crate::reconcile::DEFAULT_CONCURRENCY as u16,
            value_parser = clap::value_parser!(u16).range(1..=MAX_CONCURRENCY as i64)
        )]
        concurrency: u16,
    },
    /// Managed resources, and how the host compares with the last applied revision.
    ///
    /// Columns: KIND, NAME, STATE (as the last apply recorded it), LIVE (the host now),
    /// REVISION, MESSAGE (drift, or why the last action failed). Never writes the store.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Show the store alone; do not observe the host.
        #[arg(long)]
        offline: bool,
    },
    /// Print the dependency graph of the manifests.
    Graph {
        /// Manifest files or directories (searched for *.yaml / *.yml); several form one
        /// revision.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// The graph language to print.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Per kind: whether this build has its driver and this host what it needs, with the
    /// fix; exit 1 when a kind PATH declares cannot be applied here.
    Doctor {
        /// Manifests whose kinds to check (default: report on every kind, exit 0).
        path: Option<PathBuf>,
        /// `json`: one stable JSON object, for scripts and CI.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Print the JSON Schema of one kind, or of any manifest.
    Schema {
        /// Bridge, Volume, Container or VirtualMachine (any case).
        #[arg(value_parser = kind_parser(), ignore_case = true)]
        kind: Option<Kind>,
    },
    /// Print a container's output (stdout and stderr, as its log file keeps them).
    Logs {
        /// The Container's name.
        name: String,
        /// Keep printing what the container writes, until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// A container's supervisor, started by gitvisor itself (not for people).
    #[command(hide = true)]
    ContainerShim {
        #[arg(long)]
        runc: PathBuf,
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        parent: Option<i32>,
        #[arg(long)]
        start: bool,
    },
}

impl Command {
    /// The output format the command was asked for (errors follow it).
    pub fn output(&self) -> OutputFormat {
        match self {
            Command::Validate { output, .. }
            | Command::Plan { output, .. }
            | Command::Apply { output, .. }
            | Command::Status { output, .. }
            | Command::Doctor { output, .. } => *output,
            Command::Graph { .. }
            | Command::Schema { .. }
            | Command::Completions { .. }
            | Command::Logs { .. }
            | Command::ContainerShim { .. } => OutputFormat::Text,
        }
    }
}

/// A kind, any case, offered to completion.
fn kind_parser() -> impl TypedValueParser<Value = Kind> {
    PossibleValuesParser::new(Kind::ALL.map(Kind::as_str)).try_map(|text| parse_kind(&text))
}

/// A kind named in any case (`bridge`, `BRIDGE`); manifests themselves stay exact.
fn parse_kind(text: &str) -> Result<Kind, String> {
    Kind::ALL
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(text))
        .ok_or_else(|| {
            format!(
                "unknown kind {text:?}: expected one of Bridge, Volume, Container, VirtualMachine"
            )
        })
}

/// `KIND/NAME`, the kind in any case.
fn parse_target(text: &str) -> Result<ResourceId, String> {
    let (kind, name) = text
        .split_once('/')
        .ok_or_else(|| format!("expected KIND/NAME, e.g. Bridge/br-lan, not {text:?}"))?;
    Ok(ResourceId::new(parse_kind(kind)?, Name::parse(name)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn targets_take_any_case_of_kind() {
        assert_eq!(
            parse_target("bridge/br-lan").unwrap().to_string(),
            "Bridge/br-lan"
        );
        assert!(parse_target("Bridge").is_err());
        assert!(parse_target("Disk/x").is_err());
    }

    #[test]
    fn schema_kind_is_case_insensitive() {
        let cli = Cli::try_parse_from(["gitvisor", "schema", "bridge"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Schema {
                kind: Some(Kind::Bridge)
            }
        ));
        let cli = Cli::try_parse_from(["gitvisor", "schema", "VIRTUALMACHINE"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Schema {
                kind: Some(Kind::VirtualMachine)
            }
        ));
        assert!(Cli::try_parse_from(["gitvisor", "schema", "disk"]).is_err());
    }

    #[test]
    fn concurrency_is_bounded() {
        for bad in ["0", "1025", "3000000000000000000", "-1"] {
            assert!(
                Cli::try_parse_from(["gitvisor", "apply", "x", "--concurrency", bad]).is_err(),
                "--concurrency {bad} was accepted"
            );
        }
        assert!(Cli::try_parse_from(["gitvisor", "apply", "x", "--concurrency", "1024"]).is_ok());
    }

    #[test]
    fn prune_flags_exclude_each_other() {
        assert!(Cli::try_parse_from(["gitvisor", "apply", "x", "--prune", "--no-prune"]).is_err());
    }

    #[test]
    fn global_flags_are_grouped_in_every_subcommand_help() {
        let mut cli = Cli::command();
        cli.build();
        for sub in cli.get_subcommands_mut().filter(|s| s.get_name() != "help") {
            let help = sub.render_long_help().to_string();
            let heading = help.find("Global options:").unwrap_or_else(|| {
                panic!("{} help has no Global options:\n{help}", sub.get_name())
            });
            assert!(
                help[heading..].contains("--state-dir"),
                "{} lists --state-dir outside the heading:\n{help}",
                sub.get_name()
            );
        }
    }
}
