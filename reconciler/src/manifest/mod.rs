//! Manifests as located text: each YAML document as a tree of positioned nodes
//! (`tree`), field paths resolved to lines and columns (`source_map`), the
//! [`Diagnostic`]s that point there, and the loaded documents ([`LoadedResource`],
//! [`Declaration`]) that the cross-document checks read.
//!
//! # Why a module of its own
//!
//! [`crate::load`] reads files into these and then runs [`crate::validate`] and
//! [`crate::graph`] on them; those two only need the documents, not the loader. Keeping
//! the documents here, below all three, keeps the engine's module graph acyclic
//! (`load → validate → manifest`, `load → graph → manifest`); `load` re-exports them, so
//! `crate::load::Diagnostic` and friends keep working.

pub(crate) mod de;
mod diagnostic;
mod document;
pub(crate) mod source_map;
pub(crate) mod tree;

pub use diagnostic::{Diagnostic, RevisionErrors, sanitize};
#[cfg(test)]
pub(crate) use document::test_origin;
pub use document::{Declaration, LoadedResource, SourceDocument};
pub use source_map::render_key;
pub use tree::{MAX_DEPTH, MAX_DOCUMENT_NODES, MAX_EXPANDED_NODES};
