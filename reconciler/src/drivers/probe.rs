//! Host probes: what each kind needs from this host, and whether it is there.
//!
//! Every kind's probe is in its driver's folder and reached through the kind's
//! registration (`Registration::probe`), so `gitvisor doctor` can say both "no driver in
//! this build" (a kind without a registration) and "the host lacks X". A probe only
//! reads: it lists, opens read-only, or asks a tool for its version; it never creates
//! anything.
//!
//! Probes run on the async runtime but never block it: tools run through
//! [`tool_version`] (`tokio::process`, a deadline, killed when dropped), and file system
//! checks through `spawn_blocking` ([`blocking`]).
//!
//! Order: [`probe`] runs the probes of the requested kinds concurrently and answers one
//! [`KindProbe`] per kind, in the order asked.

use std::time::Duration;

use serde::Serialize;

use crate::model::Kind;

/// How long a probed tool may take to print its version.
pub const TOOL_DEADLINE: Duration = Duration::from_secs(10);

/// Whether a facility is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and usable.
    Ok,
    /// Usable with a limitation (said in the detail), or an optional extra is absent.
    Warn,
    /// Absent or unusable: the kind cannot be applied on this host.
    Missing,
}

/// One thing a kind needs from the host (a kernel facility, a tool, a privilege).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facility {
    /// Short and stable: `netlink`, `lvm2`, `device-mapper`, `oci-runtime`, `kvm`, ….
    pub name: &'static str,
    pub status: Status,
    /// What was found, or why it is unusable.
    pub detail: String,
    /// What to do about a `warn` or `missing`.
    pub fix: Option<String>,
}

impl Facility {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Facility {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Facility {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn missing(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Facility {
            name,
            status: Status::Missing,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// One kind: whether this build can apply it, and what the host offers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindProbe {
    pub kind: Kind,
    /// This build has the kind's driver.
    pub driver: bool,
    pub facilities: Vec<Facility>,
}

impl KindProbe {
    /// The host has everything the kind needs (warnings aside).
    pub fn host_ready(&self) -> bool {
        self.facilities.iter().all(|f| f.status != Status::Missing)
    }

    /// This build can apply the kind on this host.
    pub fn ready(&self) -> bool {
        self.driver && self.host_ready()
    }
}

/// Probes `kinds` concurrently; one answer per kind, in the order given.
pub async fn probe(kinds: &[Kind]) -> Vec<KindProbe> {
    probe_with(kinds, facilities).await
}

/// What the host offers `kind`: its registration's probe (nothing for a kind this build
/// has no driver for: it cannot be applied whatever the host offers).
async fn facilities(kind: Kind) -> Vec<Facility> {
    match super::registration(kind) {
        Some(registration) => (registration.probe)().await,
        None => Vec::new(),
    }
}

/// [`probe`] over any `facilities` (the host's in [`probe`]; a test's without a host).
async fn probe_with<F, Fut>(kinds: &[Kind], facilities: F) -> Vec<KindProbe>
where
    F: Fn(Kind) -> Fut,
    Fut: std::future::Future<Output = Vec<Facility>>,
{
    futures::future::join_all(kinds.iter().map(|&kind| {
        let facilities = facilities(kind);
        async move {
            KindProbe {
                kind,
                driver: super::registration(kind).is_some(),
                facilities: facilities.await,
            }
        }
    }))
    .await
}

/// Why a tool could not tell its version.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{program} is not installed (not found in PATH)")]
    NotFound { program: String },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not answer within {}; it was killed", humantime::format_duration(*deadline))]
    TimedOut { program: String, deadline: Duration },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// The first non-empty line that `program args…` prints (stdout, else stderr), run off
/// the runtime's threads with a deadline ([`TOOL_DEADLINE`]); killed when it overruns.
pub async fn tool_version(program: &str, args: &[&str]) -> Result<String, ToolError> {
    tool_version_within(program, args, TOOL_DEADLINE).await
}

async fn tool_version_within(
    program: &str,
    args: &[&str],
    deadline: Duration,
) -> Result<String, ToolError> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(deadline, command.output()).await {
        Err(_) => {
            return Err(ToolError::TimedOut {
                program: program.to_owned(),
                deadline,
            });
        }
        Ok(Err(source)) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(ToolError::NotFound {
                program: program.to_owned(),
            });
        }
        Ok(Err(source)) => {
            return Err(ToolError::Spawn {
                program: program.to_owned(),
                source,
            });
        }
        Ok(Ok(output)) => output,
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(ToolError::Failed {
            program: program.to_owned(),
            status: output.status,
            stderr: first_line(&stderr).unwrap_or_default(),
        });
    }
    Ok(first_line(&stdout)
        .or_else(|| first_line(&stderr))
        .unwrap_or_else(|| format!("{program} (no version printed)")))
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
}

/// Runs a blocking check (a file system probe) on the blocking pool. A check that
/// panicked reports as `Missing` under `name`.
pub async fn blocking(
    name: &'static str,
    check: impl FnOnce() -> Facility + Send + 'static,
) -> Facility {
    match tokio::task::spawn_blocking(check).await {
        Ok(facility) => facility,
        Err(join) => Facility::missing(
            name,
            format!("the probe itself failed: {join}"),
            "report this as a gitvisor bug",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tool_that_is_not_installed_is_not_found() {
        let error = tool_version("gitvisor-no-such-tool", &["--version"])
            .await
            .unwrap_err();
        assert!(matches!(error, ToolError::NotFound { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_tool_answers_its_first_line_and_a_failure_its_stderr() {
        let line = tool_version("sh", &["-c", "echo; echo '  tool 1.2  '; echo more"])
            .await
            .unwrap();
        assert_eq!(line, "tool 1.2");
        let error = tool_version("sh", &["-c", "echo broken >&2; exit 3"])
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ToolError::Failed { stderr, .. } if stderr == "broken"),
            "{error}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_hanging_tool_is_given_up_at_the_deadline() {
        let error = tool_version_within("sleep", &["1000"], Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(error, ToolError::TimedOut { .. }), "{error}");
    }

    // The real host's probes run in the e2e tests (`e2e/tests/doctor.rs`), not here.

    /// Slow probes do not hold the others up, and answers keep the order asked.
    #[tokio::test(start_paused = true)]
    async fn kinds_are_probed_concurrently_and_answered_in_the_order_asked() {
        let asked = [Kind::VirtualMachine, Kind::Bridge, Kind::Volume];
        let started = tokio::time::Instant::now();
        let probes = probe_with(&asked, |kind| async move {
            // The first asked is the slowest.
            let delay = match kind {
                Kind::VirtualMachine => 300,
                Kind::Bridge => 200,
                _ => 100,
            };
            tokio::time::sleep(Duration::from_millis(delay)).await;
            vec![Facility::ok("fake", kind.as_str())]
        })
        .await;
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        let answered: Vec<(Kind, &str)> = probes
            .iter()
            .map(|p| (p.kind, p.facilities[0].detail.as_str()))
            .collect();
        assert_eq!(
            answered,
            [
                (Kind::VirtualMachine, "VirtualMachine"),
                (Kind::Bridge, "Bridge"),
                (Kind::Volume, "Volume")
            ]
        );
    }

    #[test]
    fn a_missing_facility_makes_the_kind_unready_and_a_warning_does_not() {
        let with = |facilities: Vec<Facility>, driver: bool| KindProbe {
            kind: Kind::Volume,
            driver,
            facilities,
        };
        let warned = with(
            vec![
                Facility::ok("lvm2", "2.03"),
                Facility::warn("thin", "no thin pools", "install thin-provisioning-tools"),
            ],
            true,
        );
        assert!(warned.host_ready() && warned.ready());
        let missing = with(
            vec![
                Facility::ok("lvm2", "2.03"),
                Facility::missing("device-mapper", "absent", "load dm_mod"),
            ],
            true,
        );
        assert!(!missing.host_ready() && !missing.ready());
        let no_driver = with(vec![Facility::ok("lvm2", "2.03")], false);
        assert!(no_driver.host_ready() && !no_driver.ready());
    }

    #[tokio::test]
    async fn a_blocking_check_that_panics_reports_its_facility_missing() {
        let fine = blocking("fine", || Facility::ok("fine", "present")).await;
        assert_eq!(fine, Facility::ok("fine", "present"));
        let broken = blocking("kvm", || panic!("probe exploded")).await;
        assert_eq!(broken.name, "kvm");
        assert_eq!(broken.status, Status::Missing);
        assert!(
            broken.detail.starts_with("the probe itself failed"),
            "{broken:?}"
        );
        assert!(broken.fix.is_some_and(|fix| fix.contains("bug")));
    }
}
