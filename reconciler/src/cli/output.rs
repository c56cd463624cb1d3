//! Writing to stdout and stderr without ever panicking.
//!
//! `println!` panics when stdout is a pipe whose reader went away (`gitvisor status |
//! head -1`). Here a closed reader (EPIPE) only stops the output: the command still
//! finishes its work (an apply is never cut short because nobody reads its report) and
//! exits with its own code, as `rg` and `git` do. Any other write error (a full disk) is
//! returned to the caller. Writes to stderr never fail a command.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout's reader has gone away; later writes are dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to stdout and flushes it.
pub fn stdout(text: &str) -> std::io::Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() == ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// Writes `text` to stderr; errors are ignored (there is nowhere left to report them).
pub fn stderr(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}
