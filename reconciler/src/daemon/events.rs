//! The controller's event log: a bounded ring of recent events, a broadcast to the API's
//! followers (`gitvisor events -f`), and a log line per event.
//!
//! Every event is logged once, here, with the structured fields `resource` and
//! `revision`, at the event's level; journald keeps them as fields when the controller
//! runs under systemd. The ring starts with the store's recent events so `gitvisor
//! events` shows history from before a restart; the store keeps the per-resource events
//! of every apply, this log adds the controller's own (revisions applied or rejected,
//! source errors, drift repaired).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::model::ResourceId;
use crate::state::{Event, EventLevel, now_unix};

/// How many events the ring keeps.
pub const RING_SIZE: usize = 500;
/// How many events a slow follower may lag behind before it misses some.
const FOLLOW_BUFFER: usize = 256;

/// One event, as the API serves it (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerEvent {
    /// Increases by one per event, from 1 at the controller's start.
    pub seq: u64,
    pub unix: u64,
    pub level: EventLevel,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub message: String,
}

struct Ring {
    next: u64,
    events: VecDeque<ControllerEvent>,
}

pub struct EventLog {
    ring: Mutex<Ring>,
    followers: broadcast::Sender<ControllerEvent>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            ring: Mutex::new(Ring {
                next: 1,
                events: VecDeque::new(),
            }),
            followers: broadcast::channel(FOLLOW_BUFFER).0,
        }
    }
}

impl EventLog {
    /// Seeds the ring with events from the store (oldest first), without logging them.
    pub fn seed(&self, history: impl IntoIterator<Item = Event>) {
        self.with_ring(|ring| {
            for event in history {
                let seq = ring.next;
                ring.next += 1;
                ring.events.push_back(ControllerEvent {
                    seq,
                    unix: event.unix,
                    level: event.level,
                    resource: event.resource,
                    revision: None,
                    message: event.message,
                });
                while ring.events.len() > RING_SIZE {
                    ring.events.pop_front();
                }
            }
        });
    }

    /// Records, logs and broadcasts one event.
    pub fn push(
        &self,
        level: EventLevel,
        resource: Option<&ResourceId>,
        revision: Option<&str>,
        message: impl Into<String>,
    ) {
        let message = message.into();
        let resource_field = resource.map(ToString::to_string);
        let resource_field = resource_field.as_deref();
        match level {
            EventLevel::Info => {
                tracing::info!(resource = resource_field, revision, "{message}")
            }
            EventLevel::Warning => {
                tracing::warn!(resource = resource_field, revision, "{message}")
            }
            EventLevel::Error => {
                tracing::error!(resource = resource_field, revision, "{message}")
            }
        }
        // Sent while the ring is locked, so `follow` sees each event exactly once.
        self.with_ring(|ring| {
            let event = ControllerEvent {
                seq: ring.next,
                unix: now_unix(),
                level,
                resource: resource.cloned(),
                revision: revision.map(str::to_owned),
                message,
            };
            ring.next += 1;
            ring.events.push_back(event.clone());
            while ring.events.len() > RING_SIZE {
                ring.events.pop_front();
            }
            // No follower listening is fine.
            let _ = self.followers.send(event);
        });
    }

    /// The newest `limit` events, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<ControllerEvent> {
        self.with_ring(|ring| {
            let skip = ring.events.len().saturating_sub(limit);
            ring.events.iter().skip(skip).cloned().collect()
        })
    }

    /// The newest `limit` events and a subscription to every later one, with nothing
    /// lost or repeated in between.
    pub fn follow(
        &self,
        limit: usize,
    ) -> (Vec<ControllerEvent>, broadcast::Receiver<ControllerEvent>) {
        self.with_ring(|ring| {
            let receiver = self.followers.subscribe();
            let skip = ring.events.len().saturating_sub(limit);
            (ring.events.iter().skip(skip).cloned().collect(), receiver)
        })
    }

    fn with_ring<T>(&self, body: impl FnOnce(&mut Ring) -> T) -> T {
        match self.ring.lock() {
            Ok(mut ring) => body(&mut ring),
            Err(poisoned) => body(&mut poisoned.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_bounded_and_numbered() {
        let log = EventLog::default();
        for i in 0..RING_SIZE + 5 {
            log.push(EventLevel::Info, None, None, format!("e{i}"));
        }
        let recent = log.recent(usize::MAX);
        assert_eq!(recent.len(), RING_SIZE);
        assert_eq!(recent[0].seq, 6);
        assert_eq!(recent.last().map(|e| e.seq), Some(RING_SIZE as u64 + 5));
        assert_eq!(log.recent(2).len(), 2);
    }

    #[tokio::test]
    async fn followers_get_what_comes_after_the_history_they_were_given() {
        let log = EventLog::default();
        log.push(EventLevel::Info, None, Some("r1"), "before");
        let (history, mut receiver) = log.follow(10);
        assert_eq!(history.len(), 1);
        log.push(EventLevel::Error, None, Some("r2"), "after");
        let next = receiver.recv().await.unwrap();
        assert_eq!((next.seq, next.message.as_str()), (2, "after"));
    }
}
