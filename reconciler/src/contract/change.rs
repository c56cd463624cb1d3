//! `Change`: what the diff of one resource decided (an [`Action`] and, for an update, its
//! [`Effect`]), with the driver's own snapshot for apply ([`Observed`]) and the reasons
//! people read in the plan.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::observed::Observed;
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
    /// A field change from values that are JSON already or convert without loss
    /// (numbers, booleans, strings, lists of them, `Option`s: `None` is `null`). It
    /// cannot fail, so a value can never turn into `null` behind the plan's back.
    pub fn new(
        path: impl Into<String>,
        old: impl Into<serde_json::Value>,
        new: impl Into<serde_json::Value>,
        effect: Effect,
    ) -> Self {
        FieldChange {
            path: path.into(),
            old: old.into(),
            new: new.into(),
            effect,
        }
    }

    /// A field change from any serialisable values; the error says which field could not
    /// be shown, rather than showing it as `null`.
    pub fn serialized(
        path: impl Into<String>,
        old: impl Serialize,
        new: impl Serialize,
        effect: Effect,
    ) -> Result<Self, FieldValueError> {
        let path = path.into();
        let old = serde_json::to_value(old);
        let new = serde_json::to_value(new);
        match (old, new) {
            (Ok(old), Ok(new)) => Ok(FieldChange {
                path,
                old,
                new,
                effect,
            }),
            (Err(source), _) | (_, Err(source)) => Err(FieldValueError { path, source }),
        }
    }
}

/// A field value that has no JSON form (a map with non-string keys, say).
#[derive(Debug, thiserror::Error)]
#[error("field {path}: the value cannot be shown as JSON")]
pub struct FieldValueError {
    pub path: String,
    #[source]
    pub source: serde_json::Error,
}

/// The decision for one resource, with what the executor needs to carry it out.
#[derive(Debug, Clone)]
pub struct Change {
    pub id: ResourceId,
    pub action: Action,
    pub fields: Vec<FieldChange>,
    /// Why, and what else people should know (what apply will refuse, what this build
    /// leaves out), one sentence each, most important first.
    pub reasons: Vec<String>,
    /// The declared resource (absent for deletes).
    pub desired: Option<Arc<Resource>>,
    /// What the driver observed on the host, when its apply needs a snapshot: the
    /// driver's own type, read back with [`Change::observed_as`].
    pub observed: Option<Observed>,
}

impl Change {
    pub fn new(id: ResourceId, action: Action) -> Self {
        Change {
            id,
            action,
            fields: Vec::new(),
            reasons: Vec::new(),
            desired: None,
            observed: None,
        }
    }

    /// A declared resource a targeted reconcile leaves out of focus: nothing to do, and
    /// not compared with the host (the last apply of the same spec converged and no watch
    /// has announced a change since). Recorded as a no-op, under the new revision.
    pub fn carried(desired: &Arc<Resource>) -> Self {
        Change::new(desired.id(), Action::NoOp)
            .with_desired(desired.clone())
            .with_reason("unchanged in this revision and converged: not observed again")
    }

    pub fn with_desired(mut self, desired: Arc<Resource>) -> Self {
        self.desired = Some(desired);
        self
    }

    /// Carries `snapshot` (the driver's own type) to apply.
    pub fn with_observed<T: Any + fmt::Debug + Send + Sync>(mut self, snapshot: T) -> Self {
        self.observed = Some(Observed::new(snapshot));
        self
    }

    /// The snapshot the driver attached, if it is a `T`.
    pub fn observed_as<T: Any>(&self) -> Option<&T> {
        self.observed.as_ref().and_then(Observed::get)
    }

    /// Adds a reason after those already given.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reasons.push(reason.into());
        self
    }

    /// Adds a reason before those already given (the one that matters most).
    pub fn with_first_reason(mut self, reason: impl Into<String>) -> Self {
        self.reasons.insert(0, reason.into());
        self
    }

    /// The reasons as one sentence list, `a; b`: the `reason` of the plan's JSON, kept
    /// for the consumers that read it (the list is `reasons`).
    pub fn reason(&self) -> Option<String> {
        (!self.reasons.is_empty()).then(|| self.reasons.join("; "))
    }

    pub fn with_fields(mut self, fields: Vec<FieldChange>) -> Self {
        self.fields = fields;
        self
    }

    /// The most disruptive effect among the fields.
    pub fn effect(&self) -> Option<Effect> {
        self.fields.iter().map(|f| f.effect).max()
    }

    /// Whether carrying this change out takes the object away for a while (a replace, or
    /// an update that restarts or recreates it), so what uses it must be stopped first
    /// (see [`restart`](super::restart)).
    pub fn is_disruptive(&self) -> bool {
        match self.action {
            Action::Replace => true,
            Action::Update => self.effect() >= Some(Effect::Restart),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::model::{Kind, Name};

    fn id() -> ResourceId {
        ResourceId::new(Kind::Bridge, Name::parse("br0").expect("valid"))
    }

    #[test]
    fn a_value_without_a_json_form_is_an_error_not_null() {
        let bad: BTreeMap<(u8, u8), u8> = BTreeMap::from([((1, 2), 3)]);
        let error = FieldChange::serialized("map", &bad, &bad, Effect::Hot).unwrap_err();
        assert_eq!(error.path, "map");
        let good = FieldChange::serialized("ports", ["eth1"], ["eth2"], Effect::Hot).unwrap();
        assert_eq!(good.old, json!(["eth1"]));
        assert_eq!(good.new, json!(["eth2"]));
    }

    #[test]
    fn reasons_are_a_list_and_the_joined_reason_follows_it() {
        let change = Change::new(id(), Action::Create);
        assert_eq!(change.reason(), None);
        let change = change
            .with_reason("b")
            .with_reason("c")
            .with_first_reason("a");
        assert_eq!(change.reasons, ["a", "b", "c"]);
        assert_eq!(change.reason().as_deref(), Some("a; b; c"));
    }

    #[derive(Debug, PartialEq)]
    struct Snapshot(u32);

    #[test]
    fn the_snapshot_comes_back_as_the_drivers_own_type_only() {
        let change = Change::new(id(), Action::Update).with_observed(Snapshot(7));
        assert_eq!(change.observed_as::<Snapshot>(), Some(&Snapshot(7)));
        assert_eq!(change.observed_as::<u32>(), None);
        let cloned = change.clone();
        assert_eq!(cloned.observed_as::<Snapshot>(), Some(&Snapshot(7)));
        assert!(format!("{change:?}").contains("Snapshot(7)"));
    }
}
