//! Builders shared by the bridge driver's unit tests.

use std::sync::Arc;

use ipnet::IpNet;

use super::OWNERSHIP_MARKER;
use super::seam::LinkState;
use crate::drivers::PlanContext;
use crate::drivers::bridge::BridgeSpec;
use crate::model::{ADOPT_ANNOTATION, Kind, Metadata, Name, Resource, ResourceId, Spec};

/// A declared bridge; `spec` is the YAML of its `spec:` block.
pub(crate) fn declared(name: &str, spec: &str) -> Arc<Resource> {
    let spec: BridgeSpec = serde_yaml::from_str(spec).expect("test spec parses");
    let name = Name::parse(name).expect("test name is valid");
    Arc::new(Resource::new(Metadata::named(name), Spec::new(spec)))
}

/// The same, annotated `gitvisor.dev/adopt: "true"`.
pub(crate) fn adopting(name: &str, spec: &str) -> Arc<Resource> {
    let mut resource = (*declared(name, spec)).clone();
    resource
        .metadata
        .annotations
        .insert(ADOPT_ANNOTATION.to_owned(), "true".to_owned());
    Arc::new(resource)
}

pub(crate) fn bridge_spec(resource: &Resource) -> &BridgeSpec {
    match resource.spec.get::<BridgeSpec>() {
        Some(spec) => spec,
        _ => panic!("not a bridge"),
    }
}

pub(crate) fn cidr(text: &str) -> IpNet {
    text.parse().expect("test CIDR parses")
}

pub(crate) fn marked(mut link: LinkState) -> LinkState {
    link.alias = Some(OWNERSHIP_MARKER.to_owned());
    link
}

pub(crate) fn id(name: &str) -> ResourceId {
    ResourceId::new(Kind::Bridge, Name::parse(name).expect("test name is valid"))
}

/// A plan context whose store records `names` as owned bridges.
pub(crate) fn owning(names: &[&str]) -> PlanContext {
    PlanContext::new(names.iter().map(|name| id(name)))
}
