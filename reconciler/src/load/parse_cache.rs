//! What each manifest file parsed to, kept between loads of the same source.
//!
//! The controller loads its whole source again for every save, and a save usually
//! changes one file of many. Parsing (position tree, strict deserialisation) is most of
//! a load, so the controller keeps a [`ParseCache`]: a file whose path and content are
//! those of the last load reuses that load's documents, resources and diagnostics
//! (every `file:line:col` stays exact, since they depend on nothing else). The content
//! is compared whole, not by modification time and size, which a write within the
//! same clock tick with the same length would leave unchanged; the file is read for
//! the revision's content hash anyway.
//!
//! Only parsing is cached: the checks across documents ([`crate::validate`]) and the
//! graph run over the whole revision at every load, so a revision is accepted or
//! rejected exactly as an uncached load would. One-shot commands load without a cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::manifest::{Declaration, Diagnostic, LoadedResource};
use crate::model::PrunePolicy;

/// What one file parsed to.
#[derive(Debug, Clone, Default)]
pub(super) struct ParsedFile {
    pub resources: Vec<LoadedResource>,
    pub declarations: Vec<Declaration>,
    pub diagnostics: Vec<Diagnostic>,
    pub policies: Vec<PrunePolicy>,
}

/// The last load's files, by path (see the module docs).
#[derive(Debug, Default)]
pub struct ParseCache {
    files: HashMap<PathBuf, (String, ParsedFile)>,
    /// The files read by the load in progress; the rest are dropped when it ends.
    seen: Vec<PathBuf>,
    hits: usize,
}

impl ParseCache {
    pub fn new() -> ParseCache {
        ParseCache::default()
    }

    /// What `file` with content `text` parsed to last time, if it had this content.
    pub(super) fn get(&mut self, file: &Path, text: &str) -> Option<ParsedFile> {
        self.seen.push(file.to_owned());
        let (cached, parsed) = self.files.get(file)?;
        (cached == text).then(|| {
            self.hits += 1;
            parsed.clone()
        })
    }

    /// Keeps what `file` with content `text` parsed to; returns a copy for this load.
    pub(super) fn insert(&mut self, file: &Path, text: &str, parsed: ParsedFile) -> ParsedFile {
        // Hashed once here, each resource's spec hash comes with every later copy.
        for loaded in &parsed.resources {
            let _ = loaded.resource.spec_hash();
        }
        self.files
            .insert(file.to_owned(), (text.to_owned(), parsed.clone()));
        parsed
    }

    /// Ends a load: forgets the files it did not read (removed, renamed). Returns how
    /// many files it took from the cache.
    pub(super) fn finish(&mut self) -> usize {
        let seen: std::collections::HashSet<PathBuf> =
            std::mem::take(&mut self.seen).into_iter().collect();
        self.files.retain(|path, _| seen.contains(path));
        std::mem::take(&mut self.hits)
    }

    /// How many files it holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}
