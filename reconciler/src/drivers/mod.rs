//! Drivers: one per kind, each reaching the host only through a small seam (a netlink
//! handle, a command runner, a runtime client) so unit tests use recording fakes.
//!
//! A driver implements [`Driver`] from the [`contract`](crate::contract) (re-exported
//! here), which is all it shares with the engine:
//! 1. [`Driver::plan`]: observe every object of its kind *in one batch* and diff it against
//!    the declared resources, yielding one [`Change`] per declared or owned object.
//! 2. [`Driver::apply`]: carry out one change, checking its [`StepContext`] between
//!    requests. Each request is idempotent, so a run that crashed or was cancelled
//!    halfway is repaired by the next one.
//!
//! The drivers this build has are listed once, in [`registry`]: the engine connects them
//! from there ([`connect_all`]) and `gitvisor doctor` reports from there
//! ([`probe::BUILT_KINDS`]). Every kind also has a host probe in its folder ([`probe`]),
//! including the kinds whose driver this build does not have yet (`volume/`,
//! `container/`, `vm/`). `docs/drivers.md` walks through adding one.

pub mod bridge;
pub mod container;
mod extras;
pub mod net;
pub mod network;
pub mod probe;
mod registry;
mod status_table;
pub mod vlan_port;
pub mod vm;
pub mod volume;

pub use crate::contract::{
    Change, Driver, DriverError, Drivers, FailureClass, PlanContext, StepContext,
};
pub use extras::{Collected, Console, ExecRequest, ExtraError, Helper, Prepared};
pub use registry::{
    HostSettings, KindAnnotation, Registration, connect_all, registry, status_tables,
};
pub use status_table::{Rows, StatusTable, TableError};
