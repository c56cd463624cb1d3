//! What the controller's loop, its timers, the API and the metrics endpoint share: the
//! triggers, the event log, the metrics, the status snapshot and the kinds' status tables
//! (the DHCP leases) with where they are read. Each part locks for a
//! moment only; nothing holds a lock across an await.

use std::path::PathBuf;
use std::sync::Mutex;

use super::events::EventLog;
use super::metrics::Metrics;
use super::status::ControllerStatus;
use super::trigger::Triggers;
use crate::drivers::StatusTable;

pub struct Shared {
    pub triggers: Triggers,
    pub events: EventLog,
    pub metrics: Metrics,
    status: Mutex<ControllerStatus>,
    /// The run dir the status tables are read below, and the tables (`GET /v1/status`
    /// carries each, such as the DHCP leases); none by default.
    pub status_tables: Option<(PathBuf, Vec<StatusTable>)>,
}

impl Shared {
    pub fn new(status: ControllerStatus) -> Shared {
        Shared {
            triggers: Triggers::default(),
            events: EventLog::default(),
            metrics: Metrics::default(),
            status: Mutex::new(status),
            status_tables: None,
        }
    }

    /// The same, carrying `tables` read below `run_dir`.
    pub fn with_status_tables(self, run_dir: PathBuf, tables: Vec<StatusTable>) -> Shared {
        Shared {
            status_tables: Some((run_dir, tables)),
            ..self
        }
    }

    /// A copy of the status snapshot.
    pub fn status(&self) -> ControllerStatus {
        self.with_status(|status| status.clone())
    }

    pub fn with_status<T>(&self, body: impl FnOnce(&mut ControllerStatus) -> T) -> T {
        match self.status.lock() {
            Ok(mut status) => body(&mut status),
            Err(poisoned) => body(&mut poisoned.into_inner()),
        }
    }
}
