//! The manifest model: plain serde data, no I/O.
//!
//! A manifest document is `apiVersion`, `kind`, `metadata` and a kind-specific `spec`.
//! Each kind's document type is strict (`deny_unknown_fields`) and its leaf types validate
//! themselves while deserialising (names, sizes, CIDRs), so every error carries the
//! position and field path the YAML parser knows. Cross-document rules (references,
//! duplicates, cycles) live in `crate::validate` and `crate::graph`.

mod dhcp;
mod digest;
pub mod image_reference;
mod kind;
mod metadata;
mod name;
mod net;
mod prune_policy;
mod publish;
mod quantity;
mod quoted;
mod resource;
mod spec;
mod vlan;
mod workload;

pub use dhcp::{Dhcp, Ipv4Range, StaticLease};
pub use digest::Sha256Digest;
pub use kind::{Kind, KindTaken};
pub use metadata::{
    ADOPT_ANNOTATION, API_VERSION, ApiVersionTag, Metadata, OVERCOMMIT_ANNOTATION, ResourceId,
};
pub use name::{IFNAME_MAX, InterfaceName, NAME_MAX, Name, RESERVED_IFNAMES};
pub use net::{Cidr, MacAddress, unicast_problem};
pub use prune_policy::{PRUNE_POLICY_KIND, PrunePolicy, PrunePolicySpec};
pub use publish::{BridgePublish, PortPublish, Protocol};
pub use quantity::{ByteSize, Duration};
pub use quoted::{QUOTED_MAX, Quoted, quoted};
pub use resource::{Document, FieldLocator, LocateField, Origin, Reference, Resource};
pub use spec::{KindSpec, Spec};
pub use vlan::{BridgePort, VLAN_ID_MAX, VLAN_ID_MIN, Vlan, VlanInterface};
pub use workload::RunState;
