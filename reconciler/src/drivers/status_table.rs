//! A table a kind adds to the host's status, beyond each resource's own state: the DHCP
//! leases the managed bridges' dnsmasq handed out, for instance.
//!
//! `gitvisor status` reads each registered table from the run dir and shows it under its
//! title (in JSON, under its key); the controller's `GET /v1/status` carries it under the
//! same key (or why it could not be read under `<key>Error`), and `gitvisor status` with a
//! controller renders that JSON the same way. The engine knows a table only through this
//! struct, so a new kind adds one without touching `cli/` or `daemon/`.

use std::path::Path;

use futures::future::BoxFuture;
use serde_json::Value;

/// Why a table could not be read; its message names what could not be read and the fix.
pub type TableError = Box<dyn std::error::Error + Send + Sync>;

/// A status table of a kind: how to read it, and how to show it.
#[derive(Debug, Clone, Copy)]
pub struct StatusTable {
    /// Its key in the JSON status (`dhcpLeases`); a read failure is `<key>Error`.
    pub key: &'static str,
    /// Its title in the text status (`DHCP leases`).
    pub title: &'static str,
    /// Reads it from the host now, below the run dir, as its JSON form.
    pub read: for<'a> fn(&'a Path) -> BoxFuture<'a, Result<Value, TableError>>,
    /// Its rows from its JSON form (from `read`, or from a controller's status); an
    /// error says why the JSON is not one.
    pub rows: fn(&Value) -> Result<Rows, serde_json::Error>,
}

/// A table's columns (header, minimum width) and rows of cells; no rows shows nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rows {
    pub columns: &'static [(&'static str, usize)],
    pub rows: Vec<Vec<String>>,
}
