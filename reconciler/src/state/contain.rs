//! Turns a panic inside redb into [`StoreError::Damaged`].
//!
//! redb trusts the bytes of a file it opens without an integrity check, and in debug
//! builds even its integrity checks panic on some impossible values (its
//! `StorageError::unreachable`), so damaged bytes can panic inside it. A store is never
//! worth a crash: every call into redb runs inside [`contain`], which catches the panic
//! and reports the store as damaged, naming the file and the operation.
//!
//! The default panic hook would still print `thread … panicked at …` to stderr for a
//! caught panic. A hook installed once in front of the previous one stays silent while
//! the panicking thread is inside [`contain`] and hands every other panic to the previous
//! hook unchanged. This relies on panics unwinding (the workspace does not build with
//! `panic = "abort"`).

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use super::error::StoreError;

thread_local! {
    /// How many [`contain`] calls this thread is inside (they may nest).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

static QUIET_HOOK: Once = Once::new();

/// Runs `body`; a panic inside it becomes [`StoreError::Damaged`] for `path` and
/// `operation`, and prints nothing.
///
/// Whatever `body` borrows may be left half-updated by the panic: the caller treats the
/// database handle as unusable after a `Damaged` error (the read-only view drops it; the
/// writable store fails the command).
pub(super) fn contain<T>(
    path: &Path,
    operation: &'static str,
    body: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
    DEPTH.with(|depth| depth.set(depth.get().saturating_add(1)));
    let result = panic::catch_unwind(AssertUnwindSafe(body));
    DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
    result.unwrap_or_else(|payload| {
        Err(StoreError::Damaged {
            path: path.to_path_buf(),
            operation,
            detail: panic_text(payload.as_ref()),
        })
    })
}

/// The message of a panic payload (`panic!` with a literal or with format arguments).
fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "redb panicked".to_owned()
    }
}
