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
    /// (a conflict `!`; `?`: a kind without a driver, or a resource the host lacks what it
    /// needs for, such as a VM's missing initrd).
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
    /// Run the controller (the systemd service): keep this host at the newest valid
    /// revision of a directory or a git repository, repair drift, serve the local API.
    ///
    /// Stops on SIGTERM/SIGINT (the running step finishes or stops at a safe point);
    /// SIGHUP reads the source again and retries every held resource. See
    /// docs/controller.md.
    Run(RunArgs),
    /// Recent events of the running controller (`-f`: then follow new ones).
    Events {
        /// Keep printing events as they happen, until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// How many recent events to print first (0 to 500).
        #[arg(short = 'n', long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(0..=500))]
        limit: u16,
        /// Output format (json: one object per line).
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Ask the running controller to reconcile now: read the source, retry every held
    /// resource, apply; wait for the outcome.
    ///
    /// Exit 0 converged, 1 not (or a rejected revision, or no controller running).
    Sync {
        /// Return once the sync is queued instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
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
        /// Bridge, NfsMount, Volume, Container or VirtualMachine (any case).
        #[arg(value_parser = kind_parser(), ignore_case = true)]
        kind: Option<Kind>,
    },
    /// Manage the container image store.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Print a container's output (stdout and stderr, as its log file keeps them).
    Logs {
        /// The Container's name.
        name: String,
        /// Keep printing what the container writes, until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
    /// Run a command in a running container that gitvisor manages (the runtime's exec).
    ///
    /// The command runs as the container's user, in its working directory and
    /// environment; gitvisor exits with the command's exit status. `-i` keeps stdin
    /// attached, `-t` gives the command a terminal (`-it` for a shell).
    Exec {
        /// The Container's name.
        #[arg(value_parser = parse_name)]
        name: Name,
        /// Keep stdin attached to the command (otherwise it reads nothing).
        #[arg(short, long)]
        interactive: bool,
        /// Allocate a terminal for the command.
        #[arg(short, long)]
        tty: bool,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// Attach to a VM's serial console (its socket under the run dir).
    ///
    /// Detach with Ctrl-] (the byte 0x1d). With a terminal, it is put in raw mode so keys
    /// reach the guest as typed; with piped input, the input is sent and the guest's
    /// output printed until the console closes or gitvisor is interrupted.
    Console {
        /// The VirtualMachine's name.
        #[arg(value_parser = parse_name)]
        name: Name,
    },
    /// A container's supervisor, started by gitvisor itself (not for people). Its
    /// arguments are the Container kind's own (its registration's `helper`), parsed there.
    #[command(hide = true, disable_help_flag = true)]
    ContainerShim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// `gitvisor image …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ImageCommand {
    /// Remove the image layers and blobs no container on this host uses (running or
    /// stopped, declared or not), and print what went and the bytes freed.
    ///
    /// Exit 0 done; 1 an error, or an image import under way (prune again later).
    Prune {
        /// Print what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
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
            | Command::Doctor { output, .. }
            | Command::Events { output, .. }
            | Command::Sync { output, .. }
            | Command::Image {
                command: ImageCommand::Prune { output, .. },
            } => *output,
            Command::Graph { .. }
            | Command::Schema { .. }
            | Command::Completions { .. }
            | Command::Console { .. }
            | Command::Logs { .. }
            | Command::Exec { .. }
            | Command::ContainerShim { .. }
            | Command::Run(_) => OutputFormat::Text,
        }
    }
}

/// `gitvisor run`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// A directory of manifests (watched: a save is applied within a second), or a git
    /// URL (file://, ssh://, https://, git://, user@host:path), fetched with the git CLI.
    #[arg(long, value_name = "DIR|GIT-URL", env = "GITVISOR_SOURCE")]
    pub source: String,
    /// The branch, tag or commit of a git source to follow (default: the remote's HEAD).
    #[arg(long = "ref", value_name = "REF", env = "GITVISOR_REF")]
    pub git_ref: Option<String>,
    /// The directory inside the source to load (default: all of it).
    #[arg(long, value_name = "PATH", env = "GITVISOR_PATH")]
    pub path: Option<PathBuf>,
    /// How often to fetch a git source (1s to 7d).
    #[arg(long, value_name = "DURATION", default_value = "60s", env = "GITVISOR_POLL", value_parser = parse_interval)]
    pub poll: std::time::Duration,
    /// How often to compare the host with the revision and repair drift (1s to 7d).
    #[arg(long, value_name = "DURATION", default_value = "5m", env = "GITVISOR_RESYNC", value_parser = parse_interval)]
    pub resync: std::time::Duration,
    /// Serve Prometheus metrics at http://ADDRESS/metrics: `PORT` or `:PORT` (loopback),
    /// `IP:PORT` or `[IPv6]:PORT`. Off unless given.
    #[arg(long, value_name = "ADDRESS", env = "GITVISOR_METRICS_LISTEN", value_parser = parse_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Apply only commits with an SSH signature by a key listed in this allowed-signers
    /// file (git's `gpg.ssh.allowedSignersFile` format); others are rejected.
    #[arg(
        long,
        value_name = "FILE",
        env = "GITVISOR_ALLOWED_SIGNERS",
        conflicts_with = "gpg_home"
    )]
    pub allowed_signers: Option<PathBuf>,
    /// Apply only commits with an OpenPGP signature by a key in this GnuPG home
    /// directory; others are rejected.
    #[arg(long, value_name = "DIR", env = "GITVISOR_GPG_HOME")]
    pub gpg_home: Option<PathBuf>,
    /// How many resources may be changed at once (1 to 1024).
    #[arg(
        long,
        default_value_t = crate::reconcile::DEFAULT_CONCURRENCY as u16,
        value_parser = clap::value_parser!(u16).range(1..=MAX_CONCURRENCY as i64)
    )]
    pub concurrency: u16,
    /// Remove container image layers and blobs no container has used for this long
    /// (checked hourly; `off`: never, leaving it to `gitvisor image prune`).
    #[arg(long, value_name = "DURATION|off", default_value = "24h", env = "GITVISOR_IMAGE_GC_AFTER", value_parser = parse_gc_after)]
    pub image_gc_after: ImageGcAfter,
}

/// `--image-gc-after`: a grace period, or `None` for off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcAfter(pub Option<std::time::Duration>);

fn parse_gc_after(text: &str) -> Result<ImageGcAfter, String> {
    if text == "off" {
        return Ok(ImageGcAfter(None));
    }
    humantime::parse_duration(text)
        .map(|grace| ImageGcAfter(Some(grace)))
        .map_err(|err| format!("{err} (write e.g. 24h, 7d, or off)"))
}

/// The shortest and longest `--poll` and `--resync`.
const INTERVAL_BOUNDS: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(7 * 24 * 3600),
);

/// A duration such as `30s`, `5m`, `1h 30m`, between 1 s and 7 days.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|err| format!("{err} (write e.g. 30s, 5m, 1h)"))?;
    let (min, max) = INTERVAL_BOUNDS;
    if duration < min || duration > max {
        return Err("must be between 1s and 7d".to_owned());
    }
    Ok(duration)
}

/// `PORT` and `:PORT` listen on loopback; `IP:PORT` and `[IPv6]:PORT` as written.
fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    let port = text.strip_prefix(':').unwrap_or(text);
    if let Ok(port) = port.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| {
        format!("expected PORT, :PORT, IP:PORT or [IPv6]:PORT (no host names), not {text:?}")
    })
}

/// A kind, any case, offered to completion.
fn kind_parser() -> impl TypedValueParser<Value = Kind> {
    PossibleValuesParser::new(Kind::all().into_iter().map(Kind::as_str))
        .try_map(|text| parse_kind(&text))
}

/// A kind named in any case (`bridge`, `BRIDGE`); manifests themselves stay exact.
fn parse_kind(text: &str) -> Result<Kind, String> {
    Kind::parse_any_case(text)
}

/// A resource name.
fn parse_name(text: &str) -> Result<Name, String> {
    Name::parse(text)
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
    fn metrics_listen_defaults_to_loopback() {
        assert_eq!(parse_listen("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(parse_listen(":9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(
            parse_listen("0.0.0.0:9464").unwrap().to_string(),
            "0.0.0.0:9464"
        );
        assert_eq!(
            parse_listen("[::1]:9464").unwrap().to_string(),
            "[::1]:9464"
        );
        assert!(parse_listen("localhost:9464").is_err());
        assert!(parse_listen("70000").is_err());
    }

    #[test]
    fn intervals_are_bounded() {
        assert_eq!(parse_interval("5m").unwrap().as_secs(), 300);
        for bad in ["0s", "500ms", "8d", "soon"] {
            assert!(parse_interval(bad).is_err(), "{bad} was accepted");
        }
        assert!(
            Cli::try_parse_from(["gitvisor", "run", "--source", "/m", "--resync", "0s"]).is_err()
        );
        assert!(
            Cli::try_parse_from([
                "gitvisor",
                "run",
                "--source",
                "/m",
                "--allowed-signers",
                "a",
                "--gpg-home",
                "b"
            ])
            .is_err()
        );
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
