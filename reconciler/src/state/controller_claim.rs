//! A running controller's claim on its state dir.
//!
//! The store's own lock (redb's, on `state.redb`) is held only while something writes
//! the store: `gitvisor run` opens the store for each reconcile and closes it between
//! them, so that `status` and `plan` can read. That lock alone let a `gitvisor apply`
//! slip in between two reconciles of a running controller and apply another revision to
//! the same host, which the controller would then undo at its next resync.
//!
//! So the controller also claims the state dir for its whole life: an exclusive `flock`
//! on `<state_dir>/controller.lock`, whose content is its pid (for the message; the lock
//! is what counts, so a pid left by a controller that was killed means nothing). The
//! kernel drops the lock when the process ends, however it ends. A one-shot writer
//! (`apply`) calls [`ControllerClaim::refuse_if_claimed`] first and is refused with the
//! way out: change the source the controller follows and `gitvisor sync`, or stop the
//! controller. Readers (`plan`, `status`) are not concerned.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::error::StoreError;
use super::private;

/// The claim's file in the state dir.
pub const CONTROLLER_LOCK_FILE: &str = "controller.lock";

/// Held by `gitvisor run` for its whole life; dropping it (or the process ending) ends
/// the claim.
#[derive(Debug)]
pub struct ControllerClaim {
    _lock: Flock<File>,
}

impl ControllerClaim {
    /// Claims `state_dir` for this process, or fails with
    /// [`StoreError::ControllerRunning`] when another controller holds it.
    pub fn claim(state_dir: &Path) -> Result<ControllerClaim, StoreError> {
        private::prepare_dir(state_dir)?;
        let path = state_dir.join(CONTROLLER_LOCK_FILE);
        let file = private::open_file(&path)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(StoreError::ControllerRunning {
                    state_dir: state_dir.to_path_buf(),
                    pid: pid_in(&mut file),
                });
            }
            Err((_, errno)) => return Err(claim_error(&path, "lock", errno.into())),
        };
        let pid = format!("{}\n", std::process::id());
        lock.set_len(0)
            .and_then(|()| lock.seek(SeekFrom::Start(0)))
            .and_then(|_| lock.write_all(pid.as_bytes()))
            .map_err(|source| claim_error(&path, "write the pid into", source))?;
        Ok(ControllerClaim { _lock: lock })
    }

    /// `Ok` when no controller holds `state_dir`; else
    /// [`StoreError::ControllerRunning`], whose message says what to do instead.
    pub fn refuse_if_claimed(state_dir: &Path) -> Result<(), StoreError> {
        let path = state_dir.join(CONTROLLER_LOCK_FILE);
        let file = match OpenOptions::new().read(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(claim_error(&path, "open", source)),
        };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            // Nobody holds it; the shared lock is dropped (released) at once.
            Ok(_free) => Ok(()),
            Err((mut file, Errno::EWOULDBLOCK)) => Err(StoreError::ControllerRunning {
                state_dir: state_dir.to_path_buf(),
                pid: pid_in(&mut file),
            }),
            Err((_, errno)) => Err(claim_error(&path, "check the lock on", errno.into())),
        }
    }
}

/// The pid a controller wrote into its claim, if it reads as one.
fn pid_in(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn claim_error(path: &Path, operation: &'static str, source: std::io::Error) -> StoreError {
    StoreError::ControllerClaim {
        path: PathBuf::from(path),
        operation,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_state_dir_refuses_writers_and_a_second_controller_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        ControllerClaim::refuse_if_claimed(&state).expect("no claim yet");
        let claim = ControllerClaim::claim(&state).expect("claimed");
        for refused in [
            ControllerClaim::refuse_if_claimed(&state).unwrap_err(),
            ControllerClaim::claim(&state).unwrap_err(),
        ] {
            match &refused {
                StoreError::ControllerRunning { pid, .. } => {
                    assert_eq!(*pid, Some(std::process::id()));
                }
                other => panic!("not ControllerRunning: {other:?}"),
            }
            let message = refused.to_string();
            assert!(message.contains("gitvisor sync"), "{message}");
            assert!(
                message.contains(&format!("pid {}", std::process::id())),
                "{message}"
            );
        }
        drop(claim);
        ControllerClaim::refuse_if_claimed(&state).expect("released");
        let _again = ControllerClaim::claim(&state).expect("claimed again");
    }
}
