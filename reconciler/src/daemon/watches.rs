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
    tracing::info!("watches: {}", lines.join("; "));
    (watches, receiver)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::contract::{
        Change, ContractViolation, Driver, DriverError, HostEvent, PlanContext, StepContext,
        WatchHandle,
    };
    use crate::model::{Name, Resource, ResourceId};

    /// A driver whose watch announces one event at once, or fails to start.
    struct Watched {
        kind: Kind,
        fails: bool,
    }

    #[async_trait]
    impl Driver for Watched {
        fn kind(&self) -> Kind {
            self.kind
        }
        async fn plan(
            &self,
            _: &[Arc<Resource>],
            _: &PlanContext,
        ) -> Result<Vec<Change>, DriverError> {
            Ok(Vec::new())
        }
        async fn apply(&self, _: &Change, _: &StepContext) -> Result<(), DriverError> {
            Ok(())
        }
        fn watch(&self, sink: WatchSink) -> Result<Watching, DriverError> {
            let id = ResourceId::new(self.kind, Name::parse("br0").unwrap());
            if self.fails {
                return Err(ContractViolation {
                    id,
                    message: "no socket".into(),
                }
                .into());
            }
            sink.send(HostEvent::Object(id));
            Ok(Watching::Announced {
                what: "the test's announcements".into(),
                handle: WatchHandle::default(),
            })
        }
    }

    #[tokio::test]
    async fn every_driver_is_started_with_one_sink_and_a_failed_watch_is_left_to_the_resync() {
        let drivers = Drivers::new(vec![
            Box::new(Watched {
                kind: Kind::Bridge,
                fails: false,
            }),
            Box::new(Watched {
                kind: Kind::Volume,
                fails: true,
            }),
        ]);
        let (watches, mut events) = start(&drivers);
        let described = watches.describe();
        assert_eq!(
            described[0],
            (Kind::Bridge, "watched: the test's announcements".to_owned())
        );
        assert_eq!(described[1].0, Kind::Volume);
        assert!(
            described[1]
                .1
                .starts_with("not watched: its watch could not start (")
                && described[1].1.ends_with("drift is repaired at the resync"),
            "{described:?}"
        );
        let event = events.recv().await.expect("the bridge watch's event");
        assert_eq!(
            event,
            HostEvent::Object(ResourceId::new(Kind::Bridge, Name::parse("br0").unwrap()))
        );
    }
}
