//! The driver contract: the types the engine ([`plan`](crate::plan),
//! [`execute`](crate::execute)) and every driver ([`drivers`](crate::drivers)) share, and
//! nothing else. Both sides import this module and neither imports the other's insides,
//! so adding a driver edits no engine type: a driver is a folder plus one line in the
//! registry (`drivers/registry.rs`). `docs/drivers.md` walks through writing one.
//!
//! - [`Driver`]: `kind`, `plan` (observe in one batch, diff), `apply` (one change, one
//!   step), `step_budget`; optionally `restart_support`, `stop` and `start` for objects
//!   that run ([`restart`]). [`Drivers`]: the set a run uses.
//! - [`Change`]: the decision for one resource: [`Action`], the [`FieldChange`]s with
//!   their [`Effect`], the reasons, the declared resource, and the driver's own snapshot
//!   for apply ([`Observed`], read back as the driver's type).
//! - [`PlanContext`]: what the store records as owned, and the whole revision resolved
//!   for this host, so a driver can follow references to other kinds.
//! - [`StepContext`]: the cancellation token, deadline and progress sink of one step.
//! - [`DriverError`]: any driver's own error, with its cause chain and its
//!   [`FailureClass`] (transient, needs the user, bug).
//! - [`watch`]: how a driver tells the controller that the host may have changed
//!   ([`Driver::watch`], [`HostEvent`], [`WatchSink`], [`Watching`]).
//! - [`ownership`]: the marker + record rule, adoption, pruning and interrupted-creation
//!   leftovers, for every kind.

pub mod cache;
mod change;
mod context;
mod driver;
mod error;
mod observed;
pub mod ownership;
pub(crate) mod panic;
pub mod restart;
mod step;
pub mod watch;

pub use cache::ObservationCache;
pub use change::{Action, Change, Effect, FieldChange, FieldValueError};
pub use context::PlanContext;
pub use driver::{Driver, Drivers};
pub use error::{Classify, ContractViolation, DriverError, FailureClass, chain};
pub use observed::Observed;
pub use ownership::{Evidence, Leftover, Marker, Ownership, Prune};
pub use restart::RestartSupport;
pub use step::{CancelToken, DEFAULT_STEP_BUDGET, Interrupted, ProgressEvent, StepContext};
pub use watch::{HostEvent, Severity, WatchHandle, WatchSink, Watching};
