//! Settings shared by workloads (containers and virtual machines).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum RunState {
    #[default]
    Running,
    Stopped,
}
