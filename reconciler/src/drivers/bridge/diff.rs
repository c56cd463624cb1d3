//! The bridge decision table: declared resources and the host's links in, one
//! [`Change`] per declared or pruned bridge out. Pure: no I/O.
//!
//! Ownership follows the shared rules of [`crate::contract::ownership`]: gitvisor changes
//! or deletes a bridge only when it carries the marker *and* the state store records it,
//! unless the manifest says `gitvisor.dev/adopt: "true"`. This file only adds what is
//! particular to links: a link of another kind under the declared name, and the
//! temporary name a bridge is created under. Creation never leaves an unmarked bridge
//! under a declared name (see `temporary.rs`), so no crash window needs an exception.
//!
//! What is on the host under the declared name decides:
//!
//! | on the host                                        | plan                              |
//! |----------------------------------------------------|-----------------------------------|
//! | nothing                                            | `Create`                          |
//! | nothing; a provable leftover under the temporary name | `Create`, removing it first    |
//! | nothing; anything else under the temporary name    | `Conflict`                        |
//! | a link that is not a bridge (marked or not)        | `Conflict`                        |
//! | a bridge with the marker and a store record        | `Update`, or `NoOp` if none differ |
//! | any other bridge (no marker, or no record)         | `Conflict`                        |
//! | … the same, annotated `gitvisor.dev/adopt: "true"` | `Update` (marker included) or `NoOp` |
//!
//! A declared port with the reserved temporary prefix is a `Conflict` too.
//!
//! A bridge that is no longer declared is deleted only when it is ours by the same rule.
//! A marked bridge without a record, or a recorded one without the marker, is left in
//! place with a warning in the log. A provable leftover of an interrupted creation of a
//! bridge that is no longer declared is deleted along with it (or alone).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::drift::{Drift, cidrs, vlan_list};
use super::observed::{HostLinks, Leftover, ObservedBridge, bridge_id, evidence};
use super::seam::{LinkKind, LinkState};
use super::temporary::TEMPORARY_PREFIX;
use crate::contract::{Action, Change, Effect, FieldChange, Ownership, PlanContext, Prune};
use crate::drivers::bridge::BridgeSpec;
use crate::model::{Kind, Resource, ResourceId};

/// The change for one declared bridge.
pub(crate) fn declared(
    resource: &Arc<Resource>,
    spec: &BridgeSpec,
    host: &HostLinks,
    context: &PlanContext,
) -> Change {
    let id = resource.id();
    let observed = host.observe(&id, &spec.ports, &context.owned);
    let change = Change::new(id.clone(), Action::NoOp).with_desired(Arc::clone(resource));
    if let Some(port) = spec
        .ports
        .iter()
        .find(|port| port.as_str().starts_with(TEMPORARY_PREFIX))
    {
        let reason = format!(
            "port {port} has the prefix {TEMPORARY_PREFIX}, which gitvisor reserves for bridges it is creating; rename the interface"
        );
        return conflict(change, reason, observed);
    }
    if let Some(reason) = vlan_name_taken(&id, spec, host, observed.index()) {
        return conflict(change, reason, observed);
    }
    let Some(link) = &observed.link else {
        if let Leftover::Unproven(taken) = host.leftover(&id, &context.owned) {
            let reason = format!(
                "gitvisor creates bridge {} under the temporary name {}, which a link gitvisor cannot prove it made holds ({}); remove it (ip link del {}) and plan again",
                id.name,
                taken.name,
                describe(&taken),
                taken.name
            );
            return conflict(change, reason, observed);
        }
        let mut change = with_notes(
            Change {
                action: Action::Create,
                ..change
            }
            .with_fields(creation_fields(id.name.as_str(), spec)),
            &observed,
        );
        if let Some(leftover) = &observed.leftover {
            change = change.with_reason(leftover_note(leftover));
        }
        return change.with_observed(observed);
    };

    if !link.is_bridge() {
        let reason = format!(
            "{} named {} exists and is not a bridge; gitvisor will not touch it",
            describe(link),
            link.name
        );
        return conflict(change, reason, observed);
    }

    let adopting = match evidence(link, &context.owned).declared(
        format_args!("bridge {}", link.name),
        resource.metadata.adopt(),
    ) {
        Ownership::Ours => false,
        Ownership::Adopt => true,
        Ownership::Conflict(reason) => return conflict(change, reason, observed),
    };

    let drift = Drift::between(spec, link, &observed);
    let action = if drift.is_empty() {
        Action::NoOp
    } else {
        Action::Update
    };
    let mut change = with_notes(
        Change { action, ..change }.with_fields(drift.fields()),
        &observed,
    );
    if adopting {
        change = change.with_first_reason("adopting an existing bridge (gitvisor.dev/adopt)");
    }
    if let Some(leftover) = &observed.leftover {
        change = change.with_reason(
            if action == Action::Update {
                leftover_note(leftover)
            } else {
                format!(
                    "{} is a half-made bridge left by an interrupted creation; it is removed with the next change to this bridge",
                    leftover.name
                )
            },
        );
    }
    change.with_observed(observed)
}

/// Deletes for bridges that are gitvisor's (marker and store record) and no longer
/// declared, and for provable leftovers of their interrupted creations; sorted by id.
pub(crate) fn pruned(
    declared: &BTreeSet<&str>,
    host: &HostLinks,
    context: &PlanContext,
) -> Vec<Change> {
    let mut deletes: BTreeMap<ResourceId, ObservedBridge> = BTreeMap::new();
    for link in host.links() {
        if !link.is_bridge() || declared.contains(link.name.as_str()) {
            continue;
        }
        let Some(id) = bridge_id(&link.name) else {
            continue;
        };
        match evidence(link, &context.owned).undeclared() {
            Prune::Delete => {
                deletes.insert(
                    id,
                    ObservedBridge {
                        ports: host.ports_of(link.index),
                        link: Some(link.clone()),
                        ..ObservedBridge::default()
                    },
                );
            }
            Prune::KeepAndWarn(why) => tracing::warn!(bridge = %link.name, "{why}"),
            Prune::Keep => {}
        }
    }
    for id in &context.owned {
        if id.kind != Kind::Bridge || declared.contains(id.name.as_str()) {
            continue;
        }
        if let Leftover::Ours(leftover) = host.leftover(id, &context.owned) {
            deletes.entry(id.clone()).or_default().leftover = Some(leftover);
        }
    }
    deletes
        .into_iter()
        .map(|(id, observed)| {
            let mut change = Change::new(id, Action::Delete).with_reason("no longer declared");
            if let Some(leftover) = &observed.leftover {
                change = change.with_reason(leftover_note(leftover));
            }
            change.with_observed(observed)
        })
        .collect()
}

/// Why a declared VLAN sub-interface cannot be made or kept: its name `<bridge>.<id>` is
/// held by a link that is not gitvisor's sub-interface of this bridge for that VLAN.
fn vlan_name_taken(
    id: &ResourceId,
    spec: &BridgeSpec,
    host: &HostLinks,
    bridge: Option<u32>,
) -> Option<String> {
    spec.vlan_interfaces.iter().find_map(|interface| {
        let name = interface.link_name(id.name.as_str());
        let link = host.by_name(&name)?;
        let ours = bridge.is_some()
            && link.vlan_of
                == bridge.map(|parent| super::seam::VlanOf {
                    id: interface.id,
                    parent,
                })
            && link.alias.as_deref() == Some(super::OWNERSHIP_MARKER);
        (!ours).then(|| {
            format!(
                "VLAN sub-interface {name} (vlanInterfaces id {}) cannot be made: {} named {name} exists that gitvisor did not make on this bridge; remove or rename it (ip link del {name}), or drop the VLAN interface",
                interface.id,
                describe(link)
            )
        })
    })
}

/// "a bridge", "a veth link", "a device".
fn describe(link: &LinkState) -> String {
    match &link.kind {
        Some(LinkKind::Bridge) => "a bridge".to_owned(),
        Some(LinkKind::Other(kind)) => format!("a {kind} link"),
        None => "a device".to_owned(),
    }
}

fn leftover_note(leftover: &LinkState) -> String {
    format!(
        "removes {}, a half-made bridge left by an interrupted creation",
        leftover.name
    )
}

/// What a create sets, as the plan shows it (old values are null).
fn creation_fields(bridge_name: &str, spec: &BridgeSpec) -> Vec<FieldChange> {
    let bridge_name = bridge_name.to_owned();
    let null = serde_json::Value::Null;
    let mut fields = Vec::new();
    if let Some(mtu) = spec.mtu {
        fields.push(FieldChange::new("mtu", null.clone(), mtu, Effect::Hot));
    }
    if !spec.addresses.is_empty() {
        let addresses: Vec<_> = spec.addresses.iter().map(|cidr| cidr.0).collect();
        fields.push(FieldChange::new(
            "addresses",
            null.clone(),
            cidrs(&addresses),
            Effect::Hot,
        ));
    }
    if !spec.ports.is_empty() {
        let ports: Vec<&str> = spec.ports.iter().map(|port| port.as_str()).collect();
        fields.push(FieldChange::new("ports", null.clone(), ports, Effect::Hot));
    }
    for port in spec.ports.iter().filter(|port| !port.vlans.is_empty()) {
        fields.push(FieldChange::new(
            format!("ports.{}.vlans", port.name),
            null.clone(),
            vlan_list(&port.vlans),
            Effect::Hot,
        ));
    }
    if !spec.vlan_interfaces.is_empty() {
        let names: Vec<String> = spec
            .vlan_interfaces
            .iter()
            .map(|interface| interface.link_name(&bridge_name))
            .collect();
        fields.push(FieldChange::new(
            "vlanInterfaces",
            null.clone(),
            names,
            Effect::Hot,
        ));
    }
    fields.push(FieldChange::new("stp", null.clone(), spec.stp, Effect::Hot));
    fields.push(FieldChange::new(
        "vlanFiltering",
        null.clone(),
        spec.vlan_filtering,
        Effect::Hot,
    ));
    fields.push(FieldChange::new("up", null, spec.up, Effect::Hot));
    fields
}

fn conflict(change: Change, reason: String, observed: ObservedBridge) -> Change {
    Change {
        action: Action::Conflict,
        ..change
    }
    .with_reason(reason)
    .with_observed(observed)
}

/// Notes that do not change the action: what apply will refuse.
fn with_notes(mut change: Change, observed: &ObservedBridge) -> Change {
    for port in &observed.declared_ports {
        if port.index.is_none() {
            change = change.with_reason(format!(
                "port {} does not exist on this host; apply will fail",
                port.name
            ));
        } else if let Some(master) = &port.foreign_master {
            change = change.with_reason(format!(
                "port {} is enslaved to {master}, which gitvisor does not manage; apply will fail",
                port.name
            ));
        }
    }
    change
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::drivers::bridge::OWNERSHIP_MARKER;
    use crate::drivers::bridge::fake::{bridge_link, plain_link};
    use crate::drivers::bridge::seam::BridgeOptions;
    use crate::drivers::bridge::temporary::temporary_name;
    use crate::drivers::bridge::testkit::{
        adopting, bridge_spec, cidr, declared as declare, id, marked, owning,
    };

    fn decide(resource: &Arc<Resource>, links: Vec<LinkState>, context: &PlanContext) -> Change {
        let host = HostLinks::new(links);
        declared(resource, bridge_spec(resource), &host, context)
    }

    fn fields(change: &Change) -> Vec<(&str, serde_json::Value, serde_json::Value)> {
        change
            .fields
            .iter()
            .map(|f| (f.path.as_str(), f.old.clone(), f.new.clone()))
            .collect()
    }

    /// br0 as the kernel has it after gitvisor made it: marked, up, one address, the
    /// kernel's own link-local address.
    fn converged_br0() -> LinkState {
        let mut link = marked(bridge_link(7, "br0"));
        link.up = true;
        link.mtu = 9000;
        link.addresses = vec![cidr("fe80::1/64"), cidr("10.0.0.1/24")];
        link
    }

    const BR0: &str = "mtu: 9000\naddresses: [10.0.0.1/24]";

    #[test]
    fn absent_bridge_is_created_with_the_fields_it_sets() {
        let br0 = declare("br0", "mtu: 9000\naddresses: [10.0.0.1/24, fd00::1/64]");
        let change = decide(
            &br0,
            vec![plain_link(1, "lo", None)],
            &PlanContext::default(),
        );
        assert_eq!(change.action, Action::Create);
        assert_eq!(
            fields(&change),
            vec![
                ("mtu", json!(null), json!(9000)),
                (
                    "addresses",
                    json!(null),
                    json!(["10.0.0.1/24", "fd00::1/64"])
                ),
                ("stp", json!(null), json!(false)),
                ("vlanFiltering", json!(null), json!(false)),
                ("up", json!(null), json!(true)),
            ]
        );
        assert!(change.fields.iter().all(|f| f.effect == Effect::Hot));
        assert!(change.desired.is_some());
        assert!(change.reasons.is_empty());
        let Some(observed) = change.observed_as::<ObservedBridge>() else {
            panic!("a create carries the planning snapshot");
        };
        assert_eq!(observed.link, None);
    }

    #[test]
    fn bridge_as_declared_is_noop_despite_the_kernels_link_local_address() {
        let change = decide(
            &declare("br0", BR0),
            vec![converged_br0()],
            &owning(&["br0"]),
        );
        assert_eq!(change.action, Action::NoOp, "{:?}", change.fields);
        assert!(change.fields.is_empty());
        let Some(observed) = change.observed_as::<ObservedBridge>() else {
            panic!("a noop carries the snapshot");
        };
        assert_eq!(observed.index(), Some(7));
    }

    #[test]
    fn update_lists_exactly_the_fields_that_differ() {
        let br0 = declare(
            "br0",
            "mtu: 1400\naddresses: [10.0.0.1/24, 10.0.1.1/24]\nstp: true\nvlanFiltering: true\nup: false",
        );
        let mut link = converged_br0();
        link.addresses.push(cidr("192.168.9.1/24"));
        let change = decide(&br0, vec![link], &owning(&["br0"]));
        assert_eq!(change.action, Action::Update);
        assert_eq!(
            fields(&change),
            vec![
                ("mtu", json!(9000), json!(1400)),
                (
                    "addresses",
                    json!(["10.0.0.1/24", "192.168.9.1/24"]),
                    json!(["10.0.0.1/24", "10.0.1.1/24"])
                ),
                ("stp", json!(false), json!(true)),
                ("vlanFiltering", json!(false), json!(true)),
                ("up", json!(true), json!(false)),
            ]
        );
        assert!(change.fields.iter().all(|f| f.effect == Effect::Hot));
    }

    #[test]
    fn an_undeclared_mtu_is_left_alone() {
        let change = decide(
            &declare("br0", "addresses: [10.0.0.1/24]"),
            vec![converged_br0()],
            &owning(&["br0"]),
        );
        assert_eq!(change.action, Action::NoOp);
    }

    #[test]
    fn a_declared_link_local_address_is_managed_like_any_other() {
        let mut link = converged_br0();
        link.addresses = vec![cidr("10.0.0.1/24")];
        let change = decide(
            &declare("br0", "mtu: 9000\naddresses: [10.0.0.1/24, fe80::2/64]"),
            vec![link],
            &owning(&["br0"]),
        );
        assert_eq!(
            fields(&change),
            vec![(
                "addresses",
                json!(["10.0.0.1/24"]),
                json!(["10.0.0.1/24", "fe80::2/64"])
            )]
        );
    }

    #[test]
    fn a_link_of_another_kind_is_a_conflict_even_when_marked() {
        for link in [
            plain_link(3, "br0", Some("dummy")),
            marked(plain_link(3, "br0", Some("veth"))),
            plain_link(3, "br0", None),
        ] {
            let kind = link.kind.clone().map(|kind| kind.to_string());
            let change = decide(&declare("br0", BR0), vec![link], &owning(&["br0"]));
            assert_eq!(change.action, Action::Conflict);
            let reason = change.reason().unwrap_or_default();
            assert!(reason.contains("is not a bridge"), "{reason}");
            if let Some(kind) = kind {
                assert!(reason.contains(&kind), "{reason}");
            }
            assert!(change.fields.is_empty());
        }
    }

    #[test]
    fn an_unmarked_bridge_gitvisor_did_not_create_is_a_conflict_with_the_adopt_hint() {
        let change = decide(
            &declare("br0", BR0),
            vec![bridge_link(4, "br0")],
            &PlanContext::default(),
        );
        assert_eq!(change.action, Action::Conflict);
        assert_eq!(
            change.reason().as_deref(),
            Some(
                "bridge br0 exists but was not created by gitvisor; annotate gitvisor.dev/adopt: \"true\" to take it over"
            )
        );
    }

    #[test]
    fn adopting_sets_the_marker_and_the_differing_fields() {
        let mut link = bridge_link(4, "br0");
        link.alias = Some("uplink".to_owned());
        link.mtu = 9000;
        let change = decide(&adopting("br0", BR0), vec![link], &PlanContext::default());
        assert_eq!(change.action, Action::Update);
        assert_eq!(
            fields(&change),
            vec![
                ("ifalias", json!("uplink"), json!("gitvisor:managed")),
                ("addresses", json!([]), json!(["10.0.0.1/24"])),
                ("up", json!(false), json!(true)),
            ]
        );
        assert!(change.reason().unwrap_or_default().contains("adopting"));
    }

    /// The reproduction of the defect: gitvisor made br0, an administrator deleted it and
    /// made a new br0 by hand. The store still records br0, but the bridge is not ours.
    #[test]
    fn a_store_record_without_the_marker_is_a_conflict_not_an_update() {
        let mut link = converged_br0();
        link.alias = None;
        let change = decide(&declare("br0", BR0), vec![link], &owning(&["br0"]));
        assert_eq!(change.action, Action::Conflict);
        assert!(change.fields.is_empty());
        let reason = change.reason().unwrap_or_default();
        assert!(reason.contains("without gitvisor's marker"), "{reason}");
        assert!(reason.contains("gitvisor.dev/adopt"), "{reason}");
    }

    #[test]
    fn a_foreign_alias_is_a_conflict_even_when_the_store_records_the_name() {
        let mut link = converged_br0();
        link.alias = Some("uplink managed by ansible".into());
        let change = decide(&declare("br0", BR0), vec![link], &owning(&["br0"]));
        assert_eq!(change.action, Action::Conflict);
        assert!(change.fields.is_empty());
    }

    #[test]
    fn a_marker_without_a_store_record_is_a_conflict_not_an_update() {
        let mut link = converged_br0();
        link.mtu = 1500;
        let change = decide(&declare("br0", BR0), vec![link], &PlanContext::default());
        assert_eq!(change.action, Action::Conflict);
        assert!(change.fields.is_empty());
        let reason = change.reason().unwrap_or_default();
        assert!(reason.contains("has no record"), "{reason}");
    }

    #[test]
    fn adopting_a_marked_bridge_the_store_lost_updates_it() {
        let mut link = converged_br0();
        link.mtu = 1500;
        let change = decide(&adopting("br0", BR0), vec![link], &PlanContext::default());
        assert_eq!(change.action, Action::Update);
        assert_eq!(fields(&change), vec![("mtu", json!(1500), json!(9000))]);
        assert!(change.reason().unwrap_or_default().contains("adopting"));
    }

    #[test]
    fn a_marked_recorded_bridge_is_updated() {
        let mut link = converged_br0();
        link.mtu = 1500;
        let change = decide(&declare("br0", BR0), vec![link], &owning(&["br0"]));
        assert_eq!(change.action, Action::Update);
        assert_eq!(fields(&change), vec![("mtu", json!(1500), json!(9000))]);
        assert!(change.reasons.is_empty());
    }

    /// A crash between creating a bridge under its temporary name and renaming it.
    #[test]
    fn a_provable_leftover_is_removed_by_the_create() {
        for alias in [None, Some(OWNERSHIP_MARKER)] {
            let mut leftover = bridge_link(3, &temporary_name(&id("br0")));
            leftover.alias = alias.map(str::to_owned);
            let change = decide(
                &declare("br0", BR0),
                vec![leftover.clone()],
                &owning(&["br0"]),
            );
            assert_eq!(change.action, Action::Create);
            let Some(observed) = change.observed_as::<ObservedBridge>() else {
                panic!("a create carries the snapshot");
            };
            assert_eq!(observed.leftover.as_ref(), Some(&leftover));
            let reason = change.reason().unwrap_or_default();
            assert!(reason.contains(&leftover.name), "{reason}");
        }
    }

    #[test]
    fn an_unproven_link_under_the_temporary_name_is_a_conflict_and_is_kept() {
        let temporary = temporary_name(&id("br0"));
        let mut foreign_alias = bridge_link(3, &temporary);
        foreign_alias.alias = Some("mine".into());
        let cases = [
            (bridge_link(3, &temporary), PlanContext::default()),
            (marked(bridge_link(3, &temporary)), PlanContext::default()),
            (foreign_alias, owning(&["br0"])),
            (plain_link(3, &temporary, Some("dummy")), owning(&["br0"])),
        ];
        for (link, context) in cases {
            let change = decide(&declare("br0", BR0), vec![link.clone()], &context);
            assert_eq!(change.action, Action::Conflict, "{link:?}");
            let reason = change.reason().unwrap_or_default();
            assert!(reason.contains(&temporary), "{reason}");
            let pruned = pruned(&BTreeSet::new(), &HostLinks::new(vec![link]), &context);
            assert!(pruned.is_empty(), "{pruned:?}");
        }
    }

    #[test]
    fn a_port_with_the_reserved_prefix_is_a_conflict() {
        let change = decide(
            &declare("br0", "ports: [gv_0123456789ab]"),
            Vec::new(),
            &PlanContext::default(),
        );
        assert_eq!(change.action, Action::Conflict);
        assert!(
            change
                .reason()
                .unwrap_or_default()
                .contains("reserves for bridges it is creating")
        );
    }

    #[test]
    fn the_network_fields_are_not_part_of_the_links_diff() {
        let change = decide(
            &declare(
                "br0",
                "mtu: 9000\naddresses: [10.0.0.1/24]\nnat: true\nuplink: eth0\ndhcp: {range: 10.0.0.100-10.0.0.199}",
            ),
            vec![converged_br0()],
            &owning(&["br0"]),
        );
        assert_eq!(change.action, Action::NoOp);
        assert!(change.reasons.is_empty(), "{:?}", change.reasons);
    }

    #[test]
    fn ports_are_enslaved_released_and_missing_ones_are_noted() {
        let mut enslaved = plain_link(10, "eth1", None);
        enslaved.master = Some(7);
        let free = plain_link(11, "eth2", None);
        let change = decide(
            &declare(
                "br0",
                "mtu: 9000\naddresses: [10.0.0.1/24]\nports: [eth2, eth9]",
            ),
            vec![converged_br0(), enslaved, free],
            &owning(&["br0"]),
        );
        assert_eq!(change.action, Action::Update);
        assert_eq!(
            fields(&change),
            vec![("ports", json!(["eth1"]), json!(["eth2", "eth9"]))]
        );
        assert_eq!(
            change.reason().as_deref(),
            Some("port eth9 does not exist on this host; apply will fail")
        );
    }

    #[test]
    fn workload_links_other_drivers_enslaved_are_neither_listed_nor_released() {
        let mut tap = plain_link(12, "tap-vm1", Some("tun"));
        tap.alias = Some("gitvisor:managed".to_owned());
        tap.master = Some(7);
        let mut veth = plain_link(13, "veth-c1", Some("veth"));
        veth.alias = Some("gitvisor:container/c1".to_owned());
        veth.master = Some(7);
        let change = decide(
            &declare("br0", BR0),
            vec![converged_br0(), tap, veth],
            &owning(&["br0"]),
        );
        assert_eq!(change.action, Action::NoOp, "{:?}", change.fields);
    }

    #[test]
    fn a_port_held_by_a_foreign_master_is_noted_but_one_held_by_our_bridge_is_not() {
        let foreign = plain_link(20, "bond0", Some("bond"));
        let ours = marked(bridge_link(21, "br1"));
        let mut held_by_bond = plain_link(10, "eth1", None);
        held_by_bond.master = Some(20);
        let mut held_by_br1 = plain_link(11, "eth2", None);
        held_by_br1.master = Some(21);
        let change = decide(
            &declare("br0", "ports: [eth1, eth2]"),
            vec![foreign, ours, held_by_bond, held_by_br1],
            &owning(&["br1"]),
        );
        assert_eq!(change.action, Action::Create);
        assert_eq!(
            change.reason().as_deref(),
            Some("port eth1 is enslaved to bond0, which gitvisor does not manage; apply will fail")
        );
    }

    #[test]
    fn pruned_needs_the_store_record_and_the_marker() {
        let mut with_port = marked(bridge_link(1, "br-old"));
        with_port.bridge = Some(BridgeOptions::default());
        let mut port = plain_link(9, "eth1", None);
        port.master = Some(1);
        let mut foreign = bridge_link(6, "br-foreign");
        foreign.alias = Some("someone else's".into());
        let links = vec![
            with_port,                                     // marker + store: delete
            marked(bridge_link(2, "br-lost")),             // marker, store lost it: keep
            bridge_link(3, "br-unmarked"),                 // store, no alias (by hand): keep
            marked(plain_link(4, "veth-x", Some("veth"))), // not a bridge: keep
            marked(bridge_link(5, "br0")),                 // still declared: keep
            foreign,                                       // store, foreign alias: keep
            bridge_link(7, "br-stranger"),                 // no alias, no store: keep
            port,
        ];
        let host = HostLinks::new(links);
        let context = owning(&["br-old", "br-unmarked", "veth-x", "br0", "br-foreign"]);
        let changes = pruned(&BTreeSet::from(["br0"]), &host, &context);
        let ids: Vec<String> = changes.iter().map(|c| c.id.to_string()).collect();
        assert_eq!(ids, ["Bridge/br-old"]);
        let delete = &changes[0];
        assert_eq!(delete.action, Action::Delete);
        assert!(delete.desired.is_none());
        let Some(observed) = delete.observed_as::<ObservedBridge>() else {
            panic!("a delete carries the snapshot");
        };
        assert_eq!(observed.index(), Some(1));
        assert_eq!(observed.ports.len(), 1);
        assert_eq!(observed.leftover, None);
    }

    /// The copied-store case: every recorded name is on this host, made by hand, without
    /// the marker. Nothing is deleted.
    #[test]
    fn a_store_from_another_host_prunes_nothing_here() {
        let links: Vec<_> = (0..5)
            .map(|i| bridge_link(i + 1, &format!("br-{i}")))
            .collect();
        let names: Vec<String> = (0..5).map(|i| format!("br-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let changes = pruned(&BTreeSet::new(), &HostLinks::new(links), &owning(&names));
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_leftover_of_an_undeclared_bridge_is_pruned_alone_or_with_it() {
        let alone = bridge_link(3, &temporary_name(&id("br-gone")));
        let with_it = marked(bridge_link(4, &temporary_name(&id("br-old"))));
        let old = marked(bridge_link(5, "br-old"));
        let unrecorded = bridge_link(6, &temporary_name(&id("br-never")));
        let host = HostLinks::new(vec![alone.clone(), with_it.clone(), old, unrecorded]);
        let changes = pruned(&BTreeSet::new(), &host, &owning(&["br-gone", "br-old"]));
        let summary: Vec<_> = changes
            .iter()
            .map(|change| {
                let Some(observed) = change.observed_as::<ObservedBridge>() else {
                    panic!("a delete carries the snapshot");
                };
                (
                    change.id.to_string(),
                    change.action,
                    observed.index(),
                    observed.leftover.as_ref().map(|l| l.index),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("Bridge/br-gone".to_owned(), Action::Delete, None, Some(3)),
                ("Bridge/br-old".to_owned(), Action::Delete, Some(5), Some(4)),
            ]
        );
        assert!(
            changes[0].reason().is_some_and(|r| r.contains(&alone.name)),
            "{:?}",
            changes[0].reasons
        );
    }
}
