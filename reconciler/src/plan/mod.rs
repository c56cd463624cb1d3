//! Plans: the ordered list of changes, rendered for people and as JSON.

mod change;

pub use change::{Action, Change, Effect, FieldChange};
