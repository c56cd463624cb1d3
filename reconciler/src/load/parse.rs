//! One document to one typed resource, reporting every error it has.
//!
//! Steps: build the position tree (`crate::manifest::tree`; syntax, depth, alias, tag and
//! duplicate-key errors), read `kind`, then deserialise the kind's strict document type
//! from the tree (the kind's registration, with [`crate::manifest::de`]). serde stops at
//! the first error, so after each error the node it came from is removed and the
//! document is read again, until it reads cleanly:
//! every unknown field and every bad value is reported, each once. A "missing field" that
//! only follows from a removed bad value is not reported again; the mapping that misses it
//! is removed in turn, so its siblings are still checked.
//!
//! A document with errors still yields what could be read of it: the resource without the
//! removed parts (marked damaged, with their field paths, so the validator checks the
//! rest without reporting what follows from the removal), or at least its kind, name and
//! host selector, so references to it do not turn into "not declared".

use std::path::Path;
use std::sync::Arc;

use serde::de::IgnoredAny;

use crate::drivers::registration;
use crate::manifest::de::{self, Removed};
use crate::manifest::tree::{self, NodeKind, Position, Tree};
use crate::manifest::{Declaration, Diagnostic, SourceDocument};
use crate::model::{
    Document, FieldLocator, Kind, Name, Origin, PRUNE_POLICY_KIND, PrunePolicy, PrunePolicySpec,
    Resource, ResourceId, Spec,
};

/// Most errors reported for one document; past it the document's report is cut short.
pub const MAX_ERRORS_PER_DOCUMENT: usize = 50;

/// What one document yielded.
pub struct Outcome {
    /// The resource, without the parts that had errors (see `damaged`).
    pub resource: Option<Resource>,
    /// Field paths of the parts removed after errors (empty: the document is clean; `""`:
    /// an error about the whole document).
    pub damaged: Vec<String>,
    pub declaration: Option<Declaration>,
    pub source: Option<Arc<SourceDocument>>,
    pub diagnostics: Vec<Diagnostic>,
    /// A `PrunePolicy` document (a setting of the revision, not a resource), read cleanly.
    pub policy: Option<PrunePolicy>,
}

fn diagnostic(file: &Path, at: Position, path: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        line: at.line,
        column: at.column,
        field: (!path.is_empty()).then(|| path.to_owned()),
        message,
    }
}

/// Parses the document `text`, which starts on line `start_line` of `file` and has its
/// first content on `first_line`.
pub fn document(file: &Path, text: &str, start_line: usize, first_line: usize) -> Outcome {
    let parsed = tree::parse(text, start_line);
    let mut diagnostics: Vec<Diagnostic> = parsed
        .errors
        .into_iter()
        .map(|e| diagnostic(file, e.at, &e.path, e.message))
        .collect();
    let Some(tree) = parsed.tree else {
        return Outcome {
            resource: None,
            damaged: Vec::new(),
            declaration: None,
            source: None,
            diagnostics,
            policy: None,
        };
    };
    let mut origin = Origin {
        file: file.to_owned(),
        line: first_line,
        fields: None,
    };
    let document_start = Position {
        line: first_line,
        column: 1,
    };
    let root = tree.resolve(tree.root());
    if !matches!(tree.node(root).kind, NodeKind::Mapping(_)) {
        diagnostics.push(diagnostic(
            file,
            document_start,
            "",
            "expected a mapping with apiVersion, kind, metadata and spec".into(),
        ));
        return Outcome {
            resource: None,
            damaged: Vec::new(),
            declaration: None,
            source: None,
            diagnostics,
            policy: None,
        };
    }
    let mut removed = Removed::new();
    let is_policy = tree
        .get(root, "kind")
        .is_some_and(|entry| tree.scalar(entry.value) == Some(PRUNE_POLICY_KIND));
    if is_policy {
        return prune_policy(file, &tree, origin, diagnostics);
    }
    let kind = match tree.get(root, "kind") {
        None => None,
        Some(entry) => {
            let at = tree.node(entry.value).at;
            let kind = match tree.scalar(entry.value) {
                Some(text) => text.parse::<Kind>(),
                None => Err("expected a string".to_owned()),
            };
            match kind {
                Ok(kind) => Some(kind),
                Err(message) => {
                    diagnostics.push(diagnostic(file, at, "kind", message));
                    // Already reported: the envelope check below must not repeat it.
                    removed.insert(entry.value);
                    None
                }
            }
        }
    };
    let mut check = |typed: &mut dyn FnMut(&Removed) -> Result<(), de::Error>| {
        collect_errors(file, &tree, &mut removed, &mut diagnostics, typed)
    };
    let mut resource = None;
    match kind {
        None => {
            check(&mut |removed| de::from_tree::<Document<IgnoredAny>>(&tree, removed).map(drop))
        }
        Some(kind) => {
            let mut read = |removed: &Removed| -> Result<(), de::Error> {
                resource = Some(typed(kind, &tree, removed)?);
                Ok(())
            };
            check(&mut read);
        }
    }
    let declaration = kind.and_then(|kind| declaration(&tree, kind, origin.clone()));
    let source = Arc::new(SourceDocument::new(tree, first_line));
    origin.fields = Some(FieldLocator(source.clone()));
    let resource = resource.map(|(metadata, spec)| Resource {
        origin,
        ..Resource::new(metadata, spec)
    });
    let damaged = diagnostics
        .iter()
        .map(|d| d.field.clone().unwrap_or_default())
        .collect();
    Outcome {
        resource,
        damaged,
        declaration,
        source: Some(source),
        diagnostics,
        policy: None,
    }
}

/// A `PrunePolicy` document: read strictly like a resource, but kept apart from them (it
/// has no driver, no state and no place in the graph).
fn prune_policy(
    file: &Path,
    tree: &Tree,
    origin: Origin,
    mut diagnostics: Vec<Diagnostic>,
) -> Outcome {
    let mut removed = Removed::new();
    let mut read = None;
    collect_errors(file, tree, &mut removed, &mut diagnostics, &mut |removed| {
        read = Some(de::from_tree::<Document<PrunePolicySpec>>(tree, removed)?);
        Ok(())
    });
    let policy = read
        .filter(|_| diagnostics.is_empty())
        .map(|doc| PrunePolicy {
            metadata: doc.metadata,
            spec: doc.spec,
            origin,
        });
    Outcome {
        resource: None,
        damaged: Vec::new(),
        declaration: None,
        source: None,
        diagnostics,
        policy,
    }
}

/// Reads the document as `kind`'s document type, through the kind's registration. A
/// kind that parsed is registered, so `None` is only a kind registered with the model
/// but not with the drivers: reported on the whole document.
fn typed(
    kind: Kind,
    tree: &Tree,
    removed: &Removed,
) -> Result<(crate::model::Metadata, Spec), de::Error> {
    match registration(kind) {
        Some(registration) => registration.read_document(tree, removed),
        None => Err(de::Error {
            message: format!("kind {kind} has no driver registered in this build"),
            origin: Some(de::Origin {
                node: tree.root(),
                at: tree.node(tree.root()).at,
                path: "kind".to_owned(),
            }),
            missing_field: None,
        }),
    }
}

/// Runs `read` until it succeeds, recording each error and removing its node.
fn collect_errors(
    file: &Path,
    tree: &Tree,
    removed: &mut Removed,
    diagnostics: &mut Vec<Diagnostic>,
    read: &mut dyn FnMut(&Removed) -> Result<(), de::Error>,
) {
    let root = tree.root();
    let mut reported = 0;
    loop {
        let err = match read(removed) {
            Ok(()) => return,
            Err(err) => err,
        };
        let Some(origin) = err.origin else {
            return;
        };
        let follows_from_removal = err
            .missing_field
            .is_some_and(|field| removed_field(tree, removed, origin.node, field));
        if !follows_from_removal {
            if reported == MAX_ERRORS_PER_DOCUMENT {
                diagnostics.push(diagnostic(
                    file,
                    origin.at,
                    "",
                    format!(
                        "more than {MAX_ERRORS_PER_DOCUMENT} errors in this document; the rest are not shown"
                    ),
                ));
                return;
            }
            reported += 1;
            diagnostics.push(diagnostic(file, origin.at, &origin.path, err.message));
        }
        if origin.node == root || !removed.insert(origin.node) {
            return;
        }
    }
}

/// Whether the mapping `node` has an entry `field` that was removed after an error (or
/// dropped by the tree builder).
fn removed_field(tree: &Tree, removed: &Removed, node: usize, field: &str) -> bool {
    match &tree.node(tree.resolve(node)).kind {
        NodeKind::Mapping(entries) => entries.iter().any(|e| {
            tree.scalar(e.key) == Some(field)
                && [e.key, e.value].iter().any(|&n| {
                    removed.contains(&n) || removed.contains(&tree.resolve(n)) || tree.dropped(n)
                })
        }),
        _ => false,
    }
}

/// The kind, name and host selector of a document, if they are readable.
fn declaration(tree: &Tree, kind: Kind, origin: Origin) -> Option<Declaration> {
    let metadata = tree.get(tree.root(), "metadata")?.value;
    let name = tree.scalar(tree.get(metadata, "name")?.value)?;
    let name = Name::parse(name).ok()?;
    let host = tree
        .get(metadata, "host")
        .and_then(|entry| tree.scalar(entry.value))
        .map(str::to_owned);
    Some(Declaration {
        id: ResourceId::new(kind, name),
        host,
        origin,
    })
}
