//! Command-line arguments (DESIGN §7). Scripts depend on these names and exit codes.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "gitvisor",
    version,
    about = "Declarative GitOps reconciler for Linux hosts: VMs, containers, bridges and volumes from manifests in git"
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
        default_value = "/var/lib/gitvisor"
    )]
    pub state_dir: PathBuf,
    /// Where runtime files (sockets, pid files) live.
    #[arg(
        long,
        global = true,
        env = "GITVISOR_RUN_DIR",
        default_value = "/run/gitvisor"
    )]
    pub run_dir: PathBuf,
    /// The host name matched against `metadata.host` (default: this machine's hostname).
    #[arg(long, global = true, env = "GITVISOR_HOST")]
    pub host: Option<String>,
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log lines on stderr as text or JSON.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests: exit 0 valid, 1 invalid (every error printed as file:line:col).
    Validate {
        /// A manifest file, or a directory searched for *.yaml / *.yml.
        path: PathBuf,
    },
    /// Show what apply would change: exit 0 (or 2 with --detailed-exitcode when there are changes), 1 on error.
    Plan {
        /// A manifest file, or a directory searched for *.yaml / *.yml.
        path: PathBuf,
        /// `json`: one stable JSON object, for scripts and CI.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Exit 2 when the plan has changes.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Converge the host; never prompts: exit 0 converged, 1 not.
    Apply {
        /// A manifest file, or a directory searched for *.yaml / *.yml.
        path: PathBuf,
        /// `json`: one stable JSON object, for scripts and CI.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// How many resources may be changed at once.
        #[arg(long, default_value_t = crate::execute::DEFAULT_CONCURRENCY)]
        concurrency: usize,
    },
    /// Managed resources: kind, name, state, last revision, error.
    Status {
        /// `json`: one stable JSON object, for scripts and CI.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Print the dependency graph.
    Graph {
        /// A manifest file, or a directory searched for *.yaml / *.yml.
        path: PathBuf,
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
        /// Bridge, Volume, Container or VirtualMachine.
        kind: Option<String>,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}
