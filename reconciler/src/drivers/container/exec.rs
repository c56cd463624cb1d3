//! `gitvisor exec NAME [-i] [-t] -- COMMAND…` for a Container (its registration's
//! `exec`): a command in a running container that gitvisor manages, run by the
//! container runtime's own `exec`. This module checks and builds the command; the CLI
//! replaces itself with it.
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

use std::path::PathBuf;
use std::process::{Command, Stdio};

use futures::future::BoxFuture;

use super::host::{RUNTIME_ROOT_SUBDIR, pick_runtime};
use super::runc::{Runc, SERVICE_VARIABLES};
use super::seam::{HostError, MANAGED_ANNOTATION, RuntimeStatus};
use crate::drivers::{ExecRequest, ExtraError, HostSettings, Prepared};
use crate::model::Name;

/// Why a command cannot be run in a container.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot look up container {name} under {}", root.display())]
    Lookup {
        name: Name,
        root: PathBuf,
        #[source]
        source: HostError,
    },
    #[error(
        "no container {name} managed by gitvisor on this host: {} has none (is it declared and applied, with this --run-dir?)",
        root.display()
    )]
    Missing { name: Name, root: PathBuf },
    #[error(
        "container {name} under {} does not carry gitvisor's marker ({MANAGED_ANNOTATION}: {name}); gitvisor runs commands only in containers it manages",
        root.display()
    )]
    NotManaged { name: Name, root: PathBuf },
    #[error(
        "container {name} is {status}, not running: a command needs its process; declare `state: Running` and apply (`gitvisor status` says why it stopped)"
    )]
    NotRunning { name: Name, status: RuntimeStatus },
    #[error(
        "container {name} is in a state gitvisor does not know ({status}); see `gitvisor status`"
    )]
    UnknownState { name: Name, status: String },
    #[error(
        "-t needs a terminal and this command has none (run it from a terminal, or leave -t out to pipe input with -i)"
    )]
    NoTerminal,
}

/// The registration's `exec`: checks container `name` and builds the runc command that
/// runs `request` in it.
pub(crate) fn prepare<'a>(
    settings: &'a HostSettings,
    name: &'a Name,
    request: &'a ExecRequest,
) -> BoxFuture<'a, Result<Prepared, ExtraError>> {
    Box::pin(async move { Ok(prepare_exec(settings, name, request).await?) })
}

async fn prepare_exec(
    settings: &HostSettings,
    name: &Name,
    request: &ExecRequest,
) -> Result<Prepared, ExecError> {
    let mut runc = Runc::new(settings.run_dir.join(RUNTIME_ROOT_SUBDIR));
    runc.binary = pick_runtime();
    let state = runc
        .state(name.as_str())
        .await
        .map_err(|source| ExecError::Lookup {
            name: name.clone(),
            root: runc.root.clone(),
            source,
        })?;
    let Some(state) = state else {
        return Err(ExecError::Missing {
            name: name.clone(),
            root: runc.root.clone(),
        });
    };
    let marker = state
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(MANAGED_ANNOTATION));
    if marker.map(String::as_str) != Some(name.as_str()) {
        return Err(ExecError::NotManaged {
            name: name.clone(),
            root: runc.root.clone(),
        });
    }
    match state.status() {
        Some(RuntimeStatus::Running) => {}
        Some(status) => {
            return Err(ExecError::NotRunning {
                name: name.clone(),
                status,
            });
        }
        None => {
            return Err(ExecError::UnknownState {
                name: name.clone(),
                status: state.status,
            });
        }
    }

    // runc's terminal is the caller's controlling terminal (`/dev/tty`): without one it
    // fails with "open /dev/tty: no such device or address", which says nothing useful.
    if request.tty && std::fs::File::open("/dev/tty").is_err() {
        return Err(ExecError::NoTerminal);
    }

    let mut exec = Command::new(&runc.binary);
    exec.arg("--root")
        .arg(&runc.root)
        .arg("exec")
        .args(request.tty.then_some("--tty"))
        .arg(name.as_str())
        .args(&request.command);
    if !request.interactive {
        exec.stdin(Stdio::null());
    }
    for variable in SERVICE_VARIABLES {
        exec.env_remove(variable);
    }
    Ok(Prepared {
        command: exec,
        cannot_start: format!(
            "cannot run {} to exec into container {name} (install runc: apt install runc)",
            runc.binary.display()
        ),
    })
}
