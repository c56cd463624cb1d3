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
//! Each kind is its folder's [`Registration`] (`kind.rs`: how its documents read, its
//! schema, its validation, its host probe, its driver, its extras for the CLI and the
//! API), listed once in [`registry`]: the loader, the validator, `gitvisor schema`,
//! `gitvisor doctor`, the reconciler ([`connect_all`]), the CLI and the controller reach
//! every kind from there. `docs/drivers.md` walks through adding one.

pub mod bridge;
pub mod ca_bundle;
pub mod container;
mod extras;
pub mod net;
pub mod network;
pub mod nfs_mount;
mod pidfd;
pub mod probe;
mod registry;
pub mod rtnl;
mod status_table;
pub mod vlan_port;
pub mod vm;
pub mod volume;

pub use crate::contract::{
    Change, Driver, DriverError, Drivers, FailureClass, PlanContext, StepContext,
};
pub use extras::{Collected, Console, ExecRequest, ExtraError, Helper, Prepared};
pub use registry::{
    CollectHook, Connect, ConsoleHook, ExecHook, HostSettings, KindAnnotation, LogsHook, Probe,
    RegisterError, Registration, connect_all, register, registration, registry, status_tables,
};
pub use status_table::{Rows, StatusTable, TableError};
