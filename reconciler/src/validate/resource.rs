//! Rules about one resource on its own: the `gitvisor.dev/` annotations of its envelope
//! here, then its kind's own rules (the limits of the system it becomes: IFNAMSIZ, LVM
//! names, MTU range; one-of fields; addresses the kernel refuses or merges), which live in
//! the kind's driver folder and are reached through its registration's `check`.

use crate::drivers::{registration, registry};
use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::{ADOPT_ANNOTATION, quoted};

/// The annotation prefix gitvisor owns: every key under it must be one it knows.
const ANNOTATION_PREFIX: &str = "gitvisor.dev/";
/// The annotations of every kind's envelope; a kind's own are in its registration.
const ENVELOPE_ANNOTATIONS: [&str; 1] = [ADOPT_ANNOTATION];

/// The envelope's rules (the `gitvisor.dev/` annotations), then the kind's own, through
/// its registration.
pub(super) fn check(item: &LoadedResource, diagnostics: &mut Vec<Diagnostic>) {
    check_annotations(item, diagnostics);
    if let Some(registration) = registration(item.resource.kind()) {
        (registration.check)(item, diagnostics);
    }
}

/// Keys under `gitvisor.dev/` must be known (the envelope's, or a kind's), with values
/// gitvisor understands, and a kind's only on that kind.
fn check_annotations(item: &LoadedResource, diagnostics: &mut Vec<Diagnostic>) {
    let annotations = &item.resource.metadata.annotations;
    if !annotations
        .keys()
        .any(|key| key.starts_with(ANNOTATION_PREFIX))
    {
        // Most resources: no list of known annotations to build.
        return;
    }
    let known: Vec<&str> = ENVELOPE_ANNOTATIONS
        .into_iter()
        .chain(
            registry()
                .iter()
                .flat_map(|registration| registration.annotations)
                .map(|annotation| annotation.key),
        )
        .collect();
    let owner = |key: &str| {
        registry().iter().find_map(|registration| {
            registration
                .annotations
                .iter()
                .find(|annotation| annotation.key == key)
                .map(|annotation| (registration.kind, annotation.about))
        })
    };
    for (key, value) in annotations {
        if !key.starts_with(ANNOTATION_PREFIX) {
            continue;
        }
        let mut field = String::from("metadata.annotations");
        crate::manifest::render_key(&mut field, key);
        if !known.contains(&key.as_str()) {
            diagnostics.push(item.key_diagnostic(
                &field,
                format!(
                    "unknown annotation {}: the {ANNOTATION_PREFIX} prefix is gitvisor's own, and it knows {}",
                    quoted(key),
                    known.join(", ")
                ),
            ));
        } else if value != "true" && value != "false" {
            diagnostics.push(item.diagnostic(
                &field,
                format!("{key} must be \"true\" or \"false\", not {}", quoted(value)),
            ));
        } else if let Some((kind, about)) = owner(key)
            && item.resource.kind() != kind
        {
            diagnostics.push(item.key_diagnostic(
                &field,
                format!("{key} is about {about}: it applies to a {kind} only"),
            ));
        }
    }
}
