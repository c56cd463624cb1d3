//! JSON Schemas generated from the manifest types (schemars), one per kind (from the
//! kind's registration, `crate::drivers::registry`) plus one for any document. They are checked in under `schemas/` for editors (yaml-language-server
//! modelines in the examples) and CI's independent validator; a test fails when the
//! checked-in files drift from the types.

use serde_json::{Value, json};

use crate::drivers::{Registration, registry};
use crate::model::{API_VERSION, Document, Kind, PRUNE_POLICY_KIND, PrunePolicySpec};

const BASE: &str = "https://gitvisor.dev/schemas/v1alpha1";

/// The file name a kind's schema is stored under, e.g. `bridge.json`.
pub fn file_name(kind: Option<Kind>) -> String {
    match kind {
        Some(kind) => format!("{}.json", kind.as_str().to_lowercase()),
        None => "manifest.json".to_owned(),
    }
}

fn document_schema(registration: &Registration) -> Value {
    let kind = registration.kind;
    let mut schema = registration.schema();
    schema["$id"] = json!(format!("{BASE}/{}", file_name(Some(kind))));
    schema["title"] = json!(format!("gitvisor {kind}"));
    schema["description"] = json!(format!("A gitvisor {kind} manifest ({API_VERSION})."));
    schema["properties"]["kind"] = json!({ "const": kind.as_str() });
    schema["properties"]["apiVersion"] = json!({ "const": API_VERSION });
    schema
}

/// The file name of the `PrunePolicy` document's schema (a setting, not a resource kind).
const PRUNE_POLICY_FILE: &str = "prunepolicy.json";

/// The schema of a `PrunePolicy` document.
fn prune_policy_schema() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Document<PrunePolicySpec>))
        .unwrap_or_else(|_| json!({}));
    schema["$id"] = json!(format!("{BASE}/{PRUNE_POLICY_FILE}"));
    schema["title"] = json!(format!("gitvisor {PRUNE_POLICY_KIND}"));
    schema["description"] = json!(format!(
        "A gitvisor {PRUNE_POLICY_KIND} document ({API_VERSION}): whether the revision deletes what it no longer declares."
    ));
    schema["properties"]["kind"] = json!({ "const": PRUNE_POLICY_KIND });
    schema["properties"]["apiVersion"] = json!({ "const": API_VERSION });
    schema
}

/// The registered kinds, in rank order (the order the schemas list them in).
fn kinds() -> Vec<Registration> {
    let mut kinds = registry();
    kinds.sort_by_key(|r| r.kind);
    kinds
}

/// The schema of one kind, or (`None`) of any manifest document.
pub fn schema(kind: Option<Kind>) -> Value {
    match kind {
        Some(kind) => match crate::drivers::registration(kind) {
            Some(registration) => document_schema(&registration),
            None => json!({}),
        },
        None => {
            let mut branches = Vec::new();
            let mut defs = serde_json::Map::new();
            for registration in kinds() {
                let kind = registration.kind;
                let mut sub = document_schema(&registration);
                if let Some(object) = sub.as_object_mut() {
                    object.remove("$schema");
                }
                defs.insert(kind.as_str().to_owned(), sub);
                branches.push(json!({
                    "if": { "properties": { "kind": { "const": kind.as_str() } } },
                    "then": { "$ref": format!("#/$defs/{}", kind.as_str()) }
                }));
            }
            let mut policy = prune_policy_schema();
            if let Some(object) = policy.as_object_mut() {
                object.remove("$schema");
            }
            defs.insert(PRUNE_POLICY_KIND.to_owned(), policy);
            branches.push(json!({
                "if": { "properties": { "kind": { "const": PRUNE_POLICY_KIND } } },
                "then": { "$ref": format!("#/$defs/{PRUNE_POLICY_KIND}") }
            }));
            let mut kinds: Vec<&str> = kinds().iter().map(|r| r.kind.as_str()).collect();
            kinds.push(PRUNE_POLICY_KIND);
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$id": format!("{BASE}/{}", file_name(None)),
                "title": "gitvisor manifest",
                "description": format!("Any gitvisor manifest document ({API_VERSION})."),
                "type": "object",
                "required": ["apiVersion", "kind", "metadata", "spec"],
                "properties": {
                    "apiVersion": { "const": API_VERSION },
                    "kind": { "enum": kinds }
                },
                "allOf": branches,
                "$defs": defs
            })
        }
    }
}

/// Every schema file: `(file name, pretty JSON with a trailing newline)`.
pub fn all_files() -> Vec<(String, String)> {
    std::iter::once(None)
        .chain(kinds().into_iter().map(|r| Some(r.kind)))
        .map(|kind| {
            let text = serde_json::to_string_pretty(&schema(kind)).unwrap_or_default();
            (file_name(kind), text + "\n")
        })
        .chain(std::iter::once((
            PRUNE_POLICY_FILE.to_owned(),
            serde_json::to_string_pretty(&prune_policy_schema()).unwrap_or_default() + "\n",
        )))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regenerate with `GITVISOR_BLESS=1 cargo test -p gitvisor schema`.
    #[test]
    fn checked_in_schemas_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let bless = std::env::var_os("GITVISOR_BLESS").is_some();
        let mut stale = Vec::new();
        for (name, text) in all_files() {
            let path = dir.join(&name);
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(name);
            }
        }
        assert!(
            stale.is_empty(),
            "schemas/ is stale for {stale:?}: run `GITVISOR_BLESS=1 cargo test -p gitvisor schema` and commit"
        );
    }

    #[test]
    fn kind_is_a_constant() {
        let bridge = schema(Some(Kind::Bridge));
        assert_eq!(bridge["properties"]["kind"]["const"], "Bridge");
        assert_eq!(bridge["additionalProperties"], false);
    }
}
