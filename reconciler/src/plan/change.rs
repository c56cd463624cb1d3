//! `Change`: what the diff of one resource decided (DESIGN §1.6).

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::drivers::Observed;
use crate::model::{Resource, ResourceId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Declared, absent on the host.
    Create,
    /// Present and ours; some fields change in place.
    Update,
    /// An immutable field changed: delete and create again.
    Replace,
    /// Ours, no longer declared: pruned.
    Delete,
    /// Present, ours and as declared.
    #[serde(rename = "noop")]
    NoOp,
    /// An object with the declared name exists but gitvisor did not create it.
    Conflict,
    /// Declared, but this build has no driver for the kind yet.
    Unsupported,
}

impl Action {
    /// Whether applying this change touches the host.
    pub fn is_change(self) -> bool {
        matches!(
            self,
            Action::Create | Action::Update | Action::Replace | Action::Delete
        )
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::NoOp => " ",
            Action::Conflict => "!",
            Action::Unsupported => "?",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::NoOp => "noop",
            Action::Conflict => "conflict",
            Action::Unsupported => "unsupported",
        };
        f.write_str(word)
    }
}

/// How disruptive a field change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Applied live; nothing restarts.
    Hot,
    /// Applied by restarting the workload.
    Restart,
    /// The object is deleted and created again.
    Recreate,
}

/// One field's old and new value. Values are JSON so every kind renders the same way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    pub old: serde_json::Value,
    pub new: serde_json::Value,
    pub effect: Effect,
}

impl FieldChange {
    pub fn new(
        path: impl Into<String>,
        old: impl Serialize,
        new: impl Serialize,
        effect: Effect,
    ) -> Self {
        FieldChange {
            path: path.into(),
            old: serde_json::to_value(old).unwrap_or(serde_json::Value::Null),
            new: serde_json::to_value(new).unwrap_or(serde_json::Value::Null),
            effect,
        }
    }
}

/// The decision for one resource, with what the executor needs to carry it out.
#[derive(Debug, Clone)]
pub struct Change {
    pub id: ResourceId,
    pub action: Action,
    pub fields: Vec<FieldChange>,
    pub reason: Option<String>,
    /// The declared resource (absent for deletes).
    pub desired: Option<Arc<Resource>>,
    /// What the driver observed on the host, when its apply needs a snapshot.
    pub observed: Option<Observed>,
}

impl Change {
    pub fn new(id: ResourceId, action: Action) -> Self {
        Change {
            id,
            action,
            fields: Vec::new(),
            reason: None,
            desired: None,
            observed: None,
        }
    }

    pub fn with_desired(mut self, desired: Arc<Resource>) -> Self {
        self.desired = Some(desired);
        self
    }

    pub fn with_observed(mut self, observed: Observed) -> Self {
        self.observed = Some(observed);
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn with_fields(mut self, fields: Vec<FieldChange>) -> Self {
        self.fields = fields;
        self
    }

    /// The most disruptive effect among the fields.
    pub fn effect(&self) -> Option<Effect> {
        self.fields.iter().map(|f| f.effect).max()
    }
}
