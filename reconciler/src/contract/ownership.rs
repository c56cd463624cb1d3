//! Ownership, once for every kind (README "Ownership"): when gitvisor may change, adopt or delete
//! an object, and when a leftover of an interrupted creation is provably its own.
//!
//! Each driver says only where its marker lives (the bridge's `ifalias`, an LV tag, the
//! runtime's state root, the VM run dir) by reading it into a [`Marker`], and whether
//! the state store records the object ([`PlanContext::is_recorded`]); these rules decide.
//!
//! # The rules
//!
//! One rule, with no exception: an object is gitvisor's when it carries gitvisor's
//! marker *and* the store records it ([`Evidence::is_ours`]). A store record alone is not
//! enough (the object may have been deleted and made again by hand, or the store copied
//! from another host), nor is a marker alone (another gitvisor's, or a lost store).
//!
//! | marker  | recorded | declared                | declared + adopt | not declared       |
//! |---------|----------|-------------------------|------------------|--------------------|
//! | ours    | yes      | `Ours`: update / noop   | `Ours`           | `Delete` (pruned)  |
//! | ours    | no       | `Conflict`              | `Adopt`          | keep, warn         |
//! | foreign | yes      | `Conflict`              | `Adopt`          | keep, warn         |
//! | absent  | yes      | `Conflict`              | `Adopt`          | keep, warn         |
//! | foreign | no       | `Conflict`              | `Adopt`          | keep               |
//! | absent  | no       | `Conflict`              | `Adopt`          | keep               |
//!
//! Creation puts the marker on in the same call that creates the object, or, where the
//! host cannot (the kernel ignores a link's alias at creation), under a reserved
//! temporary name that no declaration can have, marked there before it takes its
//! declared name. A crash in between leaves an object under the temporary name; it is
//! removed ([`Evidence::leftover`]) only when the store records the object it was made
//! for (the write-ahead intent precedes the create) and it carries gitvisor's marker or
//! none at all (the crash came before the marker). A foreign marker there is someone
//! else's: left alone, and the create is a conflict.
//!
//! [`PlanContext::is_recorded`]: super::PlanContext::is_recorded

use std::fmt;

use crate::model::ADOPT_ANNOTATION;

/// What an object carries where its kind keeps gitvisor's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// gitvisor's marker.
    Ours,
    /// Something else there (another tool's alias or tag), as found.
    Foreign(String),
    /// Nothing there.
    Absent,
}

/// What the host and the store say about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub marker: Marker,
    /// The state store records it as created (or being created) by gitvisor.
    pub recorded: bool,
}

/// What gitvisor may do with a declared object it found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// gitvisor's: update it in place, or leave it as it is.
    Ours,
    /// Not gitvisor's, but the manifest says to take it over: the update sets the marker.
    Adopt,
    /// Not gitvisor's: touch nothing; the reason says why and what to do.
    Conflict(String),
}

/// What happens to an object found on the host that is no longer declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    /// gitvisor's: delete it.
    Delete,
    /// Not gitvisor's business.
    Keep,
    /// Half gitvisor's (marker without record, or record without marker): left in place,
    /// with this warning in the log.
    KeepAndWarn(&'static str),
}

/// Whether an object under a temporary name is the leftover of an interrupted creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// Provably gitvisor's: removed before the create runs again, or pruned.
    Remove,
    /// Not provably gitvisor's: left alone, and the create it blocks is a conflict.
    Unproven,
}

impl Evidence {
    pub fn new(marker: Marker, recorded: bool) -> Self {
        Evidence { marker, recorded }
    }

    /// gitvisor may change or delete the object without an adopt annotation.
    pub fn is_ours(&self) -> bool {
        self.marker == Marker::Ours && self.recorded
    }

    /// The decision for a declared object that exists. `object` names it in the
    /// conflict's reason (`bridge br0`); `adopt`: the manifest carries the adopt
    /// annotation.
    pub fn declared(&self, object: impl fmt::Display, adopt: bool) -> Ownership {
        if self.is_ours() {
            return Ownership::Ours;
        }
        if adopt {
            return Ownership::Adopt;
        }
        let why = match (&self.marker, self.recorded) {
            (Marker::Ours, _) => {
                "carries gitvisor's marker, but this state store has no record of creating it (another gitvisor's, or the store was lost or replaced)"
            }
            (Marker::Foreign(_) | Marker::Absent, true) => {
                "exists without gitvisor's marker, so it is not the one gitvisor created (it was made again by hand, or the state store came from elsewhere); the store's record alone is not enough"
            }
            (Marker::Foreign(_) | Marker::Absent, false) => {
                "exists but was not created by gitvisor"
            }
        };
        Ownership::Conflict(format!(
            "{object} {why}; annotate {ADOPT_ANNOTATION}: \"true\" to take it over"
        ))
    }

    /// The decision for an object that is no longer declared.
    pub fn undeclared(&self) -> Prune {
        match (&self.marker, self.recorded) {
            (Marker::Ours, true) => Prune::Delete,
            (Marker::Ours, false) => Prune::KeepAndWarn(
                "it carries the gitvisor marker but the state store has no record of it; leaving it in place",
            ),
            (Marker::Foreign(_) | Marker::Absent, true) => Prune::KeepAndWarn(
                "the state store records it but it lacks the gitvisor marker, so it is not the one gitvisor created; leaving it in place",
            ),
            (Marker::Foreign(_) | Marker::Absent, false) => Prune::Keep,
        }
    }

    /// The decision for an object of the right kind under the temporary name of a
    /// declared or recorded one.
    pub fn leftover(&self) -> Leftover {
        match self.marker {
            Marker::Ours | Marker::Absent if self.recorded => Leftover::Remove,
            _ => Leftover::Unproven,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Evidence> {
        let markers = [
            Marker::Ours,
            Marker::Foreign("uplink".into()),
            Marker::Absent,
        ];
        markers
            .iter()
            .flat_map(|marker| {
                [true, false].map(|recorded| Evidence::new(marker.clone(), recorded))
            })
            .collect()
    }

    #[test]
    fn only_marker_and_record_together_are_ours() {
        for evidence in all() {
            let ours = evidence.marker == Marker::Ours && evidence.recorded;
            assert_eq!(evidence.is_ours(), ours, "{evidence:?}");
            assert_eq!(
                evidence.declared("bridge br0", false) == Ownership::Ours,
                ours
            );
            assert_eq!(evidence.undeclared() == Prune::Delete, ours, "{evidence:?}");
        }
    }

    #[test]
    fn adopt_takes_over_anything_not_ours_and_nothing_else_does() {
        for evidence in all().into_iter().filter(|e| !e.is_ours()) {
            assert_eq!(evidence.declared("bridge br0", true), Ownership::Adopt);
            let Ownership::Conflict(reason) = evidence.declared("bridge br0", false) else {
                panic!("{evidence:?} is not ours and not adopted");
            };
            assert!(reason.starts_with("bridge br0 "), "{reason}");
            assert!(reason.ends_with("annotate gitvisor.dev/adopt: \"true\" to take it over"));
        }
    }

    #[test]
    fn a_conflict_says_which_half_is_missing() {
        let reason =
            |marker, recorded| match Evidence::new(marker, recorded).declared("lv data", false) {
                Ownership::Conflict(reason) => reason,
                other => panic!("{other:?}"),
            };
        assert!(reason(Marker::Ours, false).contains("has no record"));
        assert!(reason(Marker::Absent, true).contains("without gitvisor's marker"));
        assert!(reason(Marker::Foreign("x".into()), true).contains("without gitvisor's marker"));
        assert!(reason(Marker::Absent, false).contains("was not created by gitvisor"));
    }

    #[test]
    fn half_ours_is_kept_with_a_warning_and_strangers_silently() {
        let prune = |marker, recorded| Evidence::new(marker, recorded).undeclared();
        assert!(matches!(prune(Marker::Ours, false), Prune::KeepAndWarn(_)));
        assert!(matches!(prune(Marker::Absent, true), Prune::KeepAndWarn(_)));
        assert!(matches!(
            prune(Marker::Foreign("x".into()), true),
            Prune::KeepAndWarn(_)
        ));
        assert_eq!(prune(Marker::Absent, false), Prune::Keep);
        assert_eq!(prune(Marker::Foreign("x".into()), false), Prune::Keep);
    }

    #[test]
    fn a_leftover_is_ours_only_when_recorded_and_marked_or_bare() {
        let leftover = |marker, recorded| Evidence::new(marker, recorded).leftover();
        assert_eq!(leftover(Marker::Ours, true), Leftover::Remove);
        assert_eq!(leftover(Marker::Absent, true), Leftover::Remove);
        assert_eq!(
            leftover(Marker::Foreign("mine".into()), true),
            Leftover::Unproven
        );
        assert_eq!(leftover(Marker::Ours, false), Leftover::Unproven);
        assert_eq!(leftover(Marker::Absent, false), Leftover::Unproven);
    }
}
