//! A driver call that panics is a gitvisor bug, and still a result.
//!
//! Without this, a panic unwinds out of the step's task: the resource vanishes from the
//! report (so `apply` says converged), the dependents stopped around it are never started
//! again, and nothing records an event. Instead each driver call (`apply`, `stop`,
//! `start`) runs under [`catch_panic`]: a panic becomes a failure of class
//! [`FailureClass::Bug`](crate::contract::FailureClass::Bug) naming the resource and the
//! panic's message, and the executor goes on as for any other failure: dependents are
//! blocked, held dependents are started again, the failure is recorded with an event.
//!
//! It lives with the driver contract because both the executor (`execute/`) and the
//! planner (`plan/panicked.rs`, a driver's `plan`) run driver calls under it. A panic
//! outside a driver call (the executor's own code, a progress callback) still ends its
//! task; the executor reports that task's resource as failed the same way.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use crate::model::ResourceId;

/// Runs `future`; a panic inside it comes back as the panic's message.
///
/// `AssertUnwindSafe`: after a panic the executor uses nothing the future owned except
/// through locks it re-checks (the holds' state is updated before and after each driver
/// call, never across one), so no broken invariant is observed.
pub(crate) async fn catch_panic<T>(future: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|payload| message(payload.as_ref()))
}

/// The text a panic was raised with (`panic!("…")`), or a placeholder.
pub(crate) fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// The failure reported for `id` when its driver panicked during `call`.
pub(crate) fn panicked(id: &ResourceId, call: &str, message: &str) -> String {
    format!(
        "the {} driver panicked during {call} of {id}: {message}; this is a gitvisor bug \
         (please report it with the log); the next run tries again",
        id.kind
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_its_message_and_a_value_passes_through() {
        assert_eq!(catch_panic(async { 7 }).await, Ok(7));
        let caught = catch_panic(async {
            if true {
                panic!("link table {} is gone", 3);
            }
        })
        .await;
        assert_eq!(caught, Err("link table 3 is gone".to_owned()));
        let caught = catch_panic(async {
            std::panic::panic_any(42_u8);
        })
        .await;
        assert_eq!(caught, Err("a panic without a message".to_owned()));
        let literal = catch_panic(async { panic!("plain") }).await;
        assert_eq!(literal, Err::<(), _>("plain".to_owned()));
    }
}
