//! Stopping a run on SIGTERM or SIGINT without cutting a step in half.
//!
//! The first signal cancels the run's [`CancelToken`]: no further step starts, running
//! ones stop at their next safe point (see [`crate::contract::StepContext`]), and the
//! report lists what was cancelled, so the store records it and the next run carries on.
//! A second signal exits at once (status 130), as an impatient operator expects; that is
//! a crash, which the write-ahead intents and idempotent steps repair like any other.
//! systemd's stop timeout does the same for the daemon.

use tokio::signal::unix::{SignalKind, signal};

use crate::contract::CancelToken;

/// What a second signal exits with: 128 + SIGINT, the shell's "interrupted".
const EXIT_INTERRUPTED: i32 = 130;

/// A token that SIGTERM or SIGINT cancels. The handlers are installed before it returns,
/// so a signal from then on is caught. Call it inside the Tokio runtime.
pub fn cancel_on_shutdown_signals() -> std::io::Result<CancelToken> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let token = CancelToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::warn!(
            "stopping: no new step starts, running ones stop at their next safe point; signal again to exit now"
        );
        cancel.cancel();
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        std::process::exit(EXIT_INTERRUPTED);
    });
    Ok(token)
}
