//! How a running container's cgroup limits differ from the declaration, field by field:
//! the plan renders it, apply sends exactly one `runc update` with the declared limits.
//!
//! The kernel keeps memory limits in whole pages, so a declared limit matches when it
//! rounds down to what the cgroup has; a CPU quota matches to a thousandth of a core.

use super::seam::Limits;
use crate::contract::{Effect, FieldChange};

const PAGE: u64 = 4096;

/// The fields whose cgroup value differs from the declaration (empty when none do).
pub fn limits(declared: &Limits, observed: &Limits) -> Vec<FieldChange> {
    let mut fields = Vec::new();
    if !memory_matches(declared.memory, observed.memory) {
        fields.push(FieldChange::new(
            "resources.memory",
            observed.memory,
            declared.memory,
            Effect::Hot,
        ));
    }
    let cpus_match = match (declared.cpus, observed.cpus) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-3,
        (None, None) => true,
        _ => false,
    };
    if !cpus_match {
        fields.push(FieldChange::new(
            "resources.cpus",
            observed.cpus,
            declared.cpus,
            Effect::Hot,
        ));
    }
    if declared.pids != observed.pids {
        fields.push(FieldChange::new(
            "resources.pids",
            observed.pids,
            declared.pids,
            Effect::Hot,
        ));
    }
    fields
}

fn memory_matches(declared: Option<u64>, observed: Option<u64>) -> bool {
    match (declared, observed) {
        (Some(declared), Some(observed)) => declared / PAGE * PAGE == observed / PAGE * PAGE,
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_rounding_and_cpu_precision_are_not_drift() {
        let declared = Limits {
            memory: Some(64 * 1024 * 1024 + 100),
            cpus: Some(0.5),
            pids: Some(100),
        };
        let observed = Limits {
            memory: Some(64 * 1024 * 1024),
            cpus: Some(0.5000001),
            pids: Some(100),
        };
        assert!(limits(&declared, &observed).is_empty());
        let unlimited = Limits::default();
        let fields = limits(&declared, &unlimited);
        let paths: Vec<_> = fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["resources.memory", "resources.cpus", "resources.pids"]
        );
        assert_eq!(fields[0].old, serde_json::Value::Null);
        assert_eq!(fields[2].new, 100);
    }
}
