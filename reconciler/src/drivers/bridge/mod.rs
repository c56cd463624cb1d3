//! Bridge driver (placeholder until implemented).

#[derive(Debug, Clone, PartialEq)]
pub struct ObservedBridge;

#[derive(Debug, thiserror::Error)]
#[error("bridge error")]
pub struct BridgeError;
