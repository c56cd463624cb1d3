//! The controller's one queue of "later": every reason to reconcile is an entry
//! `(key, cause) → run_at`, where the key is the whole revision or one resource.
//!
//! Before it, the controller decided "later" in three places (the retry policy's holds
//! and wake-ups, a stalled reconcile's backoff, the container supervisor's restart
//! backoff) besides its timers. Here, as in kube-runtime's scheduler, they are all one
//! thing, so the loop sleeps on exactly one deadline ([`Scheduler::next_due`]) and takes
//! whatever fell due together ([`Scheduler::take_due`]):
//!
//! | cause            | key                | when                                            |
//! |------------------|--------------------|-------------------------------------------------|
//! | `Source`         | revision           | a file event (debounced), a git poll, the start |
//! | `Resync`         | revision           | every `--resync`, re-armed when served          |
//! | `Request`        | revision           | `gitvisor sync`, SIGHUP: now                    |
//! | `Retry`          | resource           | a transient failure's backoff ends              |
//! | `Retry`          | revision           | a reconcile that could not apply at all         |
//! | `Restart`        | resource           | a dead container to restart, now or after its backoff |
//! | `Watch`          | resource           | a driver's watch announced a change (debounced) |
//!
//! **One entry per key and cause.** An entry due sooner replaces a later one for the
//! same key and cause; a later one never postpones it. So a resource waiting for its
//! retry in a minute is reconciled at once when its watch reports it changed (a second
//! entry, another cause), and its retry still stands.
//!
//! **One debounce.** Events that come in bursts (file events of a save or a checkout, a
//! driver's watch announcing each step gitvisor or a person took) are debounced: the
//! entry falls due after [`QUIET`] without another event, at most [`BURST_MAX`] after the
//! burst's first, so a burst collapses into one reconcile.
//!
//! **Whole revision or resources.** When a revision entry is due, everything due is
//! served by one reconcile of the whole revision. Otherwise the due resource entries
//! are served by one reconcile targeted at them (and, in the controller, what they
//! depend on and what depends on them). The loop runs one reconcile at a time, so a
//! resource is never reconciled twice at once; entries falling due meanwhile wait for
//! the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::trigger::Reasons;
use crate::contract::HostEvent;
use crate::model::{Kind, ResourceId};

/// A debounced burst falls due after this much quiet…
pub const QUIET: Duration = Duration::from_millis(100);
/// …or, when its last event ended a write (a manifest closed after writing,
/// [`Scheduler::written`]), after this much: an editor's write-and-rename takes a few
/// milliseconds, and a file still being written has not been closed yet…
pub const WRITTEN_QUIET: Duration = Duration::from_millis(10);
/// …or this long after its first event, whichever comes first.
pub const BURST_MAX: Duration = Duration::from_millis(500);

/// What an entry reconciles.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// Read the source when the cause calls for it, then apply the whole revision.
    Revision,
    /// Apply this resource (and what the plan needs with it).
    Resource(ResourceId),
}

/// Why an entry is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    Source,
    Resync,
    Request,
    Reload,
    Retry,
    Restart,
    Watch,
}

impl Cause {
    fn reasons(self) -> Reasons {
        let mut reasons = Reasons::default();
        match self {
            Cause::Source => reasons.source = true,
            Cause::Resync => reasons.resync = true,
            Cause::Request => reasons.request = true,
            Cause::Reload => reasons.reload = true,
            Cause::Retry => reasons.retry = true,
            Cause::Restart => reasons.container = true,
            Cause::Watch => reasons.watch = true,
        }
        reasons
    }
}

/// When one entry falls due.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Timing {
    /// The earliest time asked for without debounce.
    at: Option<Instant>,
    /// A debounced burst: its first and its last event.
    burst: Option<Burst>,
}

/// A debounced burst of events.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Burst {
    first: Instant,
    last: Instant,
    /// How long after `last` it falls due: [`QUIET`], or [`WRITTEN_QUIET`] when the last
    /// event ended a write.
    quiet: Duration,
}

impl Timing {
    fn run_at(&self) -> Instant {
        let burst = self
            .burst
            .map(|b| (b.last + b.quiet).min(b.first + BURST_MAX));
        match (self.at, burst) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            // Never built: an entry has one or the other.
            (None, None) => Instant::now(),
        }
    }
}

/// What fell due, for one reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub reasons: Reasons,
    pub scope: Scope,
}

/// A reconcile of the whole revision for `reasons`.
impl From<Reasons> for Due {
    fn from(reasons: Reasons) -> Due {
        Due {
            reasons,
            scope: Scope::Revision,
        }
    }
}

/// What one reconcile covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole revision.
    Revision,
    /// These resources only.
    Resources(BTreeSet<ResourceId>),
}

/// The queue.
#[derive(Debug, Default)]
pub struct Scheduler {
    entries: BTreeMap<(Key, Cause), Timing>,
}

impl Scheduler {
    /// Asks for `key` to be reconciled for `cause` at `when`; an earlier request for the
    /// same key and cause stands.
    pub fn at(&mut self, key: Key, cause: Cause, when: Instant) {
        let timing = self.entries.entry((key, cause)).or_insert(Timing {
            at: None,
            burst: None,
        });
        timing.at = Some(timing.at.map_or(when, |at| at.min(when)));
    }

    /// Asks for `key` to be reconciled for `cause` once the burst this event belongs
    /// to is over (see [`QUIET`]).
    pub fn debounced(&mut self, key: Key, cause: Cause, now: Instant) {
        self.burst(key, cause, now, QUIET);
    }

    /// As [`Scheduler::debounced`], for an event that ended a write (a manifest closed
    /// after writing): the burst falls due after [`WRITTEN_QUIET`] unless another event
    /// follows.
    pub fn written(&mut self, key: Key, cause: Cause, now: Instant) {
        self.burst(key, cause, now, WRITTEN_QUIET);
    }

    fn burst(&mut self, key: Key, cause: Cause, now: Instant, quiet: Duration) {
        let timing = self.entries.entry((key, cause)).or_insert(Timing {
            at: None,
            burst: None,
        });
        let first = timing.burst.map_or(now, |b| b.first);
        timing.burst = Some(Burst {
            first,
            last: now,
            quiet,
        });
    }

    /// A driver's watch: the resource it names, or every declared resource of the kind
    /// it names (`declared`), is reconciled once the burst is over; one due later (a
    /// restart backoff) at that time. A resource that is not declared (an object only
    /// recorded, one gitvisor never made) waits for the resync, which prunes what the
    /// revision no longer declares. What is only told (events, live notes) schedules
    /// nothing.
    pub fn host_event(&mut self, event: HostEvent, declared: &BTreeSet<ResourceId>, now: Instant) {
        match event {
            HostEvent::Object(id) => {
                if declared.contains(&id) {
                    self.debounced(Key::Resource(id), Cause::Watch, now);
                }
            }
            HostEvent::Kind(kind) => {
                for id in of_kind(declared, kind) {
                    self.debounced(Key::Resource(id.clone()), Cause::Watch, now);
                }
            }
            HostEvent::ObjectAt(id, at) => {
                if declared.contains(&id) {
                    self.at(Key::Resource(id), Cause::Restart, at);
                }
            }
            HostEvent::Told { .. } | HostEvent::Live { .. } => {}
        }
    }

    /// Forgets the entries of `key` for `cause` (a hold a person lifted).
    pub fn forget(&mut self, key: &Key, cause: Cause) {
        self.entries.remove(&(key.clone(), cause));
    }

    /// Forgets every entry for `cause` on a resource (a new revision or a sync forgets
    /// every retry: they are served by the whole reconcile that follows).
    pub fn forget_resources(&mut self, cause: Cause) {
        self.entries
            .retain(|(key, c), _| !(*c == cause && matches!(key, Key::Resource(_))));
    }

    /// When the next entry falls due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(Timing::run_at).min()
    }

    /// Whether an entry for `key` and `cause` is waiting.
    pub fn contains(&self, key: &Key, cause: Cause) -> bool {
        self.entries.contains_key(&(key.clone(), cause))
    }

    /// Takes every entry due by `now`, as one reconcile: of the whole revision when a
    /// revision entry is among them, of the due resources otherwise.
    pub fn take_due(&mut self, now: Instant) -> Option<Due> {
        let due: Vec<(Key, Cause)> = self
            .entries
            .iter()
            .filter(|(_, timing)| timing.run_at() <= now)
            .map(|(key, _)| key.clone())
            .collect();
        if due.is_empty() {
            return None;
        }
        let mut reasons = Reasons::default();
        let mut resources = BTreeSet::new();
        let mut whole = false;
        for (key, cause) in due {
            self.entries.remove(&(key.clone(), cause));
            reasons = reasons.with(cause.reasons());
            match key {
                Key::Revision => whole = true,
                Key::Resource(id) => {
                    resources.insert(id);
                }
            }
        }
        let scope = if whole {
            Scope::Revision
        } else {
            Scope::Resources(resources)
        };
        Some(Due { reasons, scope })
    }
}

fn of_kind(declared: &BTreeSet<ResourceId>, kind: Kind) -> impl Iterator<Item = &ResourceId> {
    declared.iter().filter(move |id| id.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::WatchSink;
    use crate::model::Name;

    fn id(kind: Kind, name: &str) -> ResourceId {
        ResourceId::new(kind, Name::parse(name).unwrap())
    }

    fn resources(ids: &[&ResourceId]) -> Scope {
        Scope::Resources(ids.iter().map(|id| (*id).clone()).collect())
    }

    #[test]
    fn an_entry_due_sooner_replaces_a_later_one_and_a_later_never_postpones() {
        let now = Instant::now();
        let web = Key::Resource(id(Kind::Container, "web"));
        let mut scheduler = Scheduler::default();
        scheduler.at(web.clone(), Cause::Retry, now + Duration::from_secs(8));
        scheduler.at(web.clone(), Cause::Retry, now + Duration::from_secs(2));
        scheduler.at(web.clone(), Cause::Retry, now + Duration::from_secs(5));
        assert_eq!(scheduler.next_due(), Some(now + Duration::from_secs(2)));
        assert_eq!(scheduler.take_due(now + Duration::from_secs(1)), None);
        let due = scheduler.take_due(now + Duration::from_secs(2)).unwrap();
        assert!(due.reasons.retry);
        assert_eq!(due.scope, resources(&[&id(Kind::Container, "web")]));
        assert_eq!(scheduler.next_due(), None, "served once");
    }

    #[test]
    fn a_burst_collapses_into_one_entry_after_the_quiet_at_most_burst_max_after_it_began() {
        let start = Instant::now();
        let mut scheduler = Scheduler::default();
        // One event every 50 ms for a second: never quiet for 100 ms.
        for step in 0..20u32 {
            scheduler.debounced(Key::Revision, Cause::Source, start + step * QUIET / 2);
        }
        assert_eq!(scheduler.next_due(), Some(start + BURST_MAX));
        // A single event: due after the quiet.
        let mut scheduler = Scheduler::default();
        scheduler.debounced(Key::Revision, Cause::Source, start);
        assert_eq!(scheduler.next_due(), Some(start + QUIET));
        scheduler.debounced(Key::Revision, Cause::Source, start + QUIET / 2);
        assert_eq!(scheduler.next_due(), Some(start + QUIET + QUIET / 2));
        let due = scheduler.take_due(start + QUIET * 2).unwrap();
        assert_eq!(due.scope, Scope::Revision);
        assert_eq!(due.reasons.describe(), "source");
        assert_eq!(scheduler.take_due(start + QUIET * 3), None);
    }

    #[test]
    fn a_write_that_ended_is_due_after_the_short_quiet_unless_another_event_follows() {
        let start = Instant::now();
        let mut scheduler = Scheduler::default();
        // A save: the truncate and the write, then the close.
        scheduler.debounced(Key::Revision, Cause::Source, start);
        scheduler.debounced(Key::Revision, Cause::Source, start);
        scheduler.written(Key::Revision, Cause::Source, start + WRITTEN_QUIET / 2);
        assert_eq!(
            scheduler.next_due(),
            Some(start + WRITTEN_QUIET / 2 + WRITTEN_QUIET)
        );
        // Another file opened and written after it: the long quiet again.
        scheduler.debounced(Key::Revision, Cause::Source, start + WRITTEN_QUIET);
        assert_eq!(scheduler.next_due(), Some(start + WRITTEN_QUIET + QUIET));
        // Closed too: the short one.
        scheduler.written(Key::Revision, Cause::Source, start + WRITTEN_QUIET * 2);
        assert_eq!(scheduler.next_due(), Some(start + WRITTEN_QUIET * 3));
        let due = scheduler.take_due(start + WRITTEN_QUIET * 3).unwrap();
        assert_eq!(due.scope, Scope::Revision);
        // A stream of saves still falls due at most BURST_MAX after the first.
        let mut scheduler = Scheduler::default();
        for step in 0..200u32 {
            scheduler.written(
                Key::Revision,
                Cause::Source,
                start + step * WRITTEN_QUIET / 2,
            );
        }
        assert_eq!(scheduler.next_due(), Some(start + BURST_MAX));
    }

    #[test]
    fn a_due_revision_entry_serves_every_due_resource_entry_in_one_whole_reconcile() {
        let now = Instant::now();
        let br0 = id(Kind::Bridge, "br0");
        let web = id(Kind::Container, "web");
        let mut scheduler = Scheduler::default();
        scheduler.at(Key::Resource(br0.clone()), Cause::Retry, now);
        scheduler.at(Key::Revision, Cause::Resync, now);
        // Not yet due: stays for later.
        scheduler.at(
            Key::Resource(web.clone()),
            Cause::Restart,
            now + Duration::from_secs(4),
        );
        let due = scheduler.take_due(now).unwrap();
        assert_eq!(due.scope, Scope::Revision);
        assert_eq!(due.reasons.describe(), "resync+retry");
        assert_eq!(scheduler.next_due(), Some(now + Duration::from_secs(4)));
        let due = scheduler.take_due(now + Duration::from_secs(4)).unwrap();
        assert_eq!(due.scope, resources(&[&web]));
        assert_eq!(due.reasons.describe(), "container");
    }

    #[test]
    fn causes_of_one_key_keep_their_own_time() {
        let now = Instant::now();
        let mut scheduler = Scheduler::default();
        scheduler.at(Key::Revision, Cause::Resync, now + Duration::from_secs(300));
        scheduler.at(Key::Revision, Cause::Source, now + Duration::from_secs(60));
        let due = scheduler.take_due(now + Duration::from_secs(60)).unwrap();
        assert_eq!(due.reasons.describe(), "source", "the poll is no resync");
        assert!(scheduler.contains(&Key::Revision, Cause::Resync));
        assert_eq!(scheduler.next_due(), Some(now + Duration::from_secs(300)));
        scheduler.at(Key::Resource(id(Kind::Bridge, "b")), Cause::Retry, now);
        scheduler.at(Key::Resource(id(Kind::Bridge, "b")), Cause::Watch, now);
        scheduler.forget_resources(Cause::Retry);
        assert_eq!(
            scheduler.take_due(now).map(|due| due.reasons.describe()),
            Some("watch".to_owned())
        );
    }

    /// Events sent through a driver's sink, as a watch sends them, become debounced
    /// entries of the resources they name; those of undeclared objects wait for the
    /// resync.
    #[tokio::test]
    async fn host_events_from_a_sink_become_one_targeted_reconcile_per_burst() {
        let br0 = id(Kind::Bridge, "br0");
        let br1 = id(Kind::Bridge, "br1");
        let web = id(Kind::Container, "web");
        let stray = id(Kind::Bridge, "not-declared");
        let declared = BTreeSet::from([br0.clone(), br1.clone(), web.clone()]);
        let (sink, mut receiver) = WatchSink::channel();
        for _ in 0..10 {
            sink.send(HostEvent::Object(br0.clone()));
        }
        sink.send(HostEvent::Object(stray));
        sink.send(HostEvent::Kind(Kind::Container));
        sink.send(HostEvent::ObjectAt(
            web.clone(),
            Instant::now() + BURST_MAX * 4,
        ));
        drop(sink);
        let now = Instant::now();
        let mut scheduler = Scheduler::default();
        while let Some(event) = receiver.recv().await {
            scheduler.host_event(event, &declared, now);
        }
        assert_eq!(scheduler.take_due(now), None, "debounced");
        assert_eq!(scheduler.next_due(), Some(now + QUIET));
        let due = scheduler.take_due(now + QUIET).unwrap();
        assert_eq!(due.reasons.describe(), "watch");
        assert_eq!(due.scope, resources(&[&br0, &web]));
        let due = scheduler.take_due(now + BURST_MAX * 4).unwrap();
        assert_eq!(
            due.reasons.describe(),
            "container",
            "a restart's backoff ended"
        );
        assert_eq!(due.scope, resources(&[&web]));
        assert_eq!(scheduler.next_due(), None);
        // A kind's event covers every declared resource of the kind.
        scheduler.host_event(HostEvent::Kind(Kind::Bridge), &declared, now);
        let due = scheduler.take_due(now + QUIET).unwrap();
        assert_eq!(due.scope, resources(&[&br0, &br1]));
    }
}
