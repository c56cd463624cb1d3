//! Load: read every manifest below a path into typed resources, strictly.
//!
//! Steps, in order:
//! 1. Collect `*.yaml`/`*.yml` files below the path (sorted, hidden directories skipped).
//! 2. Split each file into documents ([`documents`]), keeping line numbers.
//! 3. Read each document's `kind`, then deserialise it into that kind's strict type; the
//!    leaf types validate themselves, so serde reports file, line, column and field path.
//! 4. Run the cross-document checks of [`crate::validate`] (names, references, duplicates,
//!    host globs, per-kind limits) and the cycle check of [`crate::graph`].
//!
//! Every error of every file is collected; a revision with any error is rejected whole and
//! nothing downstream runs, so the host keeps its last good revision.

mod diagnostic;
mod documents;
mod paths;
mod source_map;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

pub use diagnostic::{Diagnostic, RevisionErrors};
pub use documents::SourceDocument;
pub use paths::load_revision_paths;
pub use source_map::{locate, locate_key};

use crate::graph::DependencyGraph;
use crate::model::{
    BridgeSpec, ContainerSpec, Document, Kind, Origin, Resource, Spec, VirtualMachineSpec,
    VolumeSpec,
};

/// A loaded, validated set of manifests.
#[derive(Debug, Clone)]
pub struct Revision {
    /// A content hash for a plain directory (`sha256:…`), or a git commit.
    pub id: String,
    pub resources: Vec<Arc<Resource>>,
    pub graph: DependencyGraph,
}

/// A resource with the document it came from, for error positions.
#[derive(Debug, Clone)]
pub struct LoadedResource {
    pub resource: Resource,
    pub source: Arc<SourceDocument>,
}

impl LoadedResource {
    /// A diagnostic pointing at `field` of this resource's document.
    pub fn diagnostic(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        self.source
            .diagnostic(&self.resource.origin.file, field, message)
    }
}

/// Loads, validates and builds the graph for the manifests under `path`. `host` selects
/// which resources apply here (see [`crate::validate::applies_to_host`]).
pub fn load_revision(path: &Path, host: &str) -> Result<Revision, RevisionErrors> {
    let (loaded, mut diagnostics, digest) = read_tree(path);
    let selected = crate::validate::validate(&loaded, host, &mut diagnostics);
    let graph = match DependencyGraph::build(&selected) {
        Ok(graph) => Some(graph),
        Err(cycle) => {
            diagnostics.push(cycle.diagnostic(&selected));
            None
        }
    };
    match graph {
        Some(graph) if diagnostics.is_empty() => Ok(Revision {
            id: digest,
            resources: selected.into_iter().map(|l| Arc::new(l.resource)).collect(),
            graph,
        }),
        _ => {
            diagnostics.sort();
            diagnostics.dedup();
            Err(RevisionErrors { diagnostics })
        }
    }
}

/// Reads and deserialises every document under `path`; returns what loaded, the errors,
/// and the content digest of the tree.
pub fn read_tree(path: &Path) -> (Vec<LoadedResource>, Vec<Diagnostic>, String) {
    let mut loaded = Vec::new();
    let mut diagnostics = Vec::new();
    let mut hasher = Sha256::new();
    let files = match manifest_files(path) {
        Ok(files) => files,
        Err(diagnostic) => return (loaded, vec![diagnostic], String::new()),
    };
    if files.is_empty() {
        diagnostics.push(file_error(
            path,
            "no *.yaml or *.yml manifests found".into(),
        ));
    }
    for file in files {
        let text = match std::fs::read(&file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    diagnostics.push(file_error(&file, "not valid UTF-8".into()));
                    continue;
                }
            },
            Err(err) => {
                diagnostics.push(file_error(&file, format!("cannot read: {err}")));
                continue;
            }
        };
        let relative = file.strip_prefix(path).unwrap_or(&file);
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        for document in documents::split(&text) {
            let document = Arc::new(document);
            match parse_document(&file, &document) {
                Ok(resource) => loaded.push(LoadedResource {
                    resource,
                    source: document,
                }),
                Err(diagnostic) => diagnostics.push(diagnostic),
            }
        }
    }
    let digest = hasher.finalize();
    let id = digest[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    (loaded, diagnostics, format!("sha256:{id}"))
}

fn file_error(file: &Path, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        line: 1,
        column: 1,
        field: None,
        message,
    }
}

fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let metadata = std::fs::metadata(path)
        .map_err(|err| file_error(path, format!("cannot read manifests: {err}")))?;
    if metadata.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let mut pending = vec![path.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|err| file_error(&dir, format!("cannot list directory: {err}")))?;
        for entry in entries {
            let entry = entry.map_err(|err| file_error(&dir, format!("cannot list: {err}")))?;
            let entry_path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let file_type = std::fs::metadata(&entry_path)
                .map_err(|err| file_error(&entry_path, format!("cannot stat: {err}")))?;
            if file_type.is_dir() {
                pending.push(entry_path);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                files.push(entry_path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A syntax error from serde_yaml: its position is already in file coordinates (documents
/// are padded).
fn syntax_diagnostic(
    file: &Path,
    document: &SourceDocument,
    err: &serde_yaml::Error,
) -> Diagnostic {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((document.first_line, 1));
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        field: None,
        message: strip_position(&err.to_string()).to_owned(),
    }
}

/// Removes serde_yaml's trailing ` at line N column M`; the diagnostic carries it.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at)
            if message[at + 9..]
                .split(" column ")
                .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())) =>
        {
            &message[..at]
        }
        _ => message,
    }
}

/// A data error (wrong type, unknown field, invalid value) at a field path recorded by
/// serde_path_to_error; the position comes from the source map of the document.
fn data_diagnostic(
    file: &Path,
    document: &SourceDocument,
    err: serde_path_to_error::Error<serde_yaml::Error>,
) -> Diagnostic {
    let path = err.path().to_string();
    let inner = err.into_inner();
    let mut message = strip_position(&inner.to_string()).to_owned();
    // serde_yaml prefixes the (less precise) path it knows; ours replaces it.
    if let Some((prefix, rest)) = message.split_once(": ") {
        if !prefix.contains(' ') {
            message = rest.to_owned();
        }
    }
    let field = (path != "." && !path.is_empty()).then_some(path);
    let find = if message.starts_with("unknown field") {
        locate_key
    } else {
        locate
    };
    let (line, column) = field
        .as_deref()
        .and_then(|f| find(&document.text, f))
        .or_else(|| inner.location().map(|l| (l.line(), l.column())))
        .unwrap_or((document.first_line, 1));
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        field,
        message,
    }
}

fn parse_document(file: &Path, document: &SourceDocument) -> Result<Resource, Diagnostic> {
    // Syntax first: a document that is not YAML at all gets the parser's own position.
    let value: serde_yaml::Value = serde_yaml::from_str(&document.text)
        .map_err(|err| syntax_diagnostic(file, document, &err))?;
    let at = |field: &str, message: String| document.diagnostic(file, field, message);
    let mapping = value.as_mapping().ok_or_else(|| {
        at(
            "",
            "expected a mapping with apiVersion, kind, metadata and spec".into(),
        )
    })?;
    let kind = match mapping.get("kind") {
        None => return Err(at("", "missing field `kind`".into())),
        Some(serde_yaml::Value::String(kind)) => kind
            .parse::<Kind>()
            .map_err(|message| at("kind", message))?,
        Some(_) => return Err(at("kind", "expected a string".into())),
    };
    let origin = Origin {
        file: file.to_owned(),
        line: document.first_line,
    };
    fn typed<S: DeserializeOwned>(
        file: &Path,
        document: &SourceDocument,
    ) -> Result<Document<S>, Diagnostic> {
        let deserializer = serde_yaml::Deserializer::from_str(&document.text);
        serde_path_to_error::deserialize(deserializer)
            .map_err(|err| data_diagnostic(file, document, err))
    }
    let (metadata, spec) = match kind {
        Kind::Bridge => {
            let doc = typed::<BridgeSpec>(file, document)?;
            (doc.metadata, Spec::Bridge(doc.spec))
        }
        Kind::Volume => {
            let doc = typed::<VolumeSpec>(file, document)?;
            (doc.metadata, Spec::Volume(doc.spec))
        }
        Kind::Container => {
            let doc = typed::<ContainerSpec>(file, document)?;
            (doc.metadata, Spec::Container(doc.spec))
        }
        Kind::VirtualMachine => {
            let doc = typed::<VirtualMachineSpec>(file, document)?;
            (doc.metadata, Spec::VirtualMachine(doc.spec))
        }
    };
    Ok(Resource {
        metadata,
        spec,
        origin,
    })
}
