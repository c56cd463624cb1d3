//! The envelope every manifest shares: `apiVersion`, `kind`, `metadata`, `spec`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Kind, Name};

pub const API_VERSION: &str = "gitvisor.dev/v1alpha1";
/// Annotation that lets gitvisor take over an existing object it did not create.
pub const ADOPT_ANNOTATION: &str = "gitvisor.dev/adopt";
/// Annotation on a VirtualMachine that lets it declare more memory than the host has RAM
/// and swap for (the host overcommits: pages are backed only when the guest touches them).
pub const OVERCOMMIT_ANNOTATION: &str = "gitvisor.dev/overcommit";

/// `Kind/name`: how resources refer to one another (`dependsOn`) and how they are keyed in
/// the state store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    pub kind: Kind,
    pub name: Name,
}

impl ResourceId {
    pub fn new(kind: Kind, name: Name) -> Self {
        ResourceId { kind, name }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl FromStr for ResourceId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shown = super::quoted(text);
        let (kind, name) = text.split_once('/').ok_or_else(|| {
            format!("invalid reference {shown}: expected Kind/name, e.g. Volume/vm1-root")
        })?;
        Ok(ResourceId::new(kind.parse()?, Name::parse(name)?))
    }
}

impl Serialize for ResourceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ResourceId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ResourceRef".into()
    }

    /// The kinds in the pattern are the registered ones.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let kinds: Vec<&str> = Kind::all().into_iter().map(Kind::as_str).collect();
        let pattern = format!("^({})/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", kinds.join("|"));
        schemars::json_schema!({
            "description": "A reference Kind/name, e.g. Volume/vm1-root",
            "type": "string",
            "pattern": pattern
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Unique per kind.
    pub name: Name,
    /// Free-form labels, for selection and display.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Which host applies this resource: a hostname or a glob (`nuc*`). Default: every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Explicit dependencies on top of the references in `spec`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ResourceId>,
    /// E.g. `gitvisor.dev/adopt: "true"` to take over an existing unmanaged object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Metadata {
    /// Metadata with just a name: no labels, host selector, dependencies or annotations.
    pub fn named(name: Name) -> Self {
        Metadata {
            name,
            labels: BTreeMap::new(),
            host: None,
            depends_on: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    pub fn adopt(&self) -> bool {
        self.annotations
            .get(ADOPT_ANNOTATION)
            .is_some_and(|v| v == "true")
    }
}

impl Serialize for ApiVersionTag {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(API_VERSION)
    }
}

/// Deserialises only from the exact API version string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionTag;

impl<'de> Deserialize<'de> for ApiVersionTag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == API_VERSION {
            Ok(ApiVersionTag)
        } else {
            Err(serde::de::Error::custom(format!(
                "unsupported apiVersion {}: expected {API_VERSION:?}",
                super::quoted(&text)
            )))
        }
    }
}

impl JsonSchema for ApiVersionTag {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ApiVersion".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "const": API_VERSION })
    }
}
