//! The host snapshot indexed per VM, and [`ObservedVm`], the snapshot of one VM that a
//! change carries from plan to apply.
//!
//! A VM's objects on the host are found by their markers, never by name alone: its run
//! dir (`<run dir>/vm/<name>/` with gitvisor's record naming it), its taps (links whose
//! alias is `gitvisor:vm/<name>/<index>`), its data dir (`<state dir>/vm/<name>/`, in
//! gitvisor's own state dir, so its name is marker enough). Objects under temporary names
//! (a run dir `_new.<name>`, a tap `vt_<hash>_<index>`) are the leftovers of an
//! interrupted create.
//!
//! A VM's addresses are the DHCP leases of gitvisor's dnsmasq on the bridge of one of its
//! NICs, for that NIC's MAC address ([`HostVms::addresses`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use super::console::ConsoleTail;
use super::launch::HostFacts;
use super::monitor::GuestStatus;
use super::nic::{is_temporary_tap_of, parse_alias, tap_name};
use super::paths::{temporary_dir_name, temporary_dir_owner};
use super::record::RunRecord;
use super::seam::{HostSnapshot, Process, RecordRead, RunDir};
use crate::contract::Marker;
use crate::drivers::bridge::LinkState;
use crate::drivers::network::Leases;
use crate::model::Name;
use crate::model::{MacAddress, Vlan};

/// What the VM is doing, as the host shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    Running,
    Paused,
    /// No process.
    Stopped,
    /// A process whose monitor reports another status (`shutdown`, `internal-error`, …).
    Other(String),
    /// A process whose monitor did not answer: why.
    Unresponsive(String),
}

impl Runtime {
    pub fn has_process(&self) -> bool {
        !matches!(self, Runtime::Stopped)
    }

    /// How the plan shows it.
    pub fn describe(&self) -> String {
        match self {
            Runtime::Running => "Running".into(),
            Runtime::Paused => "Paused".into(),
            Runtime::Stopped => "Stopped".into(),
            Runtime::Other(status) => format!("Running ({status})"),
            Runtime::Unresponsive(_) => "Running (monitor not answering)".into(),
        }
    }
}

/// One of the VM's taps (or a leftover under a temporary name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTap {
    /// The NIC index its alias (or temporary name) names.
    pub nic: usize,
    pub index: u32,
    pub name: String,
    pub alias: Option<String>,
    pub master: Option<u32>,
    pub up: bool,
    /// Its VLANs on the bridge, sorted by id (empty when it is no bridge's port).
    pub vlans: Vec<Vlan>,
}

impl ObservedTap {
    fn of(link: &LinkState, nic: usize) -> Self {
        ObservedTap {
            nic,
            index: link.index,
            name: link.name.clone(),
            alias: link.alias.clone(),
            master: link.master,
            up: link.up,
            vlans: link.vlans.clone(),
        }
    }
}

/// The run dir named after the VM.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedDir {
    pub record: RecordRead,
    pub process: Option<Process>,
    pub status: Option<Result<GuestStatus, String>>,
    /// The end of its console log ([`super::console`]).
    pub console: Option<ConsoleTail>,
}

impl ObservedDir {
    /// The record, when it is gitvisor's and names this VM.
    pub fn record(&self) -> Option<&RunRecord> {
        match &self.record {
            RecordRead::Present(record) => Some(record),
            _ => None,
        }
    }

    /// The kernel's panic line at the end of its console log ([`super::console`]).
    pub fn last_words(&self) -> Option<String> {
        self.console.as_ref().and_then(super::console::last_words)
    }

    pub fn runtime(&self) -> Runtime {
        match (&self.process, &self.status) {
            (None, _) => Runtime::Stopped,
            (Some(_), Some(Ok(GuestStatus::Running))) => Runtime::Running,
            (Some(_), Some(Ok(GuestStatus::Paused))) => Runtime::Paused,
            (Some(_), Some(Ok(GuestStatus::Other(status)))) => Runtime::Other(status.clone()),
            (Some(_), Some(Err(why))) => Runtime::Unresponsive(why.clone()),
            (Some(_), None) => Runtime::Unresponsive("not asked".into()),
        }
    }
}

/// Everything the host has of one VM: the snapshot a change carries to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedVm {
    pub name: String,
    pub dir: Option<ObservedDir>,
    /// The record of a leftover temporary run dir (`_new.<name>`), if there is one.
    pub leftover_dir: Option<RecordRead>,
    /// It has a data dir under the state dir (its UEFI variable store).
    pub data: bool,
    /// Links marked as this VM's taps, by NIC index.
    pub taps: Vec<ObservedTap>,
    /// Taps of this VM under a temporary name.
    pub leftover_taps: Vec<ObservedTap>,
    /// Links under one of this VM's tap names that are not its taps: NIC index, link.
    pub squatters: Vec<ObservedTap>,
    /// Bridge indexes by name, for the bridges the VM's NICs name.
    pub bridges: BTreeMap<String, u32>,
    /// The bridges the VM's NICs name that the revision declares with `vlanFiltering:
    /// true`: their taps carry the NIC's declared VLANs. Taken from the declaration, not
    /// the host, since a bridge may be created (or start filtering) in the same run.
    pub vlan_filtering: BTreeSet<String>,
    pub facts: HostFacts,
}

impl ObservedVm {
    /// The ownership marker: a run dir with gitvisor's record for this VM, else whatever
    /// is there.
    pub fn marker(&self) -> Marker {
        match self.dir.as_ref().map(|dir| &dir.record) {
            Some(RecordRead::Present(record)) if record.name == self.name => Marker::Ours,
            Some(RecordRead::Present(record)) => {
                Marker::Foreign(format!("a record for VM {}", record.name))
            }
            Some(RecordRead::Foreign(why)) => Marker::Foreign(why.clone()),
            Some(RecordRead::Missing) | None => Marker::Absent,
        }
    }

    pub fn runtime(&self) -> Runtime {
        self.dir
            .as_ref()
            .map(ObservedDir::runtime)
            .unwrap_or(Runtime::Stopped)
    }

    /// The kernel's panic line at the end of its console log, if any.
    pub fn last_words(&self) -> Option<String> {
        self.dir.as_ref().and_then(ObservedDir::last_words)
    }

    /// NIC `nic`'s tap: marked for it and under the name QEMU opens.
    pub fn tap(&self, nic: usize) -> Option<&ObservedTap> {
        self.taps
            .iter()
            .find(|tap| tap.nic == nic && tap.name == super::nic::tap_name(&self.name, nic))
    }

    /// Whether there is anything of this VM on the host at all.
    pub fn exists(&self) -> bool {
        self.dir.is_some()
            || self.data
            || self.leftover_dir.is_some()
            || !self.taps.is_empty()
            || !self.leftover_taps.is_empty()
    }
}

/// The host snapshot, indexed.
#[derive(Debug)]
pub struct HostVms {
    dirs: BTreeMap<String, RunDir>,
    data_dirs: BTreeSet<String>,
    links: Vec<LinkState>,
    leases: Leases,
    facts: HostFacts,
}

/// An address dnsmasq leased to one of a VM's NICs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedAddress {
    pub address: String,
    pub bridge: String,
}

impl HostVms {
    pub fn new(snapshot: HostSnapshot) -> Self {
        HostVms {
            dirs: snapshot
                .run_dirs
                .into_iter()
                .map(|dir| (dir.name.clone(), dir))
                .collect(),
            data_dirs: snapshot.data_dirs.into_iter().collect(),
            links: snapshot.links,
            leases: snapshot.leases,
            facts: snapshot.facts,
        }
    }

    /// What the host has of VM `name`; `bridges` are the bridges its NICs name and
    /// `nics` how many it declares (for the tap names that must be free).
    pub fn vm(&self, name: &str, bridges: &[&str], nics: usize) -> ObservedVm {
        let dir = self.dirs.get(name).map(|dir| ObservedDir {
            record: dir.record.clone(),
            process: dir.process.clone(),
            status: dir.status.clone(),
            console: dir.console.clone(),
        });
        let leftover_dir = self
            .dirs
            .get(&temporary_dir_name(name))
            .map(|dir| dir.record.clone());
        let mut taps = Vec::new();
        let mut leftover_taps = Vec::new();
        for link in &self.links {
            // A temporary name first: a tap marked there but not yet renamed is a
            // leftover, not the tap QEMU will open by its final name.
            if let Some(nic) = is_temporary_tap_of(&link.name, name) {
                leftover_taps.push(ObservedTap::of(link, nic));
            } else if let Some((vm, nic)) = link.alias.as_deref().and_then(parse_alias)
                && vm == name
            {
                taps.push(ObservedTap::of(link, nic));
            }
        }
        taps.sort_by_key(|tap| tap.nic);
        let squatters = (0..nics)
            .filter_map(|nic| {
                let wanted = tap_name(name, nic);
                self.links
                    .iter()
                    .find(|link| link.name == wanted)
                    .filter(|link| !taps.iter().any(|tap| tap.index == link.index))
                    .map(|link| ObservedTap::of(link, nic))
            })
            .collect();
        let bridges = bridges
            .iter()
            .filter_map(|bridge| {
                self.links
                    .iter()
                    .find(|link| link.name == *bridge && link.is_bridge())
                    .map(|link| ((*bridge).to_owned(), link.index))
            })
            .collect();
        ObservedVm {
            name: name.to_owned(),
            dir,
            leftover_dir,
            data: self.data_dirs.contains(name),
            taps,
            leftover_taps,
            squatters,
            bridges,
            vlan_filtering: BTreeSet::new(),
            facts: self.facts.clone(),
        }
    }

    /// Every VM name the host shows a trace of: run dirs, temporary run dirs, tap
    /// markers.
    pub fn names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self
            .dirs
            .keys()
            .map(|dir| temporary_dir_owner(dir).unwrap_or(dir).to_owned())
            .collect();
        names.extend(
            self.data_dirs
                .iter()
                .filter(|dir| Name::parse(dir).is_ok())
                .cloned(),
        );
        names.extend(
            self.links
                .iter()
                .filter_map(|link| link.alias.as_deref().and_then(parse_alias))
                .map(|(vm, _)| vm.to_owned()),
        );
        names
    }

    pub fn facts(&self) -> &HostFacts {
        &self.facts
    }

    /// The addresses leased to `nics` (each a bridge and the NIC's MAC address) that have
    /// not expired by `now`, in the NICs' order.
    pub fn addresses(&self, nics: &[(&str, MacAddress)], now: SystemTime) -> Vec<LeasedAddress> {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut addresses = Vec::new();
        for (bridge, mac) in nics {
            let mac = mac.to_string();
            for lease in self.leases.get(*bridge).into_iter().flatten() {
                if lease.mac.eq_ignore_ascii_case(&mac)
                    && (lease.expires == 0 || lease.expires > now)
                {
                    addresses.push(LeasedAddress {
                        address: lease.address.clone(),
                        bridge: (*bridge).to_owned(),
                    });
                }
            }
        }
        addresses
    }
}
