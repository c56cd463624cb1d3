//! What happened to a container between two looks, as events: its health check changed
//! its verdict, its process exited (and how), it was started again, or its supervisor
//! went away while it runs. Pure: two [`Sighting`]s in, [`Transition`]s out.
//!
//! Why a sighting and not the runtime's status alone: a container whose process has
//! just ended is `stopped` for runc a moment before its supervisor has recorded the exit
//! code. While the supervisor lives and has not written `exit.json`, the container
//! still counts as alive ([`Sighting::alive`]), so one death is reported once, with its
//! code, and not first as "exit unknown". When the supervisor is gone too, nobody will
//! record it, and the death is reported without a code.
//!
//! The driver's watch ([`controller_watch`](super::controller_watch)) turns transitions
//! into events for the controller and, for a dead container, asks
//! [`restart`](super::restart) what its `restartPolicy` says.

use std::fmt;

use super::seam::{ExitRecord, HealthRecord, RuntimeContainer, RuntimeStatus};
use crate::state::EventLevel;

/// One look at one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    /// Its process runs, or has ended so recently that its supervisor has yet to
    /// record how.
    pub alive: bool,
    pub pid: Option<u32>,
    /// Restarts since it was created (a replace starts again at 0).
    pub restarts: u32,
    pub health: Option<HealthRecord>,
    /// How its last process ended, as its supervisor recorded it: its own exit when it
    /// is dead, the exit before its last restart when it is alive.
    pub exit: Option<ExitRecord>,
    /// gitvisor stopped it (declared `Stopped`).
    pub stopped_by_gitvisor: bool,
    /// Its supervisor process still runs.
    pub supervised: bool,
}

impl Sighting {
    /// The sighting of `container`, whose supervisor runs or not.
    pub fn of(container: &RuntimeContainer, supervised: bool) -> Sighting {
        let alive = match container.status {
            RuntimeStatus::Creating
            | RuntimeStatus::Created
            | RuntimeStatus::Running
            | RuntimeStatus::Paused => true,
            RuntimeStatus::Stopped => container.exit.is_none() && supervised,
            RuntimeStatus::NotCreated => false,
        };
        Sighting {
            alive,
            pid: container.pid,
            restarts: container.restarts,
            health: container.health.clone(),
            exit: container.exit.clone(),
            stopped_by_gitvisor: container.stopped_by_gitvisor,
            supervised,
        }
    }
}

/// Something worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The health check's verdict changed (`starting`, `healthy`, `unhealthy`).
    Health {
        from: Option<String>,
        to: String,
        failures: u32,
        output: String,
    },
    /// Its process ended. `code` is `None` when nobody recorded it (the supervisor is
    /// gone).
    Exited {
        code: Option<i32>,
        unhealthy: bool,
        by_gitvisor: bool,
    },
    /// It runs again, as restart number `count`.
    Restarted { count: u32, pid: Option<u32> },
    /// Its supervisor ended while the container runs on.
    SupervisorLost,
}

impl Transition {
    pub fn level(&self) -> EventLevel {
        match self {
            Transition::Health { to, .. } if to == "healthy" => EventLevel::Info,
            Transition::Health { .. } | Transition::SupervisorLost => EventLevel::Warning,
            Transition::Exited {
                code, by_gitvisor, ..
            } => {
                if *by_gitvisor || *code == Some(0) {
                    EventLevel::Info
                } else {
                    EventLevel::Warning
                }
            }
            Transition::Restarted { .. } => EventLevel::Info,
        }
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transition::Health {
                from,
                to,
                failures,
                output,
            } => {
                let from = from.as_deref().unwrap_or("starting");
                write!(f, "health {from} → {to}")?;
                if *failures > 0 {
                    let plural = if *failures == 1 { "" } else { "s" };
                    write!(f, " ({failures} failed check{plural} in a row")?;
                    if !output.is_empty() {
                        write!(f, ": {output}")?;
                    }
                    f.write_str(")")?;
                }
                Ok(())
            }
            Transition::Exited {
                by_gitvisor: true, ..
            } => f.write_str("stopped by gitvisor (declared Stopped)"),
            Transition::Exited {
                code: Some(code),
                unhealthy: true,
                ..
            } => write!(f, "was stopped as unhealthy (exit code {code})"),
            Transition::Exited {
                code: Some(code), ..
            } => write!(f, "exited with code {code}"),
            Transition::Exited { code: None, .. } => f.write_str(
                "is no longer running, and its exit was not recorded (its supervisor is gone)",
            ),
            Transition::Restarted { count, pid } => {
                write!(f, "running again (restart {count}")?;
                if let Some(pid) = pid {
                    write!(f, ", pid {pid}")?;
                }
                f.write_str(")")
            }
            Transition::SupervisorLost => f.write_str(
                "its supervisor (gitvisor container-shim) ended while the container runs: its output is no longer logged and its health no longer checked until it is restarted or replaced",
            ),
        }
    }
}

/// What changed from `before` to `after` (two looks at the same container), in the
/// order it happened: a death and a restart, the health verdict, then an exit or the
/// supervisor's loss. A replace (restarts back to 0) is the apply's to report.
///
/// The looks come between reconciles, so a restarted process may have started and died
/// again before the next look (a health check failing from the start, while a slow
/// reconcile runs): its restart is still told, without a pid, before its exit.
pub fn transitions(before: &Sighting, after: &Sighting) -> Vec<Transition> {
    let mut out = Vec::new();
    if after.restarts < before.restarts {
        return out;
    }
    if after.restarts > before.restarts {
        if before.alive && after.alive {
            // The death between the two looks (a restart by `gitvisor apply`, say),
            // from the record the restart kept.
            out.push(exited(after));
        }
        out.push(Transition::Restarted {
            count: after.restarts,
            pid: after.pid.filter(|_| after.alive),
        });
        // A new process starts without a verdict.
        out.extend(health_change(None, after));
        if !after.alive {
            out.push(exited(after));
        }
        return out;
    }
    out.extend(health_change(
        before.health.as_ref().map(|h| h.status.clone()),
        after,
    ));
    if before.alive && !after.alive {
        out.push(exited(after));
    }
    if before.supervised && !after.supervised && after.alive {
        out.push(Transition::SupervisorLost);
    }
    out
}

/// The health verdict's change from `previous` (`None`: a new process, whose first
/// `starting` is no change) to `after`'s.
fn health_change(previous: Option<String>, after: &Sighting) -> Option<Transition> {
    let health = after.health.as_ref()?;
    let changed = previous.as_deref() != Some(health.status.as_str());
    let first_start = previous.is_none() && health.status == "starting";
    (changed && !first_start).then(|| Transition::Health {
        from: previous,
        to: health.status.clone(),
        failures: health.failures,
        output: health.last_output.clone(),
    })
}

fn exited(after: &Sighting) -> Transition {
    Transition::Exited {
        code: after.exit.as_ref().map(|e| e.code),
        unhealthy: after.exit.as_ref().is_some_and(|e| e.unhealthy),
        by_gitvisor: after.stopped_by_gitvisor,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    use super::*;

    fn container(status: RuntimeStatus, restarts: u32) -> RuntimeContainer {
        RuntimeContainer {
            id: "web".into(),
            status,
            pid: (status == RuntimeStatus::Running).then_some(100 + restarts),
            annotations: BTreeMap::new(),
            limits: None,
            exit: None,
            health: None,
            restarts,
            started: None,
            stopped_by_gitvisor: false,
            resolv_conf: None,
        }
    }

    fn health(status: &str, failures: u32) -> HealthRecord {
        HealthRecord {
            status: status.into(),
            failures,
            last_output: if failures > 0 {
                "no".into()
            } else {
                String::new()
            },
        }
    }

    fn exit(code: i32, unhealthy: bool) -> ExitRecord {
        ExitRecord {
            code,
            at: SystemTime::now(),
            unhealthy,
        }
    }

    fn running(restarts: u32, health: Option<HealthRecord>) -> Sighting {
        let mut c = container(RuntimeStatus::Running, restarts);
        c.health = health;
        Sighting::of(&c, true)
    }

    fn dead(restarts: u32, exit: Option<ExitRecord>, supervised: bool) -> Sighting {
        let mut c = container(RuntimeStatus::Stopped, restarts);
        c.exit = exit;
        Sighting::of(&c, supervised)
    }

    #[test]
    fn a_stopped_container_whose_supervisor_has_yet_to_record_the_exit_is_still_alive() {
        assert!(dead(0, None, true).alive);
        assert!(!dead(0, None, false).alive);
        assert!(!dead(0, Some(exit(1, false)), true).alive);
        // So the death is reported once, with its code, when the record arrives.
        let before = running(0, None);
        assert!(transitions(&before, &dead(0, None, true)).is_empty());
        assert_eq!(
            transitions(&dead(0, None, true), &dead(0, Some(exit(3, false)), false)),
            [Transition::Exited {
                code: Some(3),
                unhealthy: false,
                by_gitvisor: false
            }]
        );
    }

    #[test]
    fn health_verdicts_become_transitions_but_a_first_start_does_not() {
        let none = running(0, None);
        let starting = running(0, Some(health("starting", 0)));
        let healthy = running(0, Some(health("healthy", 0)));
        let failing = running(0, Some(health("starting", 1)));
        let unhealthy = running(0, Some(health("unhealthy", 2)));
        assert!(transitions(&none, &starting).is_empty());
        assert!(transitions(&healthy, &healthy).is_empty());
        let to = |t: &[Transition]| match t {
            [Transition::Health { to, .. }] => to.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(to(&transitions(&starting, &healthy)), "healthy");
        assert_eq!(to(&transitions(&none, &healthy)), "healthy");
        assert_eq!(to(&transitions(&healthy, &failing)), "starting");
        assert_eq!(to(&transitions(&failing, &unhealthy)), "unhealthy");
        let shown = transitions(&failing, &unhealthy)[0].to_string();
        assert_eq!(
            shown,
            "health starting → unhealthy (2 failed checks in a row: no)"
        );
        assert_eq!(
            transitions(&failing, &unhealthy)[0].level(),
            EventLevel::Warning
        );
        assert_eq!(
            transitions(&starting, &healthy)[0].level(),
            EventLevel::Info
        );
    }

    #[test]
    fn an_unhealthy_kill_reports_the_verdict_then_the_exit() {
        let healthy = running(0, Some(health("healthy", 0)));
        let mut killed = container(RuntimeStatus::Stopped, 0);
        killed.health = Some(health("unhealthy", 3));
        killed.exit = Some(exit(137, true));
        let after = Sighting::of(&killed, false);
        let seen = transitions(&healthy, &after);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(matches!(&seen[0], Transition::Health { to, .. } if to == "unhealthy"));
        assert_eq!(
            seen[1].to_string(),
            "was stopped as unhealthy (exit code 137)"
        );
    }

    #[test]
    fn a_restart_that_died_again_before_the_next_look_is_still_told() {
        // Killed as unhealthy; restarted and killed again while a reconcile ran.
        let before = dead(1, Some(exit(137, true)), true);
        let mut after = dead(2, Some(exit(137, true)), true);
        after.health = Some(health("unhealthy", 2));
        let seen = transitions(&before, &after);
        assert_eq!(
            seen.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "running again (restart 2)",
                "health starting → unhealthy (2 failed checks in a row: no)",
                "was stopped as unhealthy (exit code 137)",
            ]
        );
        // Running again when seen: its pid, and the verdict after the restart.
        let mut alive = running(2, Some(health("healthy", 0)));
        alive.exit = Some(exit(137, true));
        assert_eq!(
            transitions(&before, &alive)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "running again (restart 2, pid 102)",
                "health starting → healthy"
            ]
        );
    }

    #[test]
    fn exits_restarts_and_a_lost_supervisor() {
        let alive = running(0, None);
        let gone = dead(0, None, false);
        let seen = transitions(&alive, &gone);
        assert_eq!(
            seen,
            [Transition::Exited {
                code: None,
                unhealthy: false,
                by_gitvisor: false
            }]
        );
        assert_eq!(seen[0].level(), EventLevel::Warning);
        assert_contains(&seen[0].to_string(), "exit was not recorded");

        let clean = transitions(&alive, &dead(0, Some(exit(0, false)), false));
        assert_eq!(clean[0].to_string(), "exited with code 0");
        assert_eq!(clean[0].level(), EventLevel::Info);

        let mut again = container(RuntimeStatus::Running, 1);
        again.exit = Some(exit(2, false));
        let again = Sighting::of(&again, true);
        assert_eq!(
            transitions(&gone, &again),
            [Transition::Restarted {
                count: 1,
                pid: Some(101)
            }]
        );
        assert_eq!(
            transitions(&gone, &again)[0].to_string(),
            "running again (restart 1, pid 101)"
        );
        // Dead and restarted between two looks: both are told.
        let both = transitions(&alive, &again);
        assert_eq!(both.len(), 2, "{both:?}");
        assert_eq!(both[0].to_string(), "exited with code 2");

        let mut unsupervised = alive.clone();
        unsupervised.supervised = false;
        assert_eq!(
            transitions(&alive, &unsupervised),
            [Transition::SupervisorLost]
        );
        assert!(transitions(&unsupervised, &unsupervised).is_empty());
        // A replace is the apply's to report.
        assert!(transitions(&running(3, None), &running(0, None)).is_empty());
        // gitvisor's own stop is an info.
        let mut stopped = container(RuntimeStatus::Stopped, 0);
        stopped.stopped_by_gitvisor = true;
        stopped.exit = Some(exit(143, false));
        let seen = transitions(&alive, &Sighting::of(&stopped, false));
        assert_eq!(
            seen[0].to_string(),
            "stopped by gitvisor (declared Stopped)"
        );
        assert_eq!(seen[0].level(), EventLevel::Info);
    }

    fn assert_contains(text: &str, part: &str) {
        assert!(text.contains(part), "{text:?} does not contain {part:?}");
    }
}
