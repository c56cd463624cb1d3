//! Reading gitvisor's output: changes and fields of `plan --output json`, states of
//! `status --output json`, and text assertions that print what they searched.

use std::collections::BTreeMap;

use serde_json::Value;

/// The change for `kind`/`name` in a `plan --output json` object; panics with the plan
/// when absent.
#[track_caller]
pub fn change<'a>(plan: &'a Value, kind: &str, name: &str) -> &'a Value {
    plan["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["kind"] == kind && c["name"] == name)
        .unwrap_or_else(|| panic!("plan has no change for {kind}/{name}:\n{plan:#}"))
}

/// The field change at `path` in a change, if listed.
pub fn field<'a>(change: &'a Value, path: &str) -> Option<&'a Value> {
    change["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["path"] == path)
}

/// The actions of every change that is not `noop`, as `(kind/name, action)`.
pub fn non_noop_actions(plan: &Value) -> Vec<(String, String)> {
    plan["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["action"] != "noop")
        .map(|c| {
            (
                format!(
                    "{}/{}",
                    c["kind"].as_str().unwrap_or("?"),
                    c["name"].as_str().unwrap_or("?")
                ),
                c["action"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

/// The resources listed by `status --output json`, as `(kind, name) -> state`.
pub fn status_states(status: &Value) -> BTreeMap<(String, String), String> {
    status["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                (
                    r["kind"].as_str().unwrap_or("?").to_owned(),
                    r["name"].as_str().unwrap_or("?").to_owned(),
                ),
                r["state"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

/// Finds `needle` in `haystack`, panicking with both when absent.
#[track_caller]
pub fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected to find {needle:?} in:\n{haystack}"
    );
}
