//! The `MarkerFile` spec: one file's text, and the marker file it may follow.

use gitvisor::model::{Kind, KindSpec, Name, Reference, ResourceId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The kind, ranked after every built-in kind.
pub const KIND: Kind = Kind::new("MarkerFile", 1000);

/// A file gitvisor writes under `<run dir>/markers/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MarkerFileSpec {
    /// The file's text.
    pub text: String,
    /// Another MarkerFile written before this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Name>,
}

impl KindSpec for MarkerFileSpec {
    const KIND: Kind = KIND;

    fn references(&self) -> Vec<Reference> {
        self.after
            .iter()
            .map(|name| Reference {
                target: ResourceId::new(KIND, name.clone()),
                path: "spec.after".into(),
            })
            .collect()
    }
}
