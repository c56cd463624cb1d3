//! The container driver's watch ([`Driver::watch`](crate::contract::Driver::watch)): the
//! controller's eye on its containers between reconciles. Health verdicts, exits,
//! restarts and lost supervisors become events, and a dead container whose
//! `restartPolicy` restarts it gets a reconcile at once, not at the next resync.
//!
//! # Order of steps, per look
//!
//! 1. Wait for the container watch ([`SupervisorWatch`]: inotify on the supervisors'
//!    records, pidfds on the containers' and supervisors' processes), or a poke after an
//!    apply; then list every container once.
//! 2. Per container of gitvisor's (the marker annotation names it), compare with the
//!    last look ([`transitions`]) and send one [`HostEvent::Told`] per transition. The
//!    first look after the start only sets the baseline.
//! 3. Send how each container is doing ([`HostEvent::Live`], for `status`).
//! 4. Per dead container declared `Running` (as the driver's last plan was handed it,
//!    [`Declared`]), and not stopped by gitvisor, ask its `restartPolicy`
//!    ([`restart::decide`], the same decision `plan` makes): restart now
//!    ([`HostEvent::Object`]: the controller reconciles it), later
//!    ([`HostEvent::ObjectAt`] when the backoff ends: an entry of the controller's
//!    scheduler), or never (the exit's event says the policy leaves it stopped). Each
//!    death (its restart count and exit time) asks for one immediate reconcile, so a
//!    reconcile that cannot restart it does not start another; a restart that fails is
//!    the controller's retry policy's business.
//!
//! The reconcile itself is the ordinary one (plan, apply, record), so the restart is
//! planned, recorded and reported like any other change; the next look reports the
//! container running again, with its restart count.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::RestartPolicy;
use super::live_note;
use super::restart::{self, Decision};
use super::seam::MANAGED_ANNOTATION;
use super::supervision::{Sighting, Transition, transitions};
use super::watch::{Look, Poke, SupervisorWatch, WatchError};
use crate::contract::{HostEvent, Severity, WatchHandle, WatchSink};
use crate::model::{Kind, Name, ResourceId, RunState};
use crate::state::EventLevel;

/// A reconcile for a restart backoff comes this much after the backoff ends, so the plan
/// (which decides by the wall clock) sees it ended.
const WAKE_MARGIN: Duration = Duration::from_millis(50);

/// How the revision declares each container (by name): its state and restart policy,
/// as the driver's last plan was handed them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Declared(Arc<Mutex<BTreeMap<String, (RunState, RestartPolicy)>>>);

impl Declared {
    pub(crate) fn set(&self, declared: BTreeMap<String, (RunState, RestartPolicy)>) {
        match self.0.lock() {
            Ok(mut map) => *map = declared,
            Err(poisoned) => *poisoned.into_inner() = declared,
        }
    }

    fn get(&self, name: &str) -> Option<(RunState, RestartPolicy)> {
        match self.0.lock() {
            Ok(map) => map.get(name).copied(),
            Err(poisoned) => poisoned.into_inner().get(name).copied(),
        }
    }
}

/// One death of one container: its restart count and when it exited (if recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Death {
    restarts: u32,
    at: Option<SystemTime>,
}

impl Death {
    fn of(look: &Look) -> Death {
        Death {
            restarts: look.container.restarts,
            at: look.container.exit.as_ref().map(|e| e.at),
        }
    }
}

/// What the looks so far leave behind: the last sighting of each container, and the
/// deaths a restart was already asked for.
#[derive(Debug, Default)]
struct Memory {
    /// By container id; `None` before the first look.
    seen: Option<BTreeMap<String, Sighting>>,
    /// The deaths a restart was asked for, by container id.
    requested: BTreeMap<String, Death>,
}

/// What one look asks for.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    events: Vec<(EventLevel, ResourceId, String)>,
    /// Containers to restart now.
    restart_now: Vec<ResourceId>,
    /// Reconciles later, when restart backoffs end.
    wakes: Vec<(ResourceId, Duration)>,
    /// How each container is doing, for `status`.
    live: BTreeMap<ResourceId, String>,
}

/// How the current revision declares a container: its state and restart policy.
type DeclaredFn<'a> = dyn Fn(&str) -> Option<(RunState, RestartPolicy)> + 'a;

/// Starts the watch task: it looks whenever the container watch wakes it and sends what
/// it finds into `sink`, until the returned handle is dropped. Also returns the poke
/// the driver gives after each apply.
pub(crate) fn start(
    run_dir: &Path,
    state_dir: &Path,
    declared: Declared,
    sink: WatchSink,
) -> Result<(WatchHandle, Poke), WatchError> {
    let mut watch = SupervisorWatch::start(run_dir, state_dir)?;
    let poke = watch.poke_handle();
    let task = tokio::spawn(async move {
        let mut memory = Memory::default();
        loop {
            watch.changed().await;
            if sink.is_closed() {
                return;
            }
            let looks = match watch.look().await {
                Ok(looks) => looks,
                Err(error) => {
                    tracing::warn!(error = %crate::contract::chain(&error), "cannot list the containers; exits are handled at the next resync");
                    continue;
                }
            };
            let outcome = memory.step(looks, &|name| declared.get(name), SystemTime::now());
            send(&sink, outcome);
        }
    });
    Ok((WatchHandle::new(vec![task]), poke))
}

/// Steps 2 to 4's messages, into the sink.
fn send(sink: &WatchSink, outcome: Outcome) {
    for (level, id, message) in outcome.events {
        sink.send(HostEvent::Told {
            id,
            level: severity(level),
            message,
        });
    }
    sink.send(HostEvent::Live {
        kind: Kind::Container,
        notes: outcome.live,
    });
    let now = tokio::time::Instant::now();
    for (id, after) in outcome.wakes {
        sink.send(HostEvent::ObjectAt(id, now + after + WAKE_MARGIN));
    }
    for id in outcome.restart_now {
        sink.send(HostEvent::Object(id));
    }
}

fn severity(level: EventLevel) -> Severity {
    match level {
        EventLevel::Info => Severity::Info,
        EventLevel::Warning => Severity::Warning,
        EventLevel::Error => Severity::Error,
    }
}

impl Memory {
    /// Steps 2 to 4 for one look; pure but for what it remembers.
    fn step(
        &mut self,
        looks: BTreeMap<String, Look>,
        declared: &DeclaredFn<'_>,
        now: SystemTime,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        for (name, look) in &looks {
            let ours = look.container.annotations.get(MANAGED_ANNOTATION) == Some(name);
            let Some(id) = Name::parse(name)
                .ok()
                .filter(|_| ours)
                .map(|name| ResourceId::new(Kind::Container, name))
            else {
                continue;
            };
            let decision = decide(declared, name, look, now);
            let note = match &decision {
                Some((
                    _,
                    Decision::Restart { why } | Decision::Wait { why, .. } | Decision::Keep { why },
                )) => why.clone(),
                None => live_note(&look.container, None),
            };
            outcome.live.insert(id.clone(), note);
            let seen = match &self.seen {
                None => Vec::new(),
                Some(seen) => {
                    let before = seen
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| new_container(&look.sighting));
                    transitions(&before, &look.sighting)
                }
            };
            for transition in seen {
                let message = match (&transition, &decision) {
                    (
                        Transition::Exited {
                            by_gitvisor: false, ..
                        },
                        Some((policy, decision)),
                    ) => format!(
                        "{transition}; {}",
                        describe(*policy, decision, look.container.restarts)
                    ),
                    _ => transition.to_string(),
                };
                outcome
                    .events
                    .push((transition.level(), id.clone(), message));
            }
            let Some((_, decision)) = decision else {
                continue;
            };
            let death = Death::of(look);
            match decision {
                Decision::Restart { .. } => {
                    if self.requested.get(name) != Some(&death) {
                        self.requested.insert(name.clone(), death);
                        outcome.restart_now.push(id);
                    }
                }
                // Asked for at every look (it replaces the last): should the reconcile
                // come a moment before the plan (which goes by the wall clock) sees the
                // backoff ended, the look after it asks again.
                Decision::Wait { remaining, .. } => outcome.wakes.push((id, remaining)),
                Decision::Keep { .. } => {}
            }
        }
        // A death is forgotten once the container runs again or is gone.
        self.requested.retain(|name, death| {
            looks
                .get(name)
                .is_some_and(|look| !look.sighting.alive && Death::of(look) == *death)
        });
        self.seen = Some(
            looks
                .into_iter()
                .map(|(name, look)| (name, look.sighting))
                .collect(),
        );
        outcome
    }
}

/// What the restart policy says about `look`, when it is a dead container declared
/// `Running` that gitvisor did not stop itself.
fn decide(
    declared: &DeclaredFn<'_>,
    name: &str,
    look: &Look,
    now: SystemTime,
) -> Option<(RestartPolicy, Decision)> {
    if look.sighting.alive || look.container.stopped_by_gitvisor {
        return None;
    }
    let (state, policy) = declared(name)?;
    if state != RunState::Running {
        return None;
    }
    Some((policy, restart::decide(policy, &look.container, now)))
}

/// The decision, as the end of the exit's event.
fn describe(policy: RestartPolicy, decision: &Decision, restarts: u32) -> String {
    let next = restarts + 1;
    match decision {
        Decision::Restart { .. } => {
            format!("restartPolicy {policy:?}: the controller restarts it now (restart {next})")
        }
        Decision::Wait { remaining, .. } => format!(
            "restartPolicy {policy:?}: the controller restarts it in {} (backoff before restart {next})",
            humantime::format_duration(Duration::from_secs(remaining.as_secs_f64().ceil() as u64))
        ),
        Decision::Keep { .. } => {
            format!("restartPolicy {policy:?} leaves it stopped (the restart policy gives up)")
        }
    }
}

/// What a container first seen after the baseline is compared with: just started.
fn new_container(after: &Sighting) -> Sighting {
    Sighting {
        alive: true,
        pid: None,
        restarts: after.restarts,
        health: None,
        exit: None,
        stopped_by_gitvisor: false,
        supervised: true,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::drivers::container::seam::{
        ExitRecord, HealthRecord, RuntimeContainer, RuntimeStatus,
    };

    /// gitvisor's container `name` (its marker annotation set) as the runtime lists it.
    fn container(name: &str, status: RuntimeStatus, restarts: u32) -> RuntimeContainer {
        RuntimeContainer {
            status,
            pid: (status == RuntimeStatus::Running).then_some(1000 + restarts),
            restarts,
            ..RuntimeContainer::not_created(name)
        }
    }

    fn look(container: RuntimeContainer, supervised: bool) -> (String, Look) {
        let sighting = Sighting::of(&container, supervised);
        (
            container.id.clone(),
            Look {
                container,
                sighting,
            },
        )
    }

    fn running(name: &str, restarts: u32) -> (String, Look) {
        look(container(name, RuntimeStatus::Running, restarts), true)
    }

    fn exited(name: &str, restarts: u32, code: Option<i32>, at: SystemTime) -> (String, Look) {
        let mut c = container(name, RuntimeStatus::Stopped, restarts);
        c.exit = code.map(|code| ExitRecord {
            code,
            at,
            unhealthy: false,
        });
        look(c, false)
    }

    fn id(name: &str) -> ResourceId {
        ResourceId::new(Kind::Container, Name::parse(name).unwrap())
    }

    fn policy(policy: RestartPolicy) -> impl Fn(&str) -> Option<(RunState, RestartPolicy)> {
        move |_| Some((RunState::Running, policy))
    }

    /// Nothing to tell and nothing to do.
    fn quiet(outcome: &Outcome) -> bool {
        outcome.events.is_empty() && outcome.restart_now.is_empty() && outcome.wakes.is_empty()
    }

    fn assert_contains(text: &str, part: &str) {
        assert!(text.contains(part), "{text:?} does not contain {part:?}");
    }

    fn messages(outcome: &Outcome) -> Vec<String> {
        outcome.events.iter().map(|(_, _, m)| m.clone()).collect()
    }

    #[test]
    fn a_death_without_a_supervisor_is_told_and_restarted_once_then_its_restart_is_told() {
        let now = SystemTime::now();
        let always = policy(RestartPolicy::Always);
        let mut memory = Memory::default();
        let baseline = memory.step(BTreeMap::from([running("web", 0)]), &always, now);
        assert!(
            quiet(&baseline),
            "the first look is the baseline: {baseline:?}"
        );
        assert_eq!(baseline.live[&id("web")], "running (pid 1000)");

        let died = memory.step(BTreeMap::from([exited("web", 0, None, now)]), &always, now);
        assert_eq!(
            messages(&died),
            [
                "is no longer running, and its exit was not recorded (its supervisor is gone); restartPolicy Always: the controller restarts it now (restart 1)"
            ]
        );
        assert_eq!(died.events[0].0, EventLevel::Warning);
        assert_eq!(died.events[0].1, id("web"));
        assert_eq!(died.restart_now, [id("web")]);

        // The same death seen again (a reconcile that could not restart it): nothing.
        let again = memory.step(BTreeMap::from([exited("web", 0, None, now)]), &always, now);
        assert!(quiet(&again), "{again:?}");

        let back = memory.step(BTreeMap::from([running("web", 1)]), &always, now);
        assert_eq!(messages(&back), ["running again (restart 1, pid 1001)"]);
        assert!(back.restart_now.is_empty());

        // Its next death is a new one.
        let later = now + Duration::from_secs(60);
        let died_again = memory.step(
            BTreeMap::from([exited("web", 1, Some(137), now)]),
            &always,
            later,
        );
        assert!(!died_again.restart_now.is_empty());
        assert_eq!(
            messages(&died_again),
            [
                "exited with code 137; restartPolicy Always: the controller restarts it now (restart 2)"
            ]
        );
    }

    #[test]
    fn a_backoff_becomes_a_wake_up_and_the_restart_comes_when_it_ends() {
        let exit = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let always = policy(RestartPolicy::Always);
        let mut memory = Memory::default();
        memory.step(BTreeMap::from([running("web", 3)]), &always, exit);
        // Restart 4 waits 4 s after the exit (1, 2, 4, 8 … s).
        let died = memory.step(
            BTreeMap::from([exited("web", 3, Some(1), exit)]),
            &always,
            exit + Duration::from_secs(1),
        );
        assert!(died.restart_now.is_empty());
        assert_eq!(died.wakes, [(id("web"), Duration::from_secs(3))]);
        assert_eq!(
            messages(&died),
            [
                "exited with code 1; restartPolicy Always: the controller restarts it in 3s (backoff before restart 4)"
            ]
        );
        // Looked at again when the wake-up's reconcile ran, a moment early: waits on.
        let early = memory.step(
            BTreeMap::from([exited("web", 3, Some(1), exit)]),
            &always,
            exit + Duration::from_millis(3990),
        );
        assert!(early.events.is_empty() && early.restart_now.is_empty());
        assert_eq!(
            early.wakes,
            [(id("web"), Duration::from_millis(10))],
            "asked for again"
        );
        let due = memory.step(
            BTreeMap::from([exited("web", 3, Some(1), exit)]),
            &always,
            exit + Duration::from_secs(4),
        );
        assert!(!due.restart_now.is_empty());
        assert!(due.events.is_empty());
    }

    #[test]
    fn never_and_a_clean_exit_under_on_failure_stay_down_and_say_so() {
        let now = SystemTime::now();
        for (chosen, code, why) in [
            (
                RestartPolicy::Never,
                3,
                "exited with code 3; restartPolicy Never leaves it stopped (the restart policy gives up)",
            ),
            (
                RestartPolicy::OnFailure,
                0,
                "exited with code 0; restartPolicy OnFailure leaves it stopped (the restart policy gives up)",
            ),
        ] {
            let declared = policy(chosen);
            let mut memory = Memory::default();
            memory.step(BTreeMap::from([running("job", 0)]), &declared, now);
            let ended = memory.step(
                BTreeMap::from([exited("job", 0, Some(code), now)]),
                &declared,
                now,
            );
            assert_eq!(messages(&ended), [why]);
            assert!(ended.restart_now.is_empty() && ended.wakes.is_empty());
            assert_contains(&ended.live[&id("job")], "leaves it stopped");
        }
    }

    #[test]
    fn undeclared_stopped_and_foreign_containers_are_not_restarted_here() {
        let now = SystemTime::now();
        let always = policy(RestartPolicy::Always);
        let undeclared = |_: &str| None;
        let mut memory = Memory::default();
        memory.step(BTreeMap::from([running("old", 0)]), &undeclared, now);
        let outcome = memory.step(
            BTreeMap::from([exited("old", 0, Some(1), now)]),
            &undeclared,
            now,
        );
        assert_eq!(messages(&outcome), ["exited with code 1"]);
        assert!(outcome.restart_now.is_empty());

        let stopped = |_: &str| Some((RunState::Stopped, RestartPolicy::Always));
        let mut memory = Memory::default();
        let outcome = memory.step(
            BTreeMap::from([exited("web", 0, Some(1), now)]),
            &stopped,
            now,
        );
        assert!(outcome.restart_now.is_empty());

        let mut foreign = container("other", RuntimeStatus::Stopped, 0);
        foreign.annotations.clear();
        let mut memory = Memory::default();
        memory.step(BTreeMap::new(), &always, now);
        let outcome = memory.step(BTreeMap::from([look(foreign, false)]), &always, now);
        assert!(quiet(&outcome) && outcome.live.is_empty(), "{outcome:?}");
    }

    #[test]
    fn health_verdicts_and_an_unhealthy_kill_are_told_with_the_resource() {
        let now = SystemTime::now();
        let on_failure = policy(RestartPolicy::OnFailure);
        let health = |status: &str, failures: u32| HealthRecord {
            status: status.into(),
            failures,
            last_output: String::new(),
        };
        let mut memory = Memory::default();
        memory.step(BTreeMap::from([running("sick", 0)]), &on_failure, now);
        let mut healthy = container("sick", RuntimeStatus::Running, 0);
        healthy.health = Some(health("healthy", 0));
        let outcome = memory.step(BTreeMap::from([look(healthy, true)]), &on_failure, now);
        assert_eq!(
            outcome.events,
            [(
                EventLevel::Info,
                id("sick"),
                "health starting → healthy".to_owned()
            )]
        );
        let mut killed = container("sick", RuntimeStatus::Stopped, 0);
        killed.health = Some(health("unhealthy", 2));
        killed.exit = Some(ExitRecord {
            code: 137,
            at: now,
            unhealthy: true,
        });
        let outcome = memory.step(BTreeMap::from([look(killed, false)]), &on_failure, now);
        assert_eq!(
            messages(&outcome),
            [
                "health healthy → unhealthy (2 failed checks in a row)",
                "was stopped as unhealthy (exit code 137); restartPolicy OnFailure: the controller restarts it now (restart 1)"
            ]
        );
        assert!(!outcome.restart_now.is_empty());
    }

    #[test]
    fn the_decision_ends_the_exit_event_in_words() {
        let wait = Decision::Wait {
            remaining: Duration::from_millis(3200),
            why: String::new(),
        };
        assert_eq!(
            describe(RestartPolicy::OnFailure, &wait, 2),
            "restartPolicy OnFailure: the controller restarts it in 4s (backoff before restart 3)"
        );
    }
}
