//! The Container driver: OCI containers run by an OCI runtime (`docs/containers.md`).
//!
//! # Why it looks like this
//!
//! Containers are made the way container engines make them, not by a home-made
//! namespace runtime: an image is imported into a content-addressed store ([`image`]),
//! its layers are stacked with overlayfs under a writable layer of the container's own,
//! an OCI runtime `config.json` is generated with `oci-spec` ([`bundle`]), and `runc`
//! runs the bundle ([`runc`]). The generated config uses only the portable parts of the
//! runtime spec, so another OCI runtime (crun, where the host's cgroups allow it) could
//! run the same bundle.
//!
//! Containers run detached, under gitvisor's own runtime root (`<run-dir>/runc`), each
//! watched by a small supervisor process of its own ([`shim`]) that keeps its logs and
//! records how it exits and whether its health check passes. Neither needs gitvisor to
//! keep running: a controller restart or upgrade leaves containers alone, and the next
//! plan finds them again with **one** `runc list` for the whole host.
//!
//! # Ownership
//!
//! The marker is gitvisor's runtime root plus the `gitvisor.dev/managed` annotation
//! naming the container, set in `config.json`, so it is on the container from the
//! `runc create` that makes it. The shared rules of [`crate::contract::ownership`] apply:
//! a container is changed or removed only when it carries the marker *and* the state
//! store records it. The declaration the container was made from rides along in a
//! second annotation ([`applied`]), so a plan shows every recreating field with its old
//! and new value from the same list.
//!
//! The host end of a container's veth is marked too (`ifalias`
//! `gitvisor:container/NAME`), so the Bridge driver never releases it; it goes away with
//! the container's network namespace.
//!
//! # Order of steps
//!
//! 1. **plan**: [`ContainerHost::list`] once; per declared container resolve the
//!    declaration against the revision (mount sources, the bridge), compare with the
//!    recorded declaration and the cgroup's limits, and decide ([`diff`], [`restart`]);
//!    add removals for pruned containers. Each change carries an [`ObservedContainer`]
//!    with the work to do.
//! 2. **apply** ([`apply`]): the work in order, as requests to the host, checking the
//!    step's context before each.
//!
//! Between runs, the driver's watch ([`Driver::watch`], [`controller_watch`] on
//! [`watch`]) follows the containers for the controller: health verdicts, exits,
//! restarts and lost supervisors become events ([`supervision`]), and a dead container
//! that its `restartPolicy` restarts gets a reconcile at once (or when its backoff
//! ends) instead of at the next resync.
//!
//! # Seam
//!
//! The host is reached only through [`ContainerHost`]: [`RuncHost`] for real,
//! [`FakeHost`] (recording, in memory) for tests.

mod applied;
mod apply;
pub mod bundle;
mod cgroup;
mod config;
mod controller_watch;
mod diff;
mod drift;
mod error;
pub mod etc_files;
pub(crate) mod exec;
pub mod fake;
mod health_probe;
pub mod host;
pub mod image;
mod kind;
pub mod logs;
mod maintenance;
pub mod network;
mod observed;
pub mod probe;
pub mod restart;
pub mod rootfs;
pub mod runc;
pub mod seam;
pub mod shim;
mod spec;
pub mod supervision;
#[cfg(test)]
pub(crate) mod testkit;
pub(crate) mod validate;
#[cfg(test)]
mod vlan_tests;
pub mod watch;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::contract::{
    Action, Change, ContractViolation, Driver, DriverError, FailureClass, PlanContext, StepContext,
    WatchSink, Watching,
};
use crate::model::{Kind, Resource};

pub(crate) use diff::describe as live_note;
use diff::restarts_a_dead_container;
pub use error::ContainerError;
pub use fake::FakeHost;
pub use host::RuncHost;
pub use kind::REGISTRATION;
pub(crate) use maintenance::{collect_images, collect_now};
pub use observed::{ObservedContainer, veth_alias, veth_name};
pub use seam::{ContainerHost, HostError, HostRequest, RuntimeContainer, RuntimeStatus};
pub use spec::{
    ContainerNetwork, ContainerSpec, HealthCheck, MAX_CONTAINER_CPUS, MAX_CONTAINER_MEMORY, Mount,
    Resources, RestartPolicy,
};

/// How long one container change may take: an image pull and unpack included.
pub const STEP_BUDGET: Duration = Duration::from_secs(15 * 60);

/// Plans and applies `kind: Container` resources through a [`ContainerHost`].
#[derive(Clone)]
pub struct ContainerDriver {
    host: Arc<dyn ContainerHost>,
    /// Where runc's containers live, for the controller's watch; `None` (a fake
    /// host): not watched.
    watched_dirs: Option<(PathBuf, PathBuf)>,
    /// `--state-dir`: NfsMounts without `path` are mounted under it.
    state_dir: PathBuf,
    /// How the last plan was handed the containers, for the watch's restart decisions.
    declared: controller_watch::Declared,
    /// Asks the watch for a look after an apply, once it runs.
    poke: Arc<OnceLock<watch::Poke>>,
}

impl std::fmt::Debug for ContainerDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerDriver").finish_non_exhaustive()
    }
}

impl ContainerDriver {
    pub fn new(host: Arc<dyn ContainerHost>) -> Self {
        ContainerDriver {
            host,
            watched_dirs: None,
            state_dir: PathBuf::from(crate::drivers::nfs_mount::DEFAULT_STATE_DIR),
            declared: controller_watch::Declared::default(),
            poke: Arc::new(OnceLock::new()),
        }
    }

    /// The registry's constructor: runc under `<run-dir>/runc`, the image store under
    /// `<state-dir>/containers`. Nothing is checked or created until a plan needs it, so
    /// a host without runc can still apply other kinds.
    pub(crate) fn connect_driver(
        settings: &crate::drivers::HostSettings,
    ) -> Result<Box<dyn Driver>, DriverError> {
        let host = RuncHost::new(&settings.run_dir, &settings.state_dir);
        let mut driver = ContainerDriver::new(Arc::new(host));
        driver.watched_dirs = Some((settings.run_dir.clone(), settings.state_dir.clone()));
        driver.state_dir = settings.state_dir.clone();
        Ok(Box::new(driver))
    }
}

#[async_trait]
impl Driver for ContainerDriver {
    fn kind(&self) -> Kind {
        Kind::Container
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        let listed = self
            .host
            .list()
            .await
            .map_err(|cause| ContainerError::Observe { cause })?;
        // The bridge VLAN dump only when some declared container's bridge filters VLANs:
        // a host without filtering bridges sees no extra netlink call.
        let port_vlans = if needs_port_vlans(desired, context) {
            self.host
                .port_vlans()
                .await
                .map_err(|cause| ContainerError::Observe { cause })?
        } else {
            Default::default()
        };
        // The host's resolver configuration, for the containers that do not ask a
        // bridge's dnsmasq: one small read, only when a container is declared.
        let host_resolver = if desired.is_empty() {
            String::new()
        } else {
            self.host
                .host_resolver()
                .await
                .map_err(|cause| ContainerError::Observe { cause })?
        };
        let host = observed::HostContainers::new(listed, port_vlans)
            .with_host_resolver(host_resolver)
            .with_state_dir(self.state_dir.clone());
        // The local images the declared containers name, asked of the host in one batch:
        // a create or replace from one that is not there is refused at plan.
        let local: BTreeSet<String> = desired
            .iter()
            .filter_map(|resource| match resource.spec.get::<ContainerSpec>() {
                Some(spec) if spec.image.starts_with('/') => Some(spec.image.clone()),
                _ => None,
            })
            .collect();
        let missing = if local.is_empty() {
            BTreeSet::new()
        } else {
            self.host
                .missing_images(local.into_iter().collect())
                .await
                .map_err(|cause| ContainerError::Observe { cause })?
        };
        self.declared.set(
            desired
                .iter()
                .filter_map(|resource| {
                    let spec = resource.spec.get::<ContainerSpec>()?;
                    Some((
                        resource.metadata.name.as_str().to_owned(),
                        (spec.state, spec.restart_policy),
                    ))
                })
                .collect(),
        );
        // The watch looks again after every plan: a restart whose backoff the plan found
        // not quite over (its reconcile came a moment early) is asked for again.
        if let Some(poke) = self.poke.get() {
            poke.poke();
        }
        let now = SystemTime::now();
        let mut changes = Vec::with_capacity(desired.len());
        let mut declared = BTreeSet::new();
        for resource in desired {
            let Some(spec) = resource.spec.get::<ContainerSpec>() else {
                return Err(ContractViolation {
                    id: resource.id(),
                    message: "the container driver was handed a resource of another kind".into(),
                }
                .into());
            };
            declared.insert(resource.metadata.name.as_str());
            let mut change = diff::declared(resource, spec, &host, context, now);
            if matches!(change.action, Action::Create | Action::Replace)
                && missing.contains(&spec.image)
            {
                change.action = Action::Unsupported;
                change.reasons.insert(
                    0,
                    format!(
                        "{}: {} does not exist on this host; put the image there (an OCI layout, an archive or a rootfs directory) or fix the path",
                        resource.origin.place("spec.image"),
                        spec.image
                    ),
                );
                change.fields.clear();
            }
            changes.push(change);
        }
        changes.extend(diff::pruned(&declared, &host, context));
        Ok(changes)
    }

    async fn apply(&self, change: &Change, step: &StepContext) -> Result<(), DriverError> {
        let applied = apply::apply(self.host.as_ref(), change, step).await;
        // The apply may have started, stopped or replaced a container: the watch looks.
        if let Some(poke) = self.poke.get() {
            poke.poke();
        }
        Ok(applied?)
    }

    fn step_budget(&self, _change: &Change) -> Duration {
        STEP_BUDGET
    }

    fn is_policy_at_work(&self, change: &Change) -> bool {
        restarts_a_dead_container(change)
    }

    /// inotify on the supervisors' records and pidfds on the processes
    /// ([`controller_watch`]).
    fn watch(&self, sink: WatchSink) -> Result<Watching, DriverError> {
        let Some((run_dir, state_dir)) = &self.watched_dirs else {
            return Ok(Watching::NotWatched {
                why: "this container host has no supervisors to watch".into(),
            });
        };
        let (handle, poke) =
            controller_watch::start(run_dir, state_dir, self.declared.clone(), sink)
                .map_err(|error| DriverError::new(FailureClass::NeedsUser, error))?;
        let _ = self.poke.set(poke);
        Ok(Watching::Announced {
            what: "inotify on the supervisors' records, pidfds on the containers' and supervisors' processes".into(),
            handle,
        })
    }
}

/// Whether a declared container joins a bridge the revision declares with
/// `vlanFiltering: true`.
fn needs_port_vlans(desired: &[Arc<Resource>], context: &PlanContext) -> bool {
    desired
        .iter()
        .any(|resource| match resource.spec.get::<ContainerSpec>() {
            Some(spec) => spec
                .network
                .as_ref()
                .is_some_and(|network| observed::filters_vlans(&network.bridge, context)),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testkit::{declared, owning};
    use super::*;
    use crate::contract::{Action, CancelToken, Effect, Interrupted};
    use crate::drivers::container::seam::{Limits, MANAGED_ANNOTATION};
    use crate::model::Spec;

    const WEB: &str = "image: /images/app\ncommand: [sleep, '1000']";

    fn driver(fake: &Arc<FakeHost>) -> ContainerDriver {
        ContainerDriver::new(fake.clone())
    }

    async fn plan_one(
        driver: &ContainerDriver,
        resource: &Arc<Resource>,
        owned: &[&str],
    ) -> Change {
        let revision = [resource.clone()];
        let mut changes = driver
            .plan(&revision, &owning(owned, &revision))
            .await
            .unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        changes.remove(0)
    }

    async fn apply(driver: &ContainerDriver, change: &Change) {
        driver
            .apply(change, &StepContext::detached(change.id.clone()))
            .await
            .unwrap();
    }

    fn kinds(requests: &[HostRequest]) -> Vec<&'static str> {
        requests
            .iter()
            .map(|r| match r {
                HostRequest::PrepareImage { .. } => "prepare",
                HostRequest::Create {
                    keep_writable_layer,
                    start,
                    ..
                } => match (keep_writable_layer, start) {
                    (false, false) => "create",
                    (false, true) => "run",
                    (true, false) => "create-again",
                    (true, true) => "run-again",
                },
                HostRequest::Connect { .. } => "connect",
                HostRequest::Start { .. } => "start",
                HostRequest::Stop { .. } => "stop",
                HostRequest::Delete { .. } => "delete",
                HostRequest::Remove { .. } => "remove",
                HostRequest::Update { .. } => "update",
                HostRequest::SetVlans { .. } => "set-vlans",
                HostRequest::WriteResolvConf { .. } => "write-resolv-conf",
            })
            .collect()
    }

    #[tokio::test]
    async fn plan_lists_the_runtime_once_however_many_containers() {
        let fake = Arc::new(FakeHost::new(&[], &[]));
        let desired: Vec<_> = (0..100).map(|i| declared(&format!("c{i}"), WEB)).collect();
        let changes = driver(&fake)
            .plan(&desired, &owning(&[], &desired))
            .await
            .unwrap();
        assert_eq!(changes.len(), 100);
        assert!(changes.iter().all(|c| c.action == Action::Create));
        assert_eq!(fake.lists(), 1);
        assert!(fake.requests().is_empty(), "plan changes nothing");
    }

    #[tokio::test]
    async fn a_create_prepares_creates_connects_and_starts_then_plans_noop() {
        let fake = Arc::new(FakeHost::new(&["br0"], &[]));
        let driver = driver(&fake);
        let web = declared(
            "web",
            "image: /images/app\nnetwork: {bridge: br0, address: 10.0.0.2/24, gateway: 10.0.0.1}\nresources: {memory: 64MiB}",
        );
        let change = plan_one(&driver, &web, &[]).await;
        assert_eq!(change.action, Action::Create);
        apply(&driver, &change).await;
        assert_eq!(
            kinds(&fake.requests()),
            ["prepare", "create", "connect", "start"]
        );
        let container = fake.container("web").unwrap();
        assert_eq!(container.status, RuntimeStatus::Running);
        assert_eq!(container.annotations[MANAGED_ANNOTATION], "web");
        assert_eq!(fake.veth(&veth_name("web")).as_deref(), Some("br0"));
        let again = plan_one(&driver, &web, &["web"]).await;
        assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);
    }

    #[tokio::test]
    async fn a_create_plan_shows_the_address_the_published_ports_and_the_limits() {
        let fake = Arc::new(FakeHost::new(&["br0"], &[]));
        let driver = driver(&fake);
        let web = declared(
            "web",
            "image: /images/app\nenv: {TZ: UTC}\nnetwork:\n  bridge: br0\n  address: 10.0.0.2/24\n  gateway: 10.0.0.1\n  publish: [{hostPort: 8080, port: 80}, {hostPort: 53, protocol: udp, hostAddress: 192.0.2.1}]\nresources: {cpus: 0.5, memory: 256M, pids: 100}",
        );
        let change = plan_one(&driver, &web, &[]).await;
        assert_eq!(change.action, Action::Create);
        let shown: Vec<(&str, String)> = change
            .fields
            .iter()
            .map(|f| (f.path.as_str(), f.new.to_string()))
            .collect();
        for expected in [
            ("env", r#"{"TZ":"UTC"}"#),
            ("network.bridge", r#""br0""#),
            ("network.address", r#""10.0.0.2/24""#),
            ("network.gateway", r#""10.0.0.1""#),
            (
                "network.publish",
                r#"["tcp *:8080 -> 80","udp 192.0.2.1:53 -> 53"]"#,
            ),
            ("resources.cpus", "0.5"),
            ("resources.memory", r#""256MiB""#),
            ("resources.pids", "100"),
        ] {
            assert!(
                shown.contains(&(expected.0, expected.1.to_owned())),
                "{expected:?} in {shown:#?}"
            );
        }
    }

    /// The bridge `br0` (10.0.0.1/24), with `dhcp:` (gitvisor's dnsmasq) when `dns`.
    fn bridge(dns: bool) -> Arc<Resource> {
        let dhcp = if dns {
            "\ndhcp: {range: 10.0.0.100-10.0.0.199}"
        } else {
            ""
        };
        Arc::new(Resource::new(
            crate::model::Metadata::named(crate::model::Name::parse("br0").unwrap()),
            Spec::new::<crate::drivers::bridge::BridgeSpec>(
                serde_yaml::from_str(&format!("addresses: [10.0.0.1/24]{dhcp}")).unwrap(),
            ),
        ))
    }

    async fn plan_with(
        driver: &ContainerDriver,
        web: &Arc<Resource>,
        bridge: &Arc<Resource>,
    ) -> Change {
        let revision = [bridge.clone(), web.clone()];
        let changes = driver
            .plan(std::slice::from_ref(web), &owning(&["web"], &revision))
            .await
            .unwrap();
        changes.into_iter().next().unwrap()
    }

    fn resolv_conf_writes(requests: &[HostRequest]) -> Vec<String> {
        requests
            .iter()
            .filter_map(|r| match r {
                HostRequest::WriteResolvConf { content, .. } => Some(content.clone()),
                _ => None,
            })
            .collect()
    }

    /// The container's /etc/resolv.conf follows its bridge gaining gitvisor's dnsmasq,
    /// and the host's resolver changing, in place (the container keeps running).
    #[tokio::test]
    async fn resolv_conf_follows_the_bridges_dns_and_the_hosts_resolver_in_place() {
        let fake = Arc::new(FakeHost::new(&["br0"], &[]));
        fake.set_host_resolver("nameserver 127.0.0.53\nnameserver 192.0.2.53\n");
        let driver = driver(&fake);
        let web = declared(
            "web",
            "image: /images/app\nnetwork: {bridge: br0, address: 10.0.0.2/24, gateway: 10.0.0.1}",
        );
        let create = plan_with(&driver, &web, &bridge(false)).await;
        assert_eq!(create.action, Action::Create);
        apply(&driver, &create).await;
        let Some(HostRequest::Create { config, .. }) = fake
            .requests()
            .into_iter()
            .find(|r| matches!(r, HostRequest::Create { .. }))
        else {
            panic!("no create")
        };
        assert!(config.etc_files.hosts.contains("10.0.0.2\tweb\n"));
        let written = &config.etc_files.resolv_conf;
        assert!(written.contains("\nnameserver 192.0.2.53\n"), "{written}");
        assert!(!written.contains("\nnameserver 127.0.0.53"), "{written}");
        let pid = fake.container("web").unwrap().pid;
        assert_eq!(
            plan_with(&driver, &web, &bridge(false)).await.action,
            Action::NoOp
        );

        // The bridge gets `dhcp:`: its dnsmasq answers on 10.0.0.1.
        fake.clear_requests();
        let dns = plan_with(&driver, &web, &bridge(true)).await;
        assert_eq!(dns.action, Action::Update, "{:?}", dns.reasons);
        assert_eq!(dns.fields.len(), 1, "{:?}", dns.fields);
        assert_eq!(dns.fields[0].path, "/etc/resolv.conf");
        assert_eq!(dns.fields[0].effect, Effect::Hot);
        assert_eq!(dns.fields[0].new, "nameserver 10.0.0.1");
        apply(&driver, &dns).await;
        assert_eq!(kinds(&fake.requests()), ["write-resolv-conf"]);
        assert_eq!(fake.container("web").unwrap().pid, pid, "kept running");
        assert_eq!(
            plan_with(&driver, &web, &bridge(true)).await.action,
            Action::NoOp
        );

        // Back to a bridge without DNS, whose host's resolver changed meanwhile.
        fake.set_host_resolver("nameserver 198.51.100.53\n");
        fake.clear_requests();
        let host = plan_with(&driver, &web, &bridge(false)).await;
        assert_eq!(host.action, Action::Update);
        apply(&driver, &host).await;
        let writes = resolv_conf_writes(&fake.requests());
        assert_eq!(writes.len(), 1);
        assert!(
            writes[0].contains("\nnameserver 198.51.100.53\n"),
            "{}",
            writes[0]
        );
        assert_eq!(
            plan_with(&driver, &web, &bridge(false)).await.action,
            Action::NoOp
        );
    }

    #[tokio::test]
    async fn changing_the_image_or_env_replaces_and_limits_update_in_place() {
        let fake = Arc::new(FakeHost::new(&[], &[]));
        let driver = driver(&fake);
        let first = declared("web", WEB);
        apply(&driver, &plan_one(&driver, &first, &[]).await).await;
        fake.clear_requests();

        let changed = declared(
            "web",
            "image: /images/app2\ncommand: [sleep, '1000']\nenv: {A: b}",
        );
        let change = plan_one(&driver, &changed, &["web"]).await;
        assert_eq!(change.action, Action::Replace);
        let paths: Vec<_> = change.fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["image", "env"]);
        apply(&driver, &change).await;
        // Stopped gracefully first; no veth: created and started by one `runc run`.
        assert_eq!(
            kinds(&fake.requests()),
            ["stop", "remove", "prepare", "run"]
        );
        // A replace keeps the logs for the container that follows.
        assert!(matches!(
            &fake.requests()[1],
            HostRequest::Remove { logs: false, .. }
        ));
        fake.clear_requests();

        let limited = declared(
            "web",
            "image: /images/app2\ncommand: [sleep, '1000']\nenv: {A: b}\nresources: {memory: 32MiB, pids: 20}",
        );
        let change = plan_one(&driver, &limited, &["web"]).await;
        assert_eq!(change.action, Action::Update);
        apply(&driver, &change).await;
        assert_eq!(
            fake.requests(),
            [HostRequest::Update {
                id: "web".into(),
                limits: Limits {
                    memory: Some(32 << 20),
                    cpus: None,
                    pids: Some(20)
                }
            }]
        );
        assert_eq!(
            plan_one(&driver, &limited, &["web"]).await.action,
            Action::NoOp
        );
    }

    #[tokio::test]
    async fn stopped_stops_and_running_again_recreates_with_the_writable_layer() {
        let fake = Arc::new(FakeHost::new(&[], &[]));
        let driver = driver(&fake);
        apply(
            &driver,
            &plan_one(&driver, &declared("web", WEB), &[]).await,
        )
        .await;
        fake.clear_requests();
        let stopped = declared(
            "web",
            &format!("{WEB}\nstate: Stopped\nrestartPolicy: Never"),
        );
        let change = plan_one(&driver, &stopped, &["web"]).await;
        assert_eq!(change.action, Action::Update);
        apply(&driver, &change).await;
        assert_eq!(kinds(&fake.requests()), ["stop"]);
        assert_eq!(
            plan_one(&driver, &stopped, &["web"]).await.action,
            Action::NoOp
        );
        fake.clear_requests();

        // Declared Running again: started whatever the policy (gitvisor stopped it).
        let running = declared("web", &format!("{WEB}\nrestartPolicy: Never"));
        let change = plan_one(&driver, &running, &["web"]).await;
        assert_eq!(change.action, Action::Update);
        apply(&driver, &change).await;
        assert_eq!(kinds(&fake.requests()), ["delete", "prepare", "run-again"]);
        assert_eq!(fake.container("web").unwrap().restarts, 1);
    }

    #[tokio::test]
    async fn an_exited_container_restarts_by_policy_with_backoff() {
        let fake = Arc::new(FakeHost::new(&[], &[]));
        let driver = driver(&fake);
        let always = declared("web", WEB);
        let create = plan_one(&driver, &always, &[]).await;
        assert!(!restarts_a_dead_container(&create));
        apply(&driver, &create).await;
        fake.exit("web", 1, SystemTime::now() - Duration::from_secs(60));
        let change = plan_one(&driver, &always, &["web"]).await;
        assert_eq!(change.action, Action::Update);
        assert!(
            change.reasons[0].contains("exited with code 1"),
            "{:?}",
            change.reasons
        );
        // The controller tells this from drift (`Driver::is_policy_at_work`); a pause by
        // hand is drift.
        assert!(restarts_a_dead_container(&change));
        assert!(driver.is_policy_at_work(&change));
        let mut paused = fake.container("web").unwrap();
        paused.status = RuntimeStatus::Paused;
        fake.insert(paused);
        let unpause = plan_one(&driver, &always, &["web"]).await;
        assert_eq!(unpause.action, Action::Update);
        assert!(!restarts_a_dead_container(&unpause));
        assert!(!driver.is_policy_at_work(&unpause));
        fake.exit("web", 1, SystemTime::now() - Duration::from_secs(60));
        apply(&driver, &change).await;
        assert_eq!(
            fake.container("web").unwrap().status,
            RuntimeStatus::Running
        );

        // The second exit is right now: the restart waits for its backoff.
        fake.exit("web", 1, SystemTime::now());
        let change = plan_one(&driver, &always, &["web"]).await;
        assert_eq!(change.action, Action::NoOp);
        assert!(
            change.reasons[0].contains("(backoff)"),
            "{:?}",
            change.reasons
        );

        let never = declared("web", &format!("{WEB}\nrestartPolicy: Never"));
        let change = plan_one(&driver, &never, &["web"]).await;
        assert_eq!(change.action, Action::NoOp);
        assert!(
            change.reasons[0].contains("restartPolicy Never"),
            "{:?}",
            change.reasons
        );
    }

    #[tokio::test]
    async fn only_containers_with_marker_and_record_are_changed_or_pruned() {
        let fake = Arc::new(FakeHost::new(&[], &[]));
        let driver = driver(&fake);
        let web = declared("web", &format!("{WEB}\nstopTimeout: 3s"));
        apply(&driver, &plan_one(&driver, &web, &[]).await).await;
        // Someone else's container under the same root, without the marker.
        let mut stranger = fake.container("web").unwrap();
        stranger.id = "stranger".into();
        stranger.annotations.clear();
        fake.insert(stranger);

        // Not recorded: a conflict, never touched.
        let change = plan_one(&driver, &web, &[]).await;
        assert_eq!(change.action, Action::Conflict);
        // Declared under the stranger's name: a conflict too.
        let named = declared("stranger", WEB);
        assert_eq!(
            plan_one(&driver, &named, &["stranger"]).await.action,
            Action::Conflict
        );
        // Nothing declared: only the recorded, marked one is pruned.
        let changes = driver
            .plan(&[], &owning(&["web", "stranger"], &[]))
            .await
            .unwrap();
        let actions: Vec<_> = changes
            .iter()
            .map(|c| (c.id.to_string(), c.action))
            .collect();
        assert_eq!(actions, [("Container/web".to_owned(), Action::Delete)]);
        fake.clear_requests();
        apply(&driver, &changes[0]).await;
        // Stopped with the timeout it was declared with, then removed.
        assert_eq!(kinds(&fake.requests()), ["stop", "remove"]);
        assert!(matches!(
            &fake.requests()[0],
            HostRequest::Stop { grace, .. } if *grace == Duration::from_secs(3)
        ));
        // A prune removes its logs too.
        assert!(matches!(
            &fake.requests()[1],
            HostRequest::Remove { logs: true, .. }
        ));
        assert!(fake.container("web").is_none());
        assert!(fake.container("stranger").is_some());
    }

    /// A create stopped at each request in turn (a crash or a failure there) is
    /// repaired by the next plan and apply, ending with one running container.
    #[tokio::test]
    async fn a_create_interrupted_at_any_request_is_repaired_by_the_next_run() {
        for failing in ["prepare", "create", "connect", "start"] {
            let fake = Arc::new(FakeHost::new(&["br0"], &[]));
            let driver = driver(&fake);
            let web = declared("web", "image: /i\nnetwork: {bridge: br0}");
            fake.fail_when(move |request| kinds(std::slice::from_ref(request))[0] == failing);
            let change = plan_one(&driver, &web, &[]).await;
            let result = driver
                .apply(&change, &StepContext::detached(change.id.clone()))
                .await;
            assert!(result.is_err(), "{failing} should have failed");
            fake.fail_when(|_| false);
            let repair = plan_one(&driver, &web, &["web"]).await;
            assert!(
                repair.action.is_change(),
                "after a failed {failing}: {:?}",
                repair.action
            );
            apply(&driver, &repair).await;
            let container = fake.container("web").unwrap();
            assert_eq!(container.status, RuntimeStatus::Running, "after {failing}");
            assert_eq!(
                plan_one(&driver, &web, &["web"]).await.action,
                Action::NoOp,
                "after {failing}"
            );
        }
    }

    #[tokio::test]
    async fn a_failed_create_then_undeclared_is_pruned_with_its_logs_and_a_declared_one_created() {
        let fake = Arc::new(FakeHost::new(&[], &[]));
        let driver = driver(&fake);
        let web = declared("web", WEB);
        fake.fail_when(|request| matches!(request, HostRequest::Create { .. }));
        let change = plan_one(&driver, &web, &[]).await;
        let step = StepContext::detached(change.id.clone());
        assert!(driver.apply(&change, &step).await.is_err());
        fake.fail_when(|_| false);
        // Still declared: created afresh, as if absent.
        let again = plan_one(&driver, &web, &["web"]).await;
        assert_eq!(again.action, Action::Create, "{:?}", again.reasons);

        fake.clear_requests();
        let changes = driver.plan(&[], &owning(&["web"], &[])).await.unwrap();
        assert_eq!(changes.len(), 1, "the failed create is seen: {changes:?}");
        assert_eq!(changes[0].action, Action::Delete);
        assert!(
            changes[0]
                .reasons
                .iter()
                .any(|r| r.contains("create had failed")),
            "{:?}",
            changes[0].reasons
        );
        apply(&driver, &changes[0]).await;
        assert_eq!(
            fake.requests(),
            [HostRequest::Remove {
                id: "web".into(),
                veth: Some(veth_name("web")),
                logs: true,
            }]
        );
        assert!(fake.container("web").is_none());
        // Without the store's record it is not gitvisor's to remove.
        fake.insert(RuntimeContainer::not_created("other"));
        let changes = driver.plan(&[], &owning(&[], &[])).await.unwrap();
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[tokio::test]
    async fn a_cancel_stops_before_the_next_request() {
        let fake = Arc::new(FakeHost::new(&["br0"], &[]));
        let web = || declared("web", &format!("{WEB}\nnetwork: {{bridge: br0}}"));
        let driver = driver(&fake);
        let cancel = CancelToken::new();
        {
            let cancel = cancel.clone();
            fake.fail_when(move |request| {
                if matches!(request, HostRequest::Create { .. }) {
                    cancel.cancel();
                }
                false
            });
        }
        let change = plan_one(&driver, &web(), &[]).await;
        let step = StepContext::new(change.id.clone(), cancel, STEP_BUDGET, None);
        let error = driver.apply(&change, &step).await.unwrap_err();
        assert_eq!(error.interruption(), Some(&Interrupted::Cancelled));
        assert!(
            error
                .chain()
                .starts_with("container web: stopped before connect to bridge br0"),
            "{}",
            error.chain()
        );
        assert_eq!(kinds(&fake.requests()), ["prepare", "create"]);
        // Created but not started: the next run starts it.
        let again = plan_one(&driver, &web(), &["web"]).await;
        assert_eq!(again.action, Action::Update);
    }

    #[tokio::test]
    async fn a_missing_image_is_refused_at_plan_with_file_line_and_field() {
        let yaml = "apiVersion: gitvisor.dev/v1alpha1\nkind: Container\nmetadata:\n  name: web\nspec:\n  \
             command: [sleep, '1000']\n  image: /images/none\n";
        let mut web = (*declared("web", "command: [sleep, '1000']\nimage: /images/none")).clone();
        web.origin = crate::manifest::test_origin(std::path::Path::new("/srv/web.yaml"), yaml);
        let web = Arc::new(web);
        let fake = Arc::new(FakeHost::new(&[], &["/images/none"]));
        let driver = driver(&fake);
        let change = plan_one(&driver, &web, &[]).await;
        assert_eq!(change.action, Action::Unsupported, "{:?}", change.reasons);
        let expected = "/srv/web.yaml:7:10: spec.image: /images/none does not exist on this host";
        assert!(
            change.reasons[0].starts_with(expected),
            "{:?}",
            change.reasons
        );
        // A registry reference is not the host's to check.
        let pulled = plan_one(
            &driver,
            &declared("web", "image: docker.io/library/busybox"),
            &[],
        )
        .await;
        assert_eq!(pulled.action, Action::Create);
    }

    #[tokio::test]
    async fn an_image_gone_between_plan_and_apply_fails_the_step_as_needing_the_user() {
        let planned_with = Arc::new(FakeHost::new(&[], &[]));
        let change = plan_one(
            &driver(&planned_with),
            &declared("web", "image: /images/none"),
            &[],
        )
        .await;
        assert_eq!(change.action, Action::Create);
        let fake = Arc::new(FakeHost::new(&[], &["/images/none"]));
        let driver = driver(&fake);
        let error = driver
            .apply(&change, &StepContext::detached(change.id.clone()))
            .await
            .unwrap_err();
        assert_eq!(error.class(), crate::contract::FailureClass::NeedsUser);
        assert!(
            error
                .chain()
                .starts_with("container web: prepare image /images/none: ")
        );
    }
}
