//! What the controller's loop, its timers, the API and the metrics endpoint share: the
//! triggers, the event log, the metrics, the status snapshot and where the DHCP leases
//! are. Each part locks for a
//! moment only; nothing holds a lock across an await.

use std::path::PathBuf;
use std::sync::Mutex;

use super::events::EventLog;
use super::metrics::Metrics;
use super::status::ControllerStatus;
use super::trigger::Triggers;

pub struct Shared {
    pub triggers: Triggers,
    pub events: EventLog,
    pub metrics: Metrics,
    status: Mutex<ControllerStatus>,
    /// Where the managed bridges' dnsmasq keep their leases (`GET /v1/status` lists
    /// them); `None` lists none.
    pub network_dir: Option<PathBuf>,
}

impl Shared {
    pub fn new(status: ControllerStatus) -> Shared {
        Shared {
            triggers: Triggers::default(),
            events: EventLog::default(),
            metrics: Metrics::default(),
            status: Mutex::new(status),
            network_dir: None,
        }
    }

    /// The same, listing the DHCP leases kept under `network_dir`.
    pub fn with_leases_from(self, network_dir: PathBuf) -> Shared {
        Shared {
            network_dir: Some(network_dir),
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
