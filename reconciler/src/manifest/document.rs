//! One manifest document as the loader leaves it for the cross-document checks: the
//! resource, the parsed document it came from (so [`crate::validate`] and
//! [`crate::graph`] can point at a field's line and column), and its declaration.

use std::path::Path;
use std::sync::Arc;

use super::diagnostic::Diagnostic;
use super::source_map;
use super::tree::Tree;
use crate::model::{Origin, Resource, ResourceId};

/// A parsed document, kept for pointing at its fields after loading.
#[derive(Debug, Clone)]
pub struct SourceDocument {
    tree: Tree,
    /// 1-based line of the document's first non-blank, non-comment line.
    pub first_line: usize,
}

impl SourceDocument {
    /// `tree`, whose first non-blank, non-comment line is `first_line` (1-based).
    pub(crate) fn new(tree: Tree, first_line: usize) -> Self {
        SourceDocument { tree, first_line }
    }

    /// A diagnostic pointing at the value of `field` in this document (at the key of its
    /// deepest present ancestor when absent; an empty `field` means the document).
    pub fn diagnostic(&self, file: &Path, field: &str, message: impl Into<String>) -> Diagnostic {
        self.located(file, field, false, message.into())
    }

    /// Like [`Self::diagnostic`], pointing at the key of `field` rather than its value.
    pub fn key_diagnostic(
        &self,
        file: &Path,
        field: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.located(file, field, true, message.into())
    }

    fn located(&self, file: &Path, field: &str, key: bool, message: String) -> Diagnostic {
        let (line, column) = if field.is_empty() {
            (self.first_line, 1)
        } else {
            let at = source_map::locate(&self.tree, field, key);
            (at.line, at.column)
        };
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            field: (!field.is_empty()).then(|| field.to_owned()),
            message,
        }
    }
}

impl crate::model::LocateField for SourceDocument {
    fn locate(&self, field: &str) -> (usize, usize) {
        let at = self.diagnostic(Path::new(""), field, "");
        (at.line, at.column)
    }
}

/// The origin of a resource declared by `text` (one YAML document from line 1) in
/// `file`, able to place its fields as the loader's would: for driver tests that build
/// the resource in code and check where a plan-time finding points.
#[cfg(test)]
pub(crate) fn test_origin(file: &Path, text: &str) -> Origin {
    let tree = super::tree::parse(text, 1)
        .tree
        .expect("the test document parses");
    Origin {
        file: file.to_owned(),
        line: 1,
        fields: Some(crate::model::FieldLocator(Arc::new(SourceDocument::new(
            tree, 1,
        )))),
    }
}

/// A resource with the document it came from, for error positions.
#[derive(Debug, Clone)]
pub struct LoadedResource {
    pub resource: Resource,
    pub source: Arc<SourceDocument>,
    /// Field paths of the parts of the document that had errors and were left out (already
    /// reported); empty for a clean document. A revision with a damaged resource is
    /// rejected, but the rest of it is still checked.
    pub damaged: Vec<String>,
}

impl LoadedResource {
    /// A diagnostic pointing at `field` of this resource's document.
    pub fn diagnostic(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        self.source
            .diagnostic(&self.resource.origin.file, field, message)
    }

    /// `file:line:col` of `field` in this resource's document, for a message about two
    /// declarations that names the other's place.
    pub fn place(&self, field: &str) -> String {
        let at = self.diagnostic(field, "");
        format!("{}:{}:{}", at.file.display(), at.line, at.column)
    }

    /// Whether a finding about `field` may only follow from a part left out after an error
    /// (the part itself, one of its ancestors or descendants).
    pub fn is_damaged(&self, field: Option<&str>) -> bool {
        let Some(field) = field else {
            return self.damaged.iter().any(String::is_empty);
        };
        let within = |inner: &str, outer: &str| {
            outer.is_empty()
                || inner == outer
                || inner
                    .strip_prefix(outer)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        };
        self.damaged
            .iter()
            .any(|d| within(field, d) || within(d, field))
    }

    /// A diagnostic pointing at the key of `field` (for keys that are wrong themselves).
    pub fn key_diagnostic(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        self.source
            .key_diagnostic(&self.resource.origin.file, field, message)
    }
}

/// A document's kind and name, readable even when the document has errors.
#[derive(Debug, Clone)]
pub struct Declaration {
    pub id: ResourceId,
    pub host: Option<String>,
    pub origin: Origin,
}
