//! [`Observed`]: a driver's own snapshot, carried from plan to apply inside a
//! [`Change`](super::Change).
//!
//! The engine never looks inside it, so it needs no variant per kind: a driver stores
//! its own type with [`Change::with_observed`](super::Change::with_observed) and reads
//! it back with [`Change::observed_as`](super::Change::observed_as). A change handed to
//! the wrong driver reads back as `None`, which that driver reports as a bug.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// Any `'static`, `Debug`, thread-safe value, viewable as [`Any`].
trait Snapshot: Any + fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any + fmt::Debug + Send + Sync> Snapshot for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One driver's snapshot of one object. Cheap to clone (shared).
#[derive(Clone)]
pub struct Observed(Arc<dyn Snapshot>);

impl Observed {
    pub fn new<T: Any + fmt::Debug + Send + Sync>(snapshot: T) -> Self {
        Observed(Arc::new(snapshot))
    }

    /// The snapshot, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        // Through `&dyn Snapshot`: `Arc<dyn Snapshot>` is itself a `Snapshot`, and its
        // own `as_any` would answer the `Arc`.
        let snapshot: &dyn Snapshot = self.0.as_ref();
        snapshot.as_any().downcast_ref()
    }
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot: &dyn Snapshot = self.0.as_ref();
        snapshot.fmt(f)
    }
}
