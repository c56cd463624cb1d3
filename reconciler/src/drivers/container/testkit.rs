//! Builders shared by the container driver's unit tests.

use std::sync::Arc;

use crate::contract::PlanContext;
use crate::model::{Kind, Metadata, Name, Resource, ResourceId, Spec};

/// Says loudly (past libtest's capture) that a test did not run; in CI (`CI=true` or
/// `CI=1`) panics with that line instead, since a skip is not a pass there.
pub fn skip_loudly(test: &str, why: &str) {
    use std::io::Write;
    let line = format!("SKIPPED ({why}): {test}");
    let in_ci =
        std::env::var("CI").is_ok_and(|v| v.trim() == "1" || v.trim().eq_ignore_ascii_case("true"));
    if in_ci {
        panic!("{line}\nCI=true: a skip is a failure in CI; install what is missing (.ci/deps/)");
    }
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A declared container `name` with `spec` (YAML).
pub fn declared(name: &str, spec: &str) -> Arc<Resource> {
    let spec: crate::drivers::container::ContainerSpec =
        serde_yaml::from_str(spec).expect("test spec parses");
    Arc::new(Resource::new(
        Metadata::named(Name::parse(name).expect("valid name")),
        Spec::new(spec),
    ))
}

/// A context whose store records `names` as gitvisor's containers, seeing `revision`.
pub fn owning(names: &[&str], revision: &[Arc<Resource>]) -> PlanContext {
    PlanContext::new(
        names
            .iter()
            .map(|name| ResourceId::new(Kind::Container, Name::parse(name).expect("valid name"))),
    )
    .with_revision(revision)
}
