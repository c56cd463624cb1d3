//! Load: read every manifest below a path into typed resources, strictly.
//!
//! Steps, in order:
//! 1. Collect `*.yaml`/`*.yml` files below the path ([`files`]: sorted, hidden entries
//!    skipped, the tree never left through a symlink, regular files only, sizes bounded).
//! 2. Split each file into documents ([`documents`]), as slices of its text with their
//!    line numbers, in one linear pass. Files are read and parsed on several threads
//!    (`parallel.rs`), the results kept in the walk's order.
//! 3. Parse each document into a tree of positioned nodes (`manifest::tree`: nesting, alias and
//!    tag limits, duplicate keys), read its `kind`, and deserialise it into that kind's
//!    strict type straight from the tree (the kind's registration, with
//!    [`crate::manifest::de`]), reporting every error of the document with file, line,
//!    column and field path ([`parse`]).
//! 4. Run the cross-document checks of [`crate::validate`] (names, references,
//!    uniqueness, host globs, per-kind limits) and the cycle check of [`crate::graph`].
//! 5. Pick the `PrunePolicy` document that applies to the host, if any (at most one
//!    may): a setting of the revision (`crate::model::PrunePolicy`), not a resource.
//!
//! Every error of every file is collected; a revision with any error is rejected whole and
//! nothing downstream runs, so the host keeps its last good revision.

mod documents;
mod files;
mod parallel;
mod parse;
mod parse_cache;
mod paths;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use crate::manifest::{
    Declaration, Diagnostic, LoadedResource, MAX_DEPTH, MAX_DOCUMENT_NODES, MAX_EXPANDED_NODES,
    RevisionErrors, SourceDocument, render_key, sanitize,
};
pub use files::{MAX_FILE_BYTES, MAX_REVISION_BYTES};
pub use parse::MAX_ERRORS_PER_DOCUMENT;
pub use parse_cache::ParseCache;
pub use paths::{load_revision_paths, load_revision_paths_cached};

use crate::graph::DependencyGraph;
use crate::model::{PRUNE_POLICY_KIND, PrunePolicy, Resource};
use parse_cache::ParsedFile;

/// A loaded, validated set of manifests.
#[derive(Debug, Clone)]
pub struct Revision {
    /// A content hash for a plain directory (`sha256:…`), or a git commit.
    pub id: String,
    pub resources: Vec<Arc<Resource>>,
    pub graph: DependencyGraph,
    /// The `PrunePolicy` document that applies to this host, if the revision has one.
    pub prune_policy: Option<Arc<PrunePolicy>>,
}

/// Everything read from the manifests, before the cross-document checks.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Every document that could be read as a resource, damaged or not.
    pub resources: Vec<LoadedResource>,
    /// The kind and name of every document that has one, with errors or not.
    pub declarations: Vec<Declaration>,
    pub diagnostics: Vec<Diagnostic>,
    /// A content hash of the manifests (`sha256:…`).
    pub digest: String,
    /// Every `PrunePolicy` document read cleanly, for any host.
    pub policies: Vec<PrunePolicy>,
}

/// Loads, validates and builds the graph for the manifests under `path`. `host` selects
/// which resources apply here (see [`crate::validate::applies_to_host`]).
pub fn load_revision(path: &Path, host: &str) -> Result<Revision, RevisionErrors> {
    load_paths(&[path], host)
}

/// Like [`load_revision`], for several paths that together form one revision.
pub fn load_paths(paths: &[&Path], host: &str) -> Result<Revision, RevisionErrors> {
    load_paths_cached(paths, host, None)
}

/// [`load_paths`], reusing what `cache` kept of files that did not change since its last
/// load (see [`ParseCache`]); the result is the same as without it.
pub fn load_paths_cached(
    paths: &[&Path],
    host: &str,
    cache: Option<&mut ParseCache>,
) -> Result<Revision, RevisionErrors> {
    let timer = std::time::Instant::now();
    let Loaded {
        resources,
        declarations,
        mut diagnostics,
        digest,
        policies,
    } = read_paths_cached(paths, cache);
    let read = timer.elapsed();
    let selected = crate::validate::validate(&resources, &declarations, host, &mut diagnostics);
    let validated = timer.elapsed();
    let prune_policy = prune_policy_for(policies, host, &mut diagnostics);
    let graph = match DependencyGraph::build(&selected) {
        Ok(graph) => Some(graph),
        Err(cycle) => {
            diagnostics.push(cycle.diagnostic(&selected));
            None
        }
    };
    tracing::debug!(
        read_ms = read.as_secs_f64() * 1e3,
        validated_ms = validated.as_secs_f64() * 1e3,
        graph_ms = timer.elapsed().as_secs_f64() * 1e3,
        "load timings"
    );
    match graph {
        Some(graph) if diagnostics.is_empty() => Ok(Revision {
            id: digest,
            resources: selected.into_iter().map(|l| Arc::new(l.resource)).collect(),
            graph,
            prune_policy: prune_policy.map(Arc::new),
        }),
        _ => {
            diagnostics.sort();
            diagnostics.dedup();
            Err(RevisionErrors { diagnostics })
        }
    }
}

/// The one `PrunePolicy` of `policies` that applies to `host`: a second one is an error
/// (which of two contradicting documents wins would otherwise be a matter of file names).
fn prune_policy_for(
    policies: Vec<PrunePolicy>,
    host: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<PrunePolicy> {
    let mut chosen: Option<PrunePolicy> = None;
    for policy in policies {
        let at = |message: String| Diagnostic {
            file: policy.origin.file.clone(),
            line: policy.origin.line,
            column: 1,
            field: None,
            message,
        };
        match crate::validate::applies_to_host(policy.metadata.host.as_deref(), host) {
            Ok(false) => {}
            Err(message) => diagnostics.push(Diagnostic {
                field: Some("metadata.host".into()),
                ..at(message)
            }),
            Ok(true) => match &chosen {
                Some(first) => diagnostics.push(at(format!(
                    "a second {PRUNE_POLICY_KIND} for host {}; {} already applies to it: keep one",
                    crate::model::quoted(host),
                    first.describe()
                ))),
                None => chosen = Some(policy),
            },
        }
    }
    chosen
}

/// Reads and deserialises every document under `path`.
pub fn read_tree(path: &Path) -> Loaded {
    read_paths(&[path])
}

/// Reads and deserialises every document under each of `paths` (one revision).
pub fn read_paths(paths: &[&Path]) -> Loaded {
    read_paths_cached(paths, None)
}

/// [`read_paths`], with the files that did not change since the last load taken from
/// `cache`.
fn read_paths_cached(paths: &[&Path], mut cache: Option<&mut ParseCache>) -> Loaded {
    let mut loaded = Loaded::default();
    let mut hasher = Sha256::new();
    let mut seen = HashSet::new();
    let mut total: u64 = 0;
    for &path in paths {
        let before = loaded.diagnostics.len();
        let files = files::collect(path, &mut loaded.diagnostics);
        if files.is_empty() && loaded.diagnostics.len() == before {
            loaded.diagnostics.push(files::file_error(
                path,
                format!(
                    "no *.yaml or *.yml manifests found: an empty source is refused, and the \
                     host keeps what it runs; to delete everything gitvisor manages here, \
                     declare a {PRUNE_POLICY_KIND} with deleteUndeclared: true instead"
                ),
            ));
        }
        // Read (and, without a cache to consult first, parsed) on several threads.
        for parallel::ReadFile { file, read, parsed } in parallel::read_all(files, cache.is_none())
        {
            let (id, text) = match read.unwrap_or_else(|| files::read(&file)) {
                Ok(read) => read,
                Err(diagnostic) => {
                    loaded.diagnostics.push(diagnostic);
                    continue;
                }
            };
            if !seen.insert(id) {
                continue;
            }
            total += text.len() as u64;
            if total > MAX_REVISION_BYTES {
                loaded.diagnostics.push(files::file_error(
                    &file,
                    format!(
                        "the manifests add up to more than {} MiB; not reading further",
                        MAX_REVISION_BYTES >> 20
                    ),
                ));
                break;
            }
            let relative = file.strip_prefix(path).unwrap_or(&file);
            hasher.update(relative.to_string_lossy().as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
            let parsed = match (cache.as_deref_mut(), parsed) {
                (Some(cache), _) => match cache.get(&file, &text) {
                    Some(parsed) => parsed,
                    None => cache.insert(&file, &text, read_file(&file, &text)),
                },
                (None, Some(parsed)) => parsed,
                (None, None) => read_file(&file, &text),
            };
            loaded.resources.extend(parsed.resources);
            loaded.declarations.extend(parsed.declarations);
            loaded.diagnostics.extend(parsed.diagnostics);
            loaded.policies.extend(parsed.policies);
        }
    }
    if let Some(cache) = cache {
        let reused = cache.finish();
        tracing::debug!(reused, files = cache.len(), "parse cache");
    }
    let digest = hasher.finalize();
    let id = digest[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    loaded.digest = format!("sha256:{id}");
    loaded
}

/// What the documents of `file` (its content `text`) parse to.
fn read_file(file: &Path, text: &str) -> ParsedFile {
    let mut loaded = ParsedFile::default();
    for slice in documents::split(text) {
        let outcome = parse::document(
            file,
            &text[slice.range.clone()],
            slice.start_line,
            slice.first_line,
        );
        loaded.diagnostics.extend(outcome.diagnostics);
        loaded.declarations.extend(outcome.declaration);
        loaded.policies.extend(outcome.policy);
        if let (Some(resource), Some(source)) = (outcome.resource, outcome.source) {
            loaded.resources.push(LoadedResource {
                resource,
                source,
                damaged: outcome.damaged,
            });
        }
    }
    loaded
}
