//! Watches: how a driver tells the controller that the host may have changed, from what
//! the host already announces (netlink multicast groups, nftables' ruleset generation,
//! inotify on a supervisor's files, QMP events), so drift is repaired when it happens
//! rather than at the next resync.
//!
//! A driver's [`Driver::watch`](super::Driver::watch) starts its watch tasks, which send
//! [`HostEvent`]s into the [`WatchSink`] the controller gave it, and says how it watches
//! ([`Watching`]): announced by the host, polled (and at what interval, and why), or not
//! at all. An event means "this may have changed": the controller reconciles what it
//! names, and a reconcile that finds nothing to do is cheap. So a watch may say too much
//! (an event for a change gitvisor itself made), never too little.
//!
//! The watch tasks stop when the [`WatchHandle`] is dropped.

use std::fmt;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::{Kind, ResourceId};

/// What the host announced.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostEvent {
    /// The object of this resource (declared or only recorded) may have changed.
    Object(ResourceId),
    /// Something of this kind changed, and the announcement does not say which object
    /// (a ruleset generation moved): every resource of the kind is looked at again.
    Kind(Kind),
}

impl fmt::Display for HostEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostEvent::Object(id) => write!(f, "{id} may have changed"),
            HostEvent::Kind(kind) => write!(f, "some {kind} may have changed"),
        }
    }
}

/// Where a driver's watch tasks send their events. Cheap to clone; sending never blocks
/// and never fails (events sent after the controller stopped listening are dropped).
#[derive(Debug, Clone)]
pub struct WatchSink(mpsc::UnboundedSender<HostEvent>);

impl WatchSink {
    /// A sink and the receiver the controller reads it from.
    pub fn channel() -> (WatchSink, mpsc::UnboundedReceiver<HostEvent>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (WatchSink(sender), receiver)
    }

    pub fn send(&self, event: HostEvent) {
        // A closed receiver: the controller is stopping, nobody needs the event.
        let _ = self.0.send(event);
    }

    /// Whether the controller stopped listening (a watch task may end then).
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// The watch tasks of one driver; dropping it aborts them.
#[derive(Debug, Default)]
pub struct WatchHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl WatchHandle {
    pub fn new(tasks: Vec<JoinHandle<()>>) -> Self {
        WatchHandle { tasks }
    }

    pub fn push(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How a driver watches its host.
#[derive(Debug)]
pub enum Watching {
    /// The host announces changes; `what` names the announcements (for logs and docs),
    /// e.g. "netlink link and address groups; nftables ruleset generation".
    Announced { what: String, handle: WatchHandle },
    /// Nothing announces changes, so the driver looks every `every`; `why` says why.
    Polled {
        every: Duration,
        why: String,
        handle: WatchHandle,
    },
    /// This driver does not watch: its objects are looked at by the resync only.
    NotWatched { why: String },
}

impl Watching {
    /// One line for the controller's log and `doctor`.
    pub fn describe(&self) -> String {
        match self {
            Watching::Announced { what, .. } => format!("watched: {what}"),
            Watching::Polled { every, why, .. } => {
                format!("polled every {}: {why}", humantime_secs(*every))
            }
            Watching::NotWatched { why } => format!("not watched: {why}"),
        }
    }
}

fn humantime_secs(every: Duration) -> String {
    let millis = every.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Name;

    #[tokio::test]
    async fn events_reach_the_receiver_and_a_closed_one_is_no_error() {
        let (sink, mut receiver) = WatchSink::channel();
        let id = ResourceId::new(Kind::Bridge, Name::parse("br0").unwrap());
        sink.send(HostEvent::Object(id.clone()));
        assert_eq!(receiver.recv().await, Some(HostEvent::Object(id)));
        drop(receiver);
        assert!(sink.is_closed());
        sink.send(HostEvent::Kind(Kind::Bridge));
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_the_tasks() {
        let task = tokio::spawn(std::future::pending::<()>());
        let abort = task.abort_handle();
        drop(WatchHandle::new(vec![task]));
        tokio::task::yield_now().await;
        assert!(abort.is_finished());
    }

    #[test]
    fn descriptions_name_the_interval() {
        let polled = Watching::Polled {
            every: Duration::from_secs(10),
            why: "LVM announces nothing without udev".into(),
            handle: WatchHandle::default(),
        };
        assert_eq!(
            polled.describe(),
            "polled every 10s: LVM announces nothing without udev"
        );
    }
}
