//! `gitvisor exec NAME [-i] [-t] -- COMMAND…`: a command in a running container that
//! gitvisor manages, run by the container runtime's own `exec`.
//!
//! # Why gitvisor becomes runc
//!
//! After its checks, gitvisor replaces itself (`execve`) with `runc --root <run-dir>/runc
//! exec [--tty] NAME COMMAND…`. The command then joins the container exactly as runc
//! joins it (namespaces, cgroup, the container's user, working directory, environment,
//! capabilities and `no_new_privileges`), and nothing of gitvisor stays in between:
//! the exit status is the command's (128 + N when signal N ended it), Ctrl-C and the
//! other signals go to runc, which forwards them to the command, and with `-t` runc
//! allocates the pseudo-terminal, puts the caller's terminal in raw mode and copies
//! both ways (it runs attached, so it needs no console socket). runc takes that
//! terminal from the caller's controlling terminal (`/dev/tty`), so `-t` without one
//! is refused here, with a message that says so.
//!
//! # Checks
//!
//! Only a container that is gitvisor's is entered: it must be under gitvisor's runtime
//! root *and* carry the managed annotation naming it (the marker the driver sets); one
//! that is not running is refused with its state, as runc's own message would not say
//! what to do. The state store is not opened: a running controller holds it.

use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};

use anyhow::{Context, Result, bail};

use super::GlobalArgs;
use crate::drivers::container::host::{RUNTIME_ROOT_SUBDIR, pick_runtime};
use crate::drivers::container::runc::{Runc, SERVICE_VARIABLES};
use crate::drivers::container::seam::{MANAGED_ANNOTATION, RuntimeStatus};
use crate::model::Name;

pub fn run(
    global: &GlobalArgs,
    name: &Name,
    interactive: bool,
    tty: bool,
    command: &[String],
) -> Result<ExitCode> {
    let mut runc = Runc::new(global.run_dir.join(RUNTIME_ROOT_SUBDIR));
    runc.binary = pick_runtime();
    let state = super::runtime()?
        .block_on(runc.state(name.as_str()))
        .with_context(|| {
            format!(
                "cannot look up container {name} under {}",
                runc.root.display()
            )
        })?;
    let Some(state) = state else {
        bail!(
            "no container {name} managed by gitvisor on this host: {} has none (is it declared and applied, with this --run-dir?)",
            runc.root.display()
        );
    };
    let marker = state
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(MANAGED_ANNOTATION));
    if marker.map(String::as_str) != Some(name.as_str()) {
        bail!(
            "container {name} under {} does not carry gitvisor's marker ({MANAGED_ANNOTATION}: {name}); gitvisor runs commands only in containers it manages",
            runc.root.display()
        );
    }
    match state.status() {
        Some(RuntimeStatus::Running) => {}
        Some(status) => bail!(
            "container {name} is {status}, not running: a command needs its process; declare `state: Running` and apply (`gitvisor status` says why it stopped)"
        ),
        None => bail!(
            "container {name} is in a state gitvisor does not know ({}); see `gitvisor status`",
            state.status
        ),
    }

    // runc's terminal is the caller's controlling terminal (`/dev/tty`): without one it
    // fails with "open /dev/tty: no such device or address", which says nothing useful.
    if tty && std::fs::File::open("/dev/tty").is_err() {
        bail!(
            "-t needs a terminal and this command has none (run it from a terminal, or leave -t out to pipe input with -i)"
        );
    }

    let mut exec = std::process::Command::new(&runc.binary);
    exec.arg("--root")
        .arg(&runc.root)
        .arg("exec")
        .args(tty.then_some("--tty"))
        .arg(name.as_str())
        .args(command);
    if !interactive {
        exec.stdin(Stdio::null());
    }
    for variable in SERVICE_VARIABLES {
        exec.env_remove(variable);
    }
    // Returns only when runc could not be started.
    let error = exec.exec();
    Err(error).with_context(|| {
        format!(
            "cannot run {} to exec into container {name} (install runc: apt install runc)",
            runc.binary.display()
        )
    })
}
