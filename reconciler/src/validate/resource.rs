//! Rules about one resource on its own: the `gitvisor.dev/` annotations of its envelope
//! here, then its kind's own rules (the limits of the system it becomes: IFNAMSIZ, LVM
//! names, MTU range; one-of fields; addresses the kernel refuses or merges), which live in
//! the kind's driver folder and are reached through its registration's `check`.

use crate::drivers::registry;
use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::{ADOPT_ANNOTATION, Kind, OVERCOMMIT_ANNOTATION, quoted};

/// The annotation prefix gitvisor owns: every key under it must be one it knows.
const ANNOTATION_PREFIX: &str = "gitvisor.dev/";
const KNOWN_ANNOTATIONS: [&str; 2] = [ADOPT_ANNOTATION, OVERCOMMIT_ANNOTATION];

/// The envelope's rules (the `gitvisor.dev/` annotations), then the kind's own, through
/// its registration.
pub(super) fn check(item: &LoadedResource, diagnostics: &mut Vec<Diagnostic>) {
    check_annotations(item, diagnostics);
    let kind = item.resource.kind();
    if let Some(registration) = registry().iter().find(|r| r.kind == kind) {
        (registration.check)(item, diagnostics);
    }
}

/// Keys under `gitvisor.dev/` must be known, with values gitvisor understands.
fn check_annotations(item: &LoadedResource, diagnostics: &mut Vec<Diagnostic>) {
    for (key, value) in &item.resource.metadata.annotations {
        if !key.starts_with(ANNOTATION_PREFIX) {
            continue;
        }
        let mut field = String::from("metadata.annotations");
        crate::manifest::render_key(&mut field, key);
        if !KNOWN_ANNOTATIONS.contains(&key.as_str()) {
            diagnostics.push(item.key_diagnostic(
                &field,
                format!(
                    "unknown annotation {}: the {ANNOTATION_PREFIX} prefix is gitvisor's own, and it knows {}",
                    quoted(key),
                    KNOWN_ANNOTATIONS.join(", ")
                ),
            ));
        } else if value != "true" && value != "false" {
            diagnostics.push(item.diagnostic(
                &field,
                format!("{key} must be \"true\" or \"false\", not {}", quoted(value)),
            ));
        } else if key == OVERCOMMIT_ANNOTATION && item.resource.kind() != Kind::VirtualMachine {
            diagnostics.push(item.key_diagnostic(
                &field,
                format!("{OVERCOMMIT_ANNOTATION} is about a guest's memory: it applies to a VirtualMachine only"),
            ));
        }
    }
}
