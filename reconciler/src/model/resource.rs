//! A loaded, typed resource and the references it makes to others.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ApiVersionTag, Kind, Metadata, ResourceId, Spec};

/// One manifest document of a known kind, as written. `kind` is checked by the loader
/// before this type is chosen, so it is carried as a plain string here.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document<S> {
    pub api_version: ApiVersionTag,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
}

/// Where a resource was declared.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based line of the document's first line.
    pub line: usize,
    /// Finds a field's line and column in the document, so a driver's plan-time refusal
    /// (a declared file missing on this host) points where a load error would. Absent for
    /// resources built in code.
    #[serde(skip)]
    pub fields: Option<FieldLocator>,
}

/// Two origins are the same place whatever can locate their fields.
impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file && self.line == other.line
    }
}

impl Eq for Origin {}

/// The line and column of a field path (`spec.boot.initrd`, `spec.disks[0].path`) in a
/// resource's document; the loader's source map implements it.
pub trait LocateField: Send + Sync {
    fn locate(&self, field: &str) -> (usize, usize);
}

/// A shared [`LocateField`], opaque in debug output (it holds the whole document).
#[derive(Clone)]
pub struct FieldLocator(pub Arc<dyn LocateField>);

impl fmt::Debug for FieldLocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FieldLocator")
    }
}

impl Origin {
    /// `file:line:col: field`, where `field` of this resource was declared: the shape of
    /// a load error, for a finding about it made later (at plan time, against the host).
    /// Without a file (built in code), just the field.
    pub fn place(&self, field: &str) -> String {
        if self.file.as_os_str().is_empty() {
            return field.to_owned();
        }
        let (line, column) = match &self.fields {
            Some(locator) => locator.0.locate(field),
            None => (self.line, 1),
        };
        format!("{}:{line}:{column}: {field}", self.file.display())
    }
}

/// A validated resource: what the rest of the pipeline works with.
#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    pub metadata: Metadata,
    pub spec: Spec,
    #[serde(skip)]
    pub origin: Origin,
    /// [`Resource::spec_hash`], computed once: the controller's targeted reconcile and
    /// every execution ask it of each declared resource, and a file the loader's parse
    /// cache reuses carries it over. The spec is never changed after loading.
    #[serde(skip)]
    pub(crate) spec_hash: std::sync::OnceLock<String>,
}

/// Two resources are the same declaration whatever was computed from them.
impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        self.metadata == other.metadata && self.spec == other.spec && self.origin == other.origin
    }
}

/// A reference from one resource to another, with the field path it was written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub target: ResourceId,
    /// Field path inside the document, e.g. `spec.disks[0].volume`.
    pub path: String,
}

impl Resource {
    /// A resource built in code rather than loaded from a file (no origin).
    pub fn new(metadata: Metadata, spec: Spec) -> Self {
        Resource {
            metadata,
            spec,
            origin: Origin::default(),
            spec_hash: std::sync::OnceLock::new(),
        }
    }

    pub fn id(&self) -> ResourceId {
        ResourceId::new(self.spec.kind(), self.metadata.name.clone())
    }

    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    /// Every resource this one needs before it can exist: references in the spec, then
    /// `metadata.dependsOn`.
    pub fn references(&self) -> Vec<Reference> {
        let mut refs = self.spec.references();
        for (i, dep) in self.metadata.depends_on.iter().enumerate() {
            refs.push(Reference {
                target: dep.clone(),
                path: format!("metadata.dependsOn[{i}]"),
            });
        }
        refs
    }

    /// A stable hash of the declared spec, recorded in the state store as the
    /// last-applied hash. An error rather than the hash of nothing when the spec has no
    /// JSON form, so two such specs never look alike.
    pub fn spec_hash(&self) -> Result<String, serde_json::Error> {
        use sha2::{Digest, Sha256};
        if let Some(hash) = self.spec_hash.get() {
            return Ok(hash.clone());
        }
        let json = serde_json::to_vec(&self.spec)?;
        let digest = Sha256::digest(&json);
        let hash: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Ok(self.spec_hash.get_or_init(|| hash).clone())
    }
}
