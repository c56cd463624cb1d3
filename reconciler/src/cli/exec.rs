//! `gitvisor exec NAME [-i] [-t] -- COMMAND…`: a command in a running resource that
//! gitvisor manages, run by its kind's own runtime (a Container's: runc's `exec`).
//!
//! The kind checks the resource and builds the command (its registration's `exec`, see
//! the container driver's `exec` module for why gitvisor becomes runc); this command
//! then replaces itself with it (`execve`), so nothing of gitvisor stays in between: the
//! exit status, the signals and the terminal are the command's.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::GlobalArgs;
use crate::drivers::{ExecRequest, registry};
use crate::model::Name;

pub fn run(
    global: &GlobalArgs,
    name: &Name,
    interactive: bool,
    tty: bool,
    command: &[String],
) -> Result<ExitCode> {
    // The kind whose resources run commands (containers).
    let Some(prepare) = registry().iter().find_map(|registration| registration.exec) else {
        bail!("no kind of this build runs commands");
    };
    let request = ExecRequest {
        interactive,
        tty,
        command: command.to_vec(),
    };
    let settings = super::host_settings(global);
    let mut prepared = super::runtime()?
        .block_on(prepare(&settings, name, &request))
        .map_err(|error| anyhow::anyhow!(error))?;
    // Returns only when the command could not be started.
    let error = prepared.command.exec();
    Err(error).context(prepared.cannot_start)
}
