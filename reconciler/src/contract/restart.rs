//! Dependents around disruptive changes: what a driver says about stopping one of its
//! objects while something it uses goes away for a moment.
//!
//! # Why
//!
//! Some changes take an object away: a `Replace` deletes it and creates it again (a
//! Volume moved to another volume group, a Bridge re-created), an `Update` whose effect
//! is [`Effect::Restart`](super::Effect::Restart) or
//! [`Effect::Recreate`](super::Effect::Recreate) stops it (a VM given more CPUs). Whatever
//! uses it (a VM whose disk is the Volume, a container on the Bridge, a container that
//! `dependsOn` the VM) must not run through that: it is stopped before, and started again
//! after.
//!
//! # The contract
//!
//! A driver whose objects run (VMs, containers) answers
//! [`Driver::restart_support`](super::Driver::restart_support) for one of its planned
//! changes, and implements [`Driver::stop`](super::Driver::stop) and
//! [`Driver::start`](super::Driver::start) (idempotent, like `apply`: stopping a stopped
//! object or starting a running one succeeds). A driver whose objects do not run (Bridge,
//! Volume) writes nothing: the default answer is [`RestartSupport::Unsupported`], and the
//! plan says the dependent keeps running, and why.
//!
//! # What the engine does with it
//!
//! The plan lists each dependent once, with the disruptive changes it waits for
//! ([`crate::plan::DependentRestart`]); the executor stops the dependents before the
//! first of those changes (dependents of dependents first), and starts them again after
//! the last (dependencies first), whatever the changes' results, so a failed change does
//! not leave a workload stopped. If a dependent cannot be stopped, the change is not
//! attempted.

/// Whether a driver can stop and start one of its objects around a disruptive change to
/// something the object uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartSupport {
    /// The object runs; the driver stops it with `stop` and starts it with `start`.
    Supported,
    /// Nothing runs (`state: Stopped`, or the object is about to be created or deleted
    /// anyway): nothing to stop, and the plan does not mention it.
    NotRunning,
    /// The object may be running but this driver cannot stop it; it keeps running
    /// through the change. Why, in a sentence people read in the plan.
    Unsupported(String),
}
