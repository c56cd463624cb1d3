//! Waiting for a process to end without polling: a pidfd (Linux 5.3) becomes readable
//! when its process ends, whoever its parent is, so a watch learns of a container's or a
//! guest's death at once instead of at its next look. Shared by the container and VM
//! watches.

use std::os::fd::OwnedFd;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::task::AbortHandle;

/// What [`on_exit`] could arrange.
#[derive(Debug)]
pub(crate) enum ExitWait {
    /// A task calls `then` when the process ends; abort it to stop waiting.
    Waiting(AbortHandle),
    /// The process is already gone: `then` was not called, the caller acts now.
    Gone,
    /// No pidfd can be had or polled here (an odd pid, an old kernel): the end is seen
    /// by the caller's next look.
    Unavailable,
}

/// Runs `then` on a task when process `pid` ends. `later` says, for the debug log, when
/// the caller sees the end without a pidfd ("at the next look").
pub(crate) fn on_exit(pid: u32, later: &str, then: impl FnOnce() + Send + 'static) -> ExitWait {
    let Some(process) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return ExitWait::Unavailable;
    };
    let fd: OwnedFd = match rustix::process::pidfd_open(
        process,
        rustix::process::PidfdFlags::NONBLOCK,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return ExitWait::Gone,
        Err(error) => {
            tracing::debug!(pid, %error, "cannot open a pidfd; the process's end is seen {later}");
            return ExitWait::Unavailable;
        }
    };
    // Deprecated as unsound for a `T` that does not own its descriptor (it could be
    // closed while registered); an `OwnedFd` moved into the `AsyncFd` cannot be.
    #[allow(deprecated)]
    let fd = match AsyncFd::with_interest(fd, Interest::READABLE) {
        Ok(fd) => fd,
        Err(error) => {
            tracing::debug!(pid, %error, "cannot poll a pidfd; the process's end is seen {later}");
            return ExitWait::Unavailable;
        }
    };
    let task = tokio::spawn(async move {
        // Readable once the process has ended.
        let _ = fd.readable().await;
        then();
    });
    ExitWait::Waiting(task.abort_handle())
}
