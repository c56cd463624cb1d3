//! Starts every driver's watch ([`crate::contract::watch`]) with one sink, so the
//! controller hears of a change to the host when the host announces it, not at the next
//! resync.
//!
//! Each driver says how it watches ([`Watching`]); that line is logged at start and shown
//! in the status, so a person can tell what is repaired at once and what waits for the
//! resync. A driver whose watch cannot start is logged and left to the resync: a host
//! that cannot watch can still be converged.

use tokio::sync::mpsc::UnboundedReceiver;

use crate::contract::{Drivers, HostEvent, WatchSink, Watching};
use crate::model::Kind;

/// The running watches: dropping it stops them.
#[derive(Debug, Default)]
pub struct Watches {
    /// Each kind and how it is watched (its handle keeps its tasks running).
    pub kinds: Vec<(Kind, Watching)>,
}

impl Watches {
    /// Each kind and its [`Watching::describe`] line.
    pub fn describe(&self) -> Vec<(Kind, String)> {
        self.kinds
            .iter()
            .map(|(kind, watching)| (*kind, watching.describe()))
            .collect()
    }
}

/// Starts the watch of every driver in `drivers`, all sending into one sink; answers the
/// watches and the receiver of their events. Call it inside the Tokio runtime.
pub fn start(drivers: &Drivers) -> (Watches, UnboundedReceiver<HostEvent>) {
    let (sink, receiver) = WatchSink::channel();
    let mut watches = Watches::default();
    for kind in drivers.kinds() {
        let Some(driver) = drivers.get(kind) else {
            continue;
        };
        let watching = match driver.watch(sink.clone()) {
            Ok(watching) => watching,
            Err(error) => Watching::NotWatched {
                why: format!(
                    "its watch could not start ({}); drift is repaired at the resync",
                    error.chain()
                ),
            },
        };
        watches.kinds.push((kind, watching));
    }
    // One line for all kinds: a journal read only after READY=1 must not fill up.
    let lines: Vec<String> = watches
        .describe()
        .into_iter()
        .map(|(kind, line)| format!("{kind} {line}"))
        .collect();
    tracing::info!("how the host is watched: {}", lines.join("; "));
    (watches, receiver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::volume::{FakeLvm, VolumeDriver};

    #[tokio::test]
    async fn every_driver_is_started_and_described() {
        let drivers = Drivers::new(vec![Box::new(VolumeDriver::new(std::sync::Arc::new(
            FakeLvm::new(Vec::new(), Vec::new()),
        )))]);
        let (watches, _events) = start(&drivers);
        let described = watches.describe();
        assert_eq!(described.len(), 1);
        assert_eq!(described[0].0, Kind::Volume);
        assert!(
            described[0].1.starts_with("not watched: LVM announces"),
            "{described:?}"
        );
    }
}
