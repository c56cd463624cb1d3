//! Which gitvisor a chain of the shared table `inet gitvisor` belongs to.
//!
//! Several gitvisors can run on one host or in one network namespace (different state and
//! run dirs: a test beside a production instance, two tenants). They share the one table,
//! so each owns only chains named with its own [`Instance`] id, derived from its state
//! dir: its base chains (`gv1a2b3c4d-forward`, …) and its bridges' chains
//! (`gv1a2b3c4d-br0-fwd`, …), jumped to from its own base chains. An instance changes
//! and removes only those chains, and removes the table only when nothing but its own
//! chains and the marker is left in it, so one instance's prune never takes another's
//! rules with it.
//!
//! Before instance ids, a gitvisor named its chains without one (`forward`, `br0-fwd`):
//! the *legacy* layout. A bridge this instance declares or owns that still has legacy
//! chains is migrated by its next change: its legacy jumps and chains are removed in the
//! same transaction that writes its chains under the instance id, and a legacy base chain
//! goes once every rule in it is a legacy jump of this instance's bridges.
//!
//! What is left open: two instances whose last rules go at the same moment, each seeing
//! the other's chains, both keep the table (the next prune removes it); and an instance
//! that deletes the table just as another writes its first rules takes those with it (the
//! other's next plan sees them missing and writes them again).
//!
//! An uplink's forwarding switch is shared too (one per namespace): an instance gives
//! back one it turned on only when no one else's rules route out of it
//! (`drift.rs`, [`super::nft::RuleState::routes_out`]).

use std::path::Path;

use sha2::{Digest, Sha256};

use super::rules::Hook;

/// One gitvisor's share of the table: the prefix of every chain it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    id: String,
}

impl Instance {
    /// The instance of the gitvisor whose state dir is `state_dir`: the first 8 hex
    /// digits of the SHA-256 of its absolute path (no file is read: the path is the
    /// identity, as it is for the store).
    pub fn of_state_dir(state_dir: &Path) -> Instance {
        let absolute = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_owned());
        let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
        let id: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        Instance { id }
    }

    /// An instance with a fixed id, for tests and golden files.
    #[cfg(test)]
    pub fn fixed(id: &str) -> Instance {
        Instance { id: id.to_owned() }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn prefix(&self) -> String {
        format!("gv{}-", self.id)
    }

    /// This instance's base chain for `hook`: `gv1a2b3c4d-forward`.
    pub fn base_chain(&self, hook: Hook) -> String {
        format!("{}{}", self.prefix(), hook.base_chain())
    }

    /// This instance's chain of `bridge` for `hook`: `gv1a2b3c4d-br0-fwd`.
    pub fn chain_of(&self, hook: Hook, bridge: &str) -> String {
        format!("{}{}", self.prefix(), hook.chain_of(bridge))
    }

    /// The comment of the jump from this instance's base chain to the bridge's chain.
    pub fn jump_comment(&self, hook: Hook, bridge: &str) -> String {
        format!("{bridge}: jump {}", self.chain_of(hook, bridge))
    }

    /// Whether `chain` is one of this instance's.
    pub fn owns(&self, chain: &str) -> bool {
        chain.starts_with(&self.prefix())
    }
}

/// The legacy layout's names (no instance id): base chain `forward`, bridge chain
/// `br0-fwd`, jump comment `br0: jump br0-fwd`.
pub mod legacy {
    use super::Hook;

    pub fn base_chain(hook: Hook) -> &'static str {
        hook.base_chain()
    }

    pub fn chain_of(hook: Hook, bridge: &str) -> String {
        hook.chain_of(bridge)
    }

    pub fn jump_comment(hook: Hook, bridge: &str) -> String {
        hook.jump_comment(bridge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_state_dirs_are_different_instances_and_own_only_their_chains() {
        let a = Instance::of_state_dir(Path::new("/var/lib/gitvisor"));
        let b = Instance::of_state_dir(Path::new("/var/lib/gitvisor-b"));
        assert_ne!(a, b);
        assert_eq!(a, Instance::of_state_dir(Path::new("/var/lib/gitvisor")));
        assert_eq!(a.id().len(), 8);
        let chain = a.chain_of(Hook::Forward, "br0");
        assert_eq!(chain, format!("gv{}-br0-fwd", a.id()));
        assert!(a.owns(&chain) && a.owns(&a.base_chain(Hook::Output)));
        assert!(!b.owns(&chain));
        assert!(!a.owns("forward") && !a.owns("br0-fwd") && !a.owns("managed-by-gitvisor"));
    }
}
