//! The Bridge driver: Linux bridges over netlink (`docs/network.md`).
//!
//! # Why it looks like this
//!
//! Bridges carry guests' and containers' links, so they are changed in place and never
//! deleted and re-created to change an address or the MTU. Everything goes through
//! netlink (`rtnetlink`), never the `ip` tool: a plan is one link dump, one address
//! dump and one bridge VLAN dump for the whole host, and an apply is a handful of small requests on one shared
//! socket, so hundreds of bridges converge in a fraction of what a shell loop costs.
//!
//! # Ownership
//!
//! The marker lives in the bridge's `ifalias`: exactly [`OWNERSHIP_MARKER`] is gitvisor's,
//! any other alias is foreign, none is absent (`observed::marker`). The rules are the
//! shared ones of [`crate::contract::ownership`]: a bridge is gitvisor's when it carries
//! the marker *and* the state store records it (`PlanContext::owned`: created or being
//! created); only then is it changed or deleted. Anything else under a declared name is a
//! `Conflict` unless the manifest says `gitvisor.dev/adopt: "true"`; anything else
//! undeclared is left alone. So neither a stale or copied store nor a lost one ever
//! deletes or takes over a bridge.
//!
//! The kernel ignores `IFLA_IFALIAS` when it creates a link, so the marker cannot ride on
//! the create. A bridge is therefore created under a reserved temporary name
//! ([`TEMPORARY_PREFIX`], see `temporary.rs`), marked, and only then renamed to its
//! declared name: no unmarked bridge of gitvisor's ever carries a declared name. A crash
//! part-way leaves a temporary-named bridge that the next plan removes, when the store
//! records the bridge it was made for. The full decision table is in `diff.rs`.
//!
//! # Order of steps
//!
//! 1. **plan**: [`LinkSeam::dump`] once, index the links (`observed.rs`), then per
//!    declared bridge compute the drift (`drift.rs`) and decide (`diff.rs`); add deletes
//!    for pruned bridges. Each change carries an [`ObservedBridge`] snapshot.
//! 2. **apply**: turn the change into requests from that snapshot, without dumping again
//!    (`apply.rs`): create (temporary name) → marker → rename → MTU → addresses → ports →
//!    ports' VLANs → the bridge's own VLANs → up → VLAN sub-interfaces (each created
//!    under a temporary name, marked, renamed, as the bridge is); updates send only the requests for the fields that differ. Every request is
//!    idempotent. The step's context is checked before each request except inside
//!    create → marker → rename, which run together so a cancel never strands a
//!    temporary-named bridge.
//!
//! The network fields (`nat`, `uplink`, `dhcp`, `publish`) are not the link's: the
//! network module (`drivers/network/`) wraps this driver and adds them to the same
//! change, so this driver stays about links.
//!
//! # Seam
//!
//! The host is reached only through [`LinkSeam`]: [`NetlinkLinks`] for real,
//! [`FakeLinks`] (recording, in memory) for tests. Construct the real driver with
//! [`BridgeDriver::connect`] inside a Tokio runtime, a fake one with
//! `BridgeDriver::new(Arc::new(FakeLinks::new(links)))`. [`probe::probe`] tells
//! `gitvisor doctor` whether netlink works here at all.

mod apply;
mod diff;
mod drift;
mod error;
pub mod fake;
pub mod netlink;
mod observed;
pub mod probe;
pub mod seam;
mod spec;
mod temporary;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod vlan_tests;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::contract::cache::Invalidate;
use crate::contract::{
    Change, ContractViolation, Driver, DriverError, ObservationCache, PlanContext, StepContext,
};
use crate::model::{Kind, Resource};

pub use error::BridgeError;
pub use fake::FakeLinks;
pub use netlink::NetlinkLinks;
pub use observed::{DeclaredPort, ObservedBridge, PortLink};
pub use seam::{BridgeOptions, LinkKind, LinkRequest, LinkSeam, LinkState, NetlinkError};
pub use spec::BridgeSpec;
pub use temporary::{TEMPORARY_PREFIX, temporary_name};

/// The `ifalias` gitvisor sets on every bridge it creates.
pub const OWNERSHIP_MARKER: &str = "gitvisor:managed";

/// What every `ifalias` gitvisor sets starts with. A bridge port whose alias starts with
/// it belongs to a workload another driver enslaved (a VM's tap, a container's veth), so
/// the bridge driver never releases it; those drivers mark the host end of their links
/// with [`OWNERSHIP_MARKER`] or another `gitvisor:` alias.
pub const GITVISOR_ALIAS_PREFIX: &str = "gitvisor:";

/// Plans and applies `kind: Bridge` resources through a [`LinkSeam`].
#[derive(Clone)]
pub struct BridgeDriver {
    seam: Arc<dyn LinkSeam>,
    /// The last link dump, reused while the watch (`drivers/network/watch.rs`) heard of
    /// no change and no apply ran since ([`ObservationCache`]).
    cache: Arc<ObservationCache<observed::HostLinks>>,
}

impl std::fmt::Debug for BridgeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeDriver").finish_non_exhaustive()
    }
}

impl BridgeDriver {
    /// A driver over any seam (a [`FakeLinks`] in tests).
    pub fn new(seam: Arc<dyn LinkSeam>) -> Self {
        BridgeDriver {
            seam,
            cache: Arc::new(ObservationCache::new()),
        }
    }

    /// The cache of this driver's link observation, for its watch to invalidate and to
    /// switch on.
    pub fn observation_cache(&self) -> Arc<dyn Invalidate> {
        self.cache.clone()
    }

    /// A driver over the kernel, in the calling thread's network namespace. Call it from
    /// within a Tokio runtime, which drives the netlink socket (an error otherwise).
    pub fn connect() -> Result<Self, BridgeError> {
        let links = NetlinkLinks::connect().map_err(|cause| BridgeError::Connect { cause })?;
        Ok(BridgeDriver::new(Arc::new(links)))
    }
}

#[async_trait]
impl Driver for BridgeDriver {
    fn kind(&self) -> Kind {
        Kind::Bridge
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        let host = self
            .cache
            .get_or_observe(|| async { Ok(observed::HostLinks::new(self.seam.dump().await?)) })
            .await
            .map_err(|cause| BridgeError::Observe { cause })?;
        let host = host.as_ref();
        let mut changes = Vec::with_capacity(desired.len());
        let mut declared = BTreeSet::new();
        for resource in desired {
            let Some(spec) = resource.spec.get::<BridgeSpec>() else {
                return Err(ContractViolation {
                    id: resource.id(),
                    message: "the bridge driver was handed a resource of another kind".into(),
                }
                .into());
            };
            declared.insert(resource.metadata.name.as_str());
            if !context.in_focus(&resource.id()) {
                // A targeted reconcile's bridge that did not change: not diffed again.
                changes.push(Change::carried(resource));
                continue;
            }
            changes.push(diff::declared(resource, spec, host, context));
        }
        changes.extend(diff::pruned(&declared, host, context));
        Ok(changes)
    }

    async fn apply(&self, change: &Change, step: &StepContext) -> Result<(), DriverError> {
        // Whatever the apply did (even part of it), the host is not what was observed.
        self.cache.invalidate();
        let applied = apply::apply(self.seam.as_ref(), change, step).await;
        self.cache.invalidate();
        Ok(applied?)
    }
}

#[cfg(test)]
mod tests {
    use super::fake::plain_link;
    use super::testkit::{declared, owning};
    use super::*;
    use crate::contract::{Action, CancelToken};

    #[tokio::test]
    async fn plan_reads_the_host_in_one_dump_however_many_bridges() {
        let fake = Arc::new(FakeLinks::new(vec![plain_link(1, "lo", None)]));
        let driver = BridgeDriver::new(fake.clone());
        let desired: Vec<_> = (0..200)
            .map(|i| declared(&format!("br{i}"), "addresses: [10.0.0.1/24]"))
            .collect();
        let changes = driver.plan(&desired, &owning(&[])).await.unwrap();
        assert_eq!(changes.len(), 200);
        assert_eq!(fake.dumps(), 1);
        assert!(fake.requests().is_empty(), "plan changes nothing");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_applies_converge_and_a_second_plan_is_all_noop() {
        let fake = Arc::new(FakeLinks::new(vec![
            plain_link(1, "lo", None),
            plain_link(2, "eth1", None),
        ]));
        let driver = BridgeDriver::new(fake.clone());
        let mut desired: Vec<_> = (0..50)
            .map(|i| {
                declared(
                    &format!("br{i}"),
                    &format!("mtu: 9000\naddresses: [10.{i}.0.1/24, fd00:{i}::1/64]"),
                )
            })
            .collect();
        desired.push(declared("uplink", "ports: [eth1]\nstp: true"));
        let changes = driver
            .plan(&desired, &PlanContext::default())
            .await
            .unwrap();
        assert!(changes.iter().all(|c| c.action == Action::Create));

        let tasks: Vec<_> = changes
            .into_iter()
            .map(|change| {
                let driver = driver.clone();
                tokio::spawn(async move {
                    driver
                        .apply(&change, &StepContext::detached(change.id.clone()))
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }

        let owned: Vec<String> = desired
            .iter()
            .map(|r| r.metadata.name.to_string())
            .collect();
        let owned: Vec<&str> = owned.iter().map(String::as_str).collect();
        let again = driver.plan(&desired, &owning(&owned)).await.unwrap();
        assert!(
            again.iter().all(|c| c.action == Action::NoOp),
            "{:?}",
            again
                .iter()
                .map(|c| (&c.id, c.action, &c.fields))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            fake.link("eth1").unwrap().master,
            fake.link("uplink").map(|l| l.index)
        );
    }

    #[tokio::test]
    async fn a_removed_declaration_prunes_and_a_kept_one_stays() {
        let fake = Arc::new(FakeLinks::new(Vec::new()));
        let driver = BridgeDriver::new(fake.clone());
        let both = [declared("br-a", ""), declared("br-b", "")];
        for change in driver.plan(&both, &PlanContext::default()).await.unwrap() {
            driver.apply(&change, &detached(&change)).await.unwrap();
        }
        let changes = driver
            .plan(&both[..1], &owning(&["br-a", "br-b"]))
            .await
            .unwrap();
        let actions: Vec<_> = changes
            .iter()
            .map(|c| (c.id.to_string(), c.action))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("Bridge/br-a".to_owned(), Action::NoOp),
                ("Bridge/br-b".to_owned(), Action::Delete),
            ]
        );
        for change in &changes {
            driver.apply(change, &detached(change)).await.unwrap();
        }
        assert!(fake.link("br-b").is_none());
        assert!(fake.link("br-a").is_some());
    }

    #[tokio::test]
    async fn an_observe_failure_is_reported_as_such() {
        struct Unreachable;
        #[async_trait]
        impl LinkSeam for Unreachable {
            async fn dump(&self) -> Result<Vec<LinkState>, NetlinkError> {
                Err(NetlinkError::from_errno(nix::errno::Errno::EACCES as i32))
            }
            async fn send(&self, _: LinkRequest) -> Result<Option<u32>, NetlinkError> {
                unreachable!("plan sends nothing")
            }
        }
        let driver = BridgeDriver::new(Arc::new(Unreachable));
        let error = driver
            .plan(&[declared("br0", "")], &PlanContext::default())
            .await
            .unwrap_err();
        assert!(
            error
                .chain()
                .starts_with("reading links and addresses from the kernel: "),
            "{error}"
        );
        assert_eq!(error.class(), crate::contract::FailureClass::NeedsUser);
    }

    fn detached(change: &Change) -> StepContext {
        StepContext::detached(change.id.clone())
    }

    /// Cancelled in the middle of a create: the create, marker and rename run together,
    /// nothing after the cancel is sent, and the next run finishes the bridge.
    #[tokio::test]
    async fn a_cancelled_create_stops_after_the_rename_and_the_next_run_finishes_it() {
        let fake = Arc::new(FakeLinks::new(Vec::new()));
        let cancel = CancelToken::new();
        {
            // Cancel as the kernel receives the create: what is already under way
            // finishes (marker, rename), nothing further starts.
            let cancel = cancel.clone();
            fake.fail_when(
                move |request| {
                    if matches!(request, LinkRequest::CreateBridge { .. }) {
                        cancel.cancel();
                    }
                    false
                },
                nix::errno::Errno::EINVAL,
            );
        }
        let driver = BridgeDriver::new(fake.clone());
        let br0 = declared(
            "br0",
            "mtu: 9000
addresses: [10.0.0.1/24]",
        );
        let change = driver
            .plan(std::slice::from_ref(&br0), &owning(&[]))
            .await
            .unwrap()
            .remove(0);
        let step = StepContext::new(
            change.id.clone(),
            cancel,
            crate::contract::DEFAULT_STEP_BUDGET,
            None,
        );
        let error = driver.apply(&change, &step).await.unwrap_err();
        assert_eq!(
            error.interruption(),
            Some(&crate::contract::Interrupted::Cancelled)
        );
        assert!(
            error
                .chain()
                .starts_with("bridge br0: stopped before set mtu 9000: cancelled")
        );
        let sent: Vec<_> = fake.requests();
        assert_eq!(sent.len(), 3, "create, marker, rename only: {sent:?}");
        let link = fake.link("br0").expect("renamed to its declared name");
        assert_eq!(link.alias.as_deref(), Some(OWNERSHIP_MARKER));

        let again = driver
            .plan(std::slice::from_ref(&br0), &owning(&["br0"]))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(again.action, Action::Update);
        driver.apply(&again, &detached(&again)).await.unwrap();
        let link = fake.link("br0").expect("still there");
        assert_eq!(link.mtu, 9000);
        assert!(link.up);
    }
}
