//! `restartPolicy` with backoff: whether a container declared `Running` whose process is
//! gone should be started again now, later, or not at all. Pure; `now` is passed in.
//!
//! - A container gitvisor itself stopped (it was declared `Stopped`) starts whatever the
//!   policy: the declaration changed, not the container.
//! - `Never` keeps an exited container stopped; `OnFailure` restarts it unless it exited
//!   with code 0 (a container killed as unhealthy, or whose exit nobody saw, failed);
//!   `Always` restarts it.
//! - Backoff: the first restart is immediate, then 1s, 2s, 4s, … up to 5 minutes after
//!   the exit, counted from the restarts since the container was created. Until then
//!   the plan shows the container as waiting, and the next run (the controller's resync)
//!   restarts it.

use std::time::{Duration, SystemTime};

use super::seam::RuntimeContainer;
use crate::drivers::container::RestartPolicy;

/// The longest wait between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start it again now.
    Restart { why: String },
    /// Start it again, but not before this much time has passed.
    Wait { remaining: Duration, why: String },
    /// Leave it stopped.
    Keep { why: String },
}

/// The wait before restart number `restarts + 1`.
pub fn backoff(restarts: u32) -> Duration {
    if restarts == 0 {
        return Duration::ZERO;
    }
    let exponent = (restarts - 1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

pub fn decide(policy: RestartPolicy, container: &RuntimeContainer, now: SystemTime) -> Decision {
    if container.stopped_by_gitvisor {
        return Decision::Restart {
            why: "declared Running; gitvisor had stopped it".into(),
        };
    }
    let exit = container.exit.as_ref();
    let how = match exit {
        Some(exit) if exit.unhealthy => "was stopped as unhealthy".to_owned(),
        Some(exit) => format!("exited with code {}", exit.code),
        None => "is not running (its exit was not recorded)".to_owned(),
    };
    let failed = exit.is_none_or(|exit| exit.code != 0 || exit.unhealthy);
    match policy {
        RestartPolicy::Never => {
            return Decision::Keep {
                why: format!("{how}; restartPolicy Never leaves it stopped"),
            };
        }
        RestartPolicy::OnFailure if !failed => {
            return Decision::Keep {
                why: format!("{how}; restartPolicy OnFailure leaves it stopped"),
            };
        }
        RestartPolicy::OnFailure | RestartPolicy::Always => {}
    }
    let wait = backoff(container.restarts);
    let why = format!(
        "{how}; restartPolicy {policy:?} restarts it (restart {})",
        container.restarts + 1
    );
    if let Some(exit) = exit {
        let due = exit.at + wait;
        if let Ok(remaining) = due.duration_since(now)
            && !remaining.is_zero()
        {
            return Decision::Wait { remaining, why };
        }
    }
    Decision::Restart { why }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::drivers::container::seam::{ExitRecord, RuntimeStatus};

    fn exited(code: i32, restarts: u32, at: SystemTime) -> RuntimeContainer {
        RuntimeContainer {
            id: "web".into(),
            status: RuntimeStatus::Stopped,
            pid: None,
            annotations: BTreeMap::new(),
            limits: None,
            exit: Some(ExitRecord {
                code,
                at,
                unhealthy: false,
            }),
            health: None,
            restarts,
            started: None,
            stopped_by_gitvisor: false,
            resolv_conf: None,
        }
    }

    #[test]
    fn the_policy_decides_by_exit_code() {
        let now = SystemTime::now();
        let ok = exited(0, 0, now);
        let failed = exited(3, 0, now);
        assert!(matches!(
            decide(RestartPolicy::Never, &failed, now),
            Decision::Keep { .. }
        ));
        assert!(matches!(
            decide(RestartPolicy::OnFailure, &ok, now),
            Decision::Keep { .. }
        ));
        assert!(matches!(
            decide(RestartPolicy::OnFailure, &failed, now),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            decide(RestartPolicy::Always, &ok, now),
            Decision::Restart { .. }
        ));
        let mut unhealthy = exited(0, 0, now);
        unhealthy.exit.as_mut().unwrap().unhealthy = true;
        assert!(matches!(
            decide(RestartPolicy::OnFailure, &unhealthy, now),
            Decision::Restart { .. }
        ));
        let mut stopped_by_us = exited(137, 0, now);
        stopped_by_us.stopped_by_gitvisor = true;
        assert!(matches!(
            decide(RestartPolicy::Never, &stopped_by_us, now),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn restarts_back_off_exponentially_up_to_a_cap() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(40), MAX_BACKOFF);
        let exit = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let container = exited(1, 3, exit);
        match decide(
            RestartPolicy::Always,
            &container,
            exit + Duration::from_secs(1),
        ) {
            Decision::Wait { remaining, .. } => assert_eq!(remaining, Duration::from_secs(3)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(
                RestartPolicy::Always,
                &container,
                exit + Duration::from_secs(4)
            ),
            Decision::Restart { .. }
        ));
    }
}
