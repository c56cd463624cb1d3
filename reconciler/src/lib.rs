//! gitvisor: a declarative, GitOps-style reconciler for Linux hosts.
//!
//! Data flow: source → [`load`] → [`validate`] → [`graph`] →
//! observe/diff ([`drivers`]) → [`plan`] → [`execute`] → [`state`], run in that order by
//! [`reconcile::Reconciler`], which the CLI ([`cli`]) drives. The engine and the drivers
//! meet only in [`contract`]. [`load`], [`validate`] and [`graph`] share the located
//! documents of [`manifest`]. The top-level modules form no import cycle
//! (`tests/module_cycles.rs` checks).

pub mod cli;
pub mod contract;
pub mod daemon;
pub mod drivers;
pub mod execute;
pub mod graph;
pub mod hostname;
pub mod load;
pub mod manifest;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod schema;
pub mod source;
pub mod state;
pub mod validate;
