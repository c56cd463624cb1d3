//! What the engine's commands and controller need of a kind beyond the driver contract,
//! in the engine's terms: a resource's log, its serial console, the kind's housekeeping.
//! A kind offers each through its [`Registration`](super::Registration); `cli/` and
//! `daemon/` reach them from the registry and know no kind.

use std::path::PathBuf;

/// Why an extra could not be done; its message names the object, what failed and the fix.
pub type ExtraError = Box<dyn std::error::Error + Send + Sync>;

/// Where a resource's serial console is, and how to talk about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    /// The socket to connect to (one client at a time).
    pub socket: PathBuf,
    /// The resource as messages name it: `VM web`.
    pub owner: String,
    /// What to check when the socket does not answer.
    pub unreachable_hint: &'static str,
}
