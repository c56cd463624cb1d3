//! One `nft` run for every bridge of an apply.
//!
//! Each bridge's change carries its own nftables transaction, and each could be committed
//! on its own; but `nft` reloads gitvisor's whole table for every run, so hundreds of
//! bridges committed one run at a time (or a handful at a time, as many as the executor
//! runs at once) cost time that grows with the square of their number. Rules match
//! interfaces by name (`iifname`, `oifname`), so a bridge's rules need no link to exist
//! first: every bridge's transaction can go in one run.
//!
//! # Order of steps
//!
//! 1. **plan**: every change of one plan shares one [`NftBatch`] (in its snapshot).
//! 2. **prepare** ([`crate::contract::Driver::prepare_apply`]): the executor names the
//!    changes the run carries out (none the plan's scope left out); the creates, updates
//!    and replaces among them whose transaction adds rules become the batch's [`Round`]:
//!    their transactions joined into one.
//! 3. **apply**: the first bridge step that reaches its nftables request starts the
//!    round's commit, one `nft` run; the others await the same outcome. The commit runs
//!    in a task of its own, so a step abandoned while waiting never leaves it half-known
//!    and never makes another step commit the same transaction twice.
//! 4. When the joined transaction fails, nothing of it is applied (a transaction is all
//!    or nothing), and every step commits its own transaction alone, so one bridge's
//!    failure stays its own.
//!
//! Deletes, and a transaction that deletes the table, are never joined: they run after
//! every create (the executor's phase 2) and each is its bridge's own. A step whose
//! bridge is not in a round (no prepare, as when a tool applies one change by hand)
//! commits its own transaction, as before.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::nft::{NftCommand, Transaction};
use super::seam::{NetworkRequest, NetworkSeam};

/// One bridge of a round: its name and its own transaction.
pub type Member = (String, Transaction);

/// The rounds of one plan's changes; shared by every snapshot of that plan.
#[derive(Debug, Default)]
pub struct NftBatch {
    round: Mutex<Option<Arc<Round>>>,
}

/// The joined transaction of the bridges one run carries out, committed at most once.
pub struct Round {
    members: BTreeSet<String>,
    transaction: Transaction,
    commit: Mutex<Option<Shared<BoxFuture<'static, bool>>>>,
}

impl std::fmt::Debug for Round {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Round")
            .field("members", &self.members)
            .field("commands", &self.transaction.0.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether a bridge's transaction may be joined with others': it adds or replaces that
/// bridge's rules, and does not delete the table.
pub fn joinable(transaction: &Transaction) -> bool {
    !transaction.is_empty() && !transaction.0.contains(&NftCommand::DeleteTable)
}

impl NftBatch {
    /// Starts a round of `members` (bridge, its transaction), replacing any earlier one
    /// (the same plan carried out again). Fewer than two members need no round.
    pub fn begin(&self, members: Vec<Member>) {
        let round = (members.len() > 1).then(|| Arc::new(Round::new(members)));
        *lock(&self.round) = round;
    }

    /// The current round, when `bridge` is in it.
    pub fn round_of(&self, bridge: &str) -> Option<Arc<Round>> {
        lock(&self.round)
            .as_ref()
            .filter(|round| round.members.contains(bridge))
            .cloned()
    }
}

impl Round {
    fn new(members: Vec<Member>) -> Self {
        // Every member opens with the table and the base chains it uses; those `add`s
        // are no-ops once done, so each goes once, first.
        let mut setup: Vec<NftCommand> = Vec::new();
        let mut rest = Vec::new();
        let mut names = BTreeSet::new();
        for (bridge, transaction) in members {
            names.insert(bridge);
            for command in transaction.0 {
                match command {
                    NftCommand::AddTable | NftCommand::AddBaseChain { .. } => {
                        if !setup.contains(&command) {
                            setup.push(command);
                        }
                    }
                    other => rest.push(other),
                }
            }
        }
        setup.sort_by_key(|command| match command {
            NftCommand::AddBaseChain { name, hook } => Some((*hook, name.clone())),
            _ => None,
        });
        setup.extend(rest);
        Round {
            members: names,
            transaction: Transaction(setup),
            commit: Mutex::new(None),
        }
    }

    /// The bridges whose transactions are joined.
    pub fn members(&self) -> &BTreeSet<String> {
        &self.members
    }

    /// The joined transaction.
    pub fn transaction(&self) -> &Transaction {
        &self.transaction
    }

    /// Commits the joined transaction through `seam`, once for all members: the first
    /// call starts it, every call awaits the same outcome. `true` when it is applied;
    /// `false` when it failed (then nothing of it is: each member commits its own).
    pub fn commit(&self, seam: Arc<dyn NetworkSeam>) -> Shared<BoxFuture<'static, bool>> {
        lock(&self.commit)
            .get_or_insert_with(|| {
                let request = NetworkRequest::Nft(self.transaction.clone());
                let bridges = self.members.len();
                tracing::debug!(bridges, "one nft run for every bridge of this apply");
                let task = tokio::spawn(async move {
                    match seam.send(&request).await {
                        Ok(()) => true,
                        Err(error) => {
                            tracing::warn!(
                                bridges,
                                "the joined nftables transaction of {bridges} bridges failed, each bridge commits its own: {error}"
                            );
                            false
                        }
                    }
                });
                task.map(|joined| joined.unwrap_or(false)).boxed().shared()
            })
            .clone()
    }
}
