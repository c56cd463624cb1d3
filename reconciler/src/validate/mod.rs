//! Validate: the rules that span fields or documents, run after every document has
//! deserialised (which already checked names, sizes, CIDRs and unknown fields).
//!
//! In order: host selection (a bad glob is an error; only the resources that select this
//! host are checked against one another), per-resource rules ([`resource`]: annotations,
//! then the kind's own rules through its registration's `check`, such as IFNAMSIZ, one-of
//! fields, addresses the kernel refuses), duplicate names per kind among the selected
//! resources (the same name for two hosts is the normal per-host variant, not a
//! duplicate), references (a reference must name a resource declared for this host; one
//! whose document has errors counts as declared, so its own errors are not echoed as "not
//! declared"), then every registration's `check_revision` on the selected resources: the
//! rules that span documents (unique ports, addresses and MACs, published host ports,
//! VLANs of workloads on bridges that filter them) are their kinds', in their folders.
//! This module knows no kind: a new kind brings its rules with its registration.
//! Every finding becomes a [`Diagnostic`] pointing at the offending field; one about two
//! declarations names the other's place.

mod resource;

use std::collections::BTreeMap;

use globset::Glob;

use crate::drivers::registry;
use crate::manifest::{Declaration, Diagnostic, LoadedResource};
use crate::model::ResourceId;

/// Whether a resource with `metadata.host` = `selector` applies on `host`. No selector: every
/// host. A selector is a hostname or a glob (`nuc*`, `rack1-{a,b}`).
pub fn applies_to_host(selector: Option<&str>, host: &str) -> Result<bool, String> {
    match selector {
        None => Ok(true),
        Some(pattern) => Glob::new(pattern)
            .map(|glob| glob.compile_matcher().is_match(host))
            .map_err(|err| format!("invalid host glob {}: {err}", crate::model::quoted(pattern))),
    }
}

/// Checks `loaded` (every document that could be read, damaged or not; `declarations`
/// also has the kind and name of those that could not), appends findings to
/// `diagnostics`, and returns the resources that apply to `host`. A finding on a damaged
/// resource that may only follow from its left-out parts is not reported.
pub fn validate(
    loaded: &[LoadedResource],
    declarations: &[Declaration],
    host: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<LoadedResource> {
    let mut selected: Vec<&LoadedResource> = Vec::new();
    let mut elsewhere: BTreeMap<ResourceId, &LoadedResource> = BTreeMap::new();
    for item in loaded {
        let mut found = Vec::new();
        resource::check(item, &mut found);
        diagnostics.extend(
            found
                .into_iter()
                .filter(|d| !item.is_damaged(d.field.as_deref())),
        );
        match applies_to_host(item.resource.metadata.host.as_deref(), host) {
            Ok(true) => selected.push(item),
            Ok(false) => {
                elsewhere.entry(item.resource.id()).or_insert(item);
            }
            Err(message) => diagnostics.push(item.diagnostic("metadata.host", message)),
        }
    }
    let mut declared: BTreeMap<ResourceId, &LoadedResource> = BTreeMap::new();
    let mut unique_selected = Vec::new();
    for item in selected {
        let id = item.resource.id();
        if let Some(first) = declared.get(&id) {
            diagnostics.push(item.diagnostic(
                "metadata.name",
                format!(
                    "duplicate {id} for host {host}: already declared at {}",
                    first.place("metadata.name")
                ),
            ));
            continue;
        }
        declared.insert(id, item);
        unique_selected.push(item);
    }
    for item in &unique_selected {
        for reference in item.resource.references() {
            if declared.contains_key(&reference.target) {
                continue;
            }
            let message = if let Some(target) = elsewhere.get(&reference.target) {
                format!(
                    "references {} which is declared for host {:?} (at {}), not for this host ({host})",
                    reference.target,
                    target.resource.metadata.host.as_deref().unwrap_or_default(),
                    target.place("metadata.host")
                )
            } else if declarations.iter().any(|d| d.id == reference.target) {
                // Declared by a document with errors of its own, reported there.
                continue;
            } else {
                format!("references {} which is not declared", reference.target)
            };
            diagnostics.push(item.diagnostic(&reference.path, message));
        }
    }
    for registration in registry() {
        (registration.check_revision)(&unique_selected, diagnostics);
    }
    unique_selected.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_globs() {
        assert!(applies_to_host(None, "a").unwrap());
        assert!(applies_to_host(Some("nuc*"), "nuc1").unwrap());
        assert!(!applies_to_host(Some("nuc*"), "pi1").unwrap());
        assert!(applies_to_host(Some("{a,b}"), "b").unwrap());
        assert!(applies_to_host(Some("[a"), "a").is_err());
    }
}
