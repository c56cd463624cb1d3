//! `image prune [--dry-run]`: collects what no resource on this host uses at once (the
//! container image store, through the Container kind's registration: `collect`), and
//! prints what went and the bytes freed.
//!
//! The controller collects the same store by itself, after a grace period
//! (`gitvisor run --image-gc-after`); this command is for reclaiming space now.

use std::process::ExitCode;

use anyhow::{Result, bail};

use super::{GlobalArgs, OutputFormat};
use crate::drivers::registry;

pub fn prune(global: &GlobalArgs, dry_run: bool, output: OutputFormat) -> Result<ExitCode> {
    // The kind with a store to collect (container images).
    let Some(collect) = registry()
        .iter()
        .find_map(|registration| registration.collect)
    else {
        bail!("no kind of this build has a store to collect");
    };
    let collected =
        collect(&super::host_settings(global), dry_run).map_err(|error| anyhow::anyhow!(error))?;
    let text = match output {
        OutputFormat::Json => format!("{}\n", collected.json),
        OutputFormat::Text => collected.text,
    };
    super::output::stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}
