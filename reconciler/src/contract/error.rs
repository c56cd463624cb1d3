//! Driver failures: each driver's own error type, classified, with its causes.
//!
//! A driver keeps its own `thiserror` enum, causes in `#[source]`, and says for each
//! variant what a controller should do about it ([`Classify`]). [`DriverError`] carries
//! any such error through the engine without an engine enum listing the drivers:
//!
//! - [`DriverError::class`]: [`FailureClass::Transient`] (retry with backoff),
//!   [`FailureClass::NeedsUser`] (a conflict, a refused change, a host missing what the
//!   manifest needs: retrying changes nothing until someone acts), or
//!   [`FailureClass::Bug`] (gitvisor handed itself something impossible). The executor
//!   reports it with every failure, so a controller's error policy can act on it, as
//!   kube-rs's `error_policy` does.
//! - [`DriverError::chain`]: the whole cause chain, `a: b: c`, which statuses and events
//!   record; `to_string()` alone would drop the causes.
//! - [`DriverError::downcast_ref`]: the driver's own error back, for its tests.

use std::error::Error;
use std::fmt;

use serde::Serialize;

use super::step::Interrupted;
use crate::model::ResourceId;

/// What a controller does with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureClass {
    /// The host may accept the same request later (busy, interrupted, raced, timed
    /// out): retry with backoff.
    Transient,
    /// Retrying cannot help until someone acts: a conflict, a refused change (a shrink),
    /// a host lacking what the manifest needs, a permission.
    NeedsUser,
    /// gitvisor contradicted itself (a change handed to the wrong driver, an answer the
    /// host cannot give). Report it; retrying is unlikely to help.
    Bug,
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureClass::Transient => "transient",
            FailureClass::NeedsUser => "needs user",
            FailureClass::Bug => "bug",
        })
    }
}

/// Implemented by every driver's error type: the class of each variant.
pub trait Classify {
    fn class(&self) -> FailureClass;
}

/// A driver's failure, of the driver's own type, classified. Displays as that error and
/// answers its causes as its own (`source()`), so the chain reads the same through it.
pub struct DriverError {
    class: FailureClass,
    error: Box<dyn Error + Send + Sync + 'static>,
}

impl DriverError {
    /// Wraps `error` with an explicit class (for errors whose type does not classify).
    pub fn new(class: FailureClass, error: impl Error + Send + Sync + 'static) -> Self {
        DriverError {
            class,
            error: Box::new(error),
        }
    }

    pub fn class(&self) -> FailureClass {
        self.class
    }

    /// The message and every cause, `a: b: c` (see [`chain`]).
    pub fn chain(&self) -> String {
        chain(self)
    }

    /// The driver's own error, if it is an `E`.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.error.downcast_ref()
    }

    /// The driver's own error by value, if it is an `E`; itself otherwise.
    pub fn downcast<E: Error + 'static>(self) -> Result<E, Self> {
        let class = self.class;
        match self.error.downcast::<E>() {
            Ok(error) => Ok(*error),
            Err(error) => Err(DriverError { class, error }),
        }
    }

    /// Why the step stopped early, when it was cancelled or ran out of time (anywhere in
    /// the chain).
    pub fn interruption(&self) -> Option<&Interrupted> {
        let mut next: Option<&(dyn Error + 'static)> = Some(self.error.as_ref());
        while let Some(error) = next {
            if let Some(interrupted) = error.downcast_ref::<Interrupted>() {
                return Some(interrupted);
            }
            next = error.source();
        }
        None
    }
}

impl<E: Error + Classify + Send + Sync + 'static> From<E> for DriverError {
    fn from(error: E) -> Self {
        DriverError {
            class: error.class(),
            error: Box::new(error),
        }
    }
}

impl fmt::Debug for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverError")
            .field("class", &self.class)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl Error for DriverError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.error.source()
    }
}

/// The engine handed a driver something it did not plan (a resource of another kind, a
/// change without the driver's snapshot). Always a [`FailureClass::Bug`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{id}: {message}; this is a bug in gitvisor, please report it")]
pub struct ContractViolation {
    pub id: ResourceId,
    pub message: String,
}

impl Classify for ContractViolation {
    fn class(&self) -> FailureClass {
        FailureClass::Bug
    }
}

/// `error` and every cause after it, joined with `: `. A cause whose message the one
/// before it already ends with (an error that prints its cause as well as answering it
/// as `source()`) is not repeated.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut last = out.clone();
    let mut next = error.source();
    while let Some(cause) = next {
        let message = cause.to_string();
        if !message.is_empty() && !last.ends_with(&message) {
            out.push_str(": ");
            out.push_str(&message);
        }
        last = message;
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the kernel said no")]
    struct Kernel;

    #[derive(Debug, thiserror::Error)]
    enum Driverish {
        #[error("bridge br0: add address 10.0.0.1/24")]
        Request {
            #[source]
            cause: Kernel,
        },
        #[error("bridge br0: port eth9 does not exist")]
        Port,
    }

    impl Classify for Driverish {
        fn class(&self) -> FailureClass {
            match self {
                Driverish::Request { .. } => FailureClass::Transient,
                Driverish::Port => FailureClass::NeedsUser,
            }
        }
    }

    #[test]
    fn the_chain_keeps_every_cause_through_the_driver_error() {
        let error = DriverError::from(Driverish::Request { cause: Kernel });
        assert_eq!(error.to_string(), "bridge br0: add address 10.0.0.1/24");
        assert_eq!(
            error.chain(),
            "bridge br0: add address 10.0.0.1/24: the kernel said no"
        );
        let through_anyhow = format!("{:#}", anyhow::Error::new(error));
        assert_eq!(
            through_anyhow,
            "bridge br0: add address 10.0.0.1/24: the kernel said no"
        );
    }

    #[test]
    fn the_class_comes_from_the_drivers_variant() {
        assert_eq!(
            DriverError::from(Driverish::Request { cause: Kernel }).class(),
            FailureClass::Transient
        );
        let port = DriverError::from(Driverish::Port);
        assert_eq!(port.class(), FailureClass::NeedsUser);
        assert!(matches!(
            port.downcast_ref::<Driverish>(),
            Some(Driverish::Port)
        ));
    }

    #[test]
    fn a_cause_printed_by_its_parent_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading links: {cause}")]
        struct Embeds {
            #[source]
            cause: Kernel,
        }
        assert_eq!(
            chain(&Embeds { cause: Kernel }),
            "reading links: the kernel said no"
        );
    }

    #[test]
    fn an_interruption_is_found_anywhere_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("bridge br0: set up")]
        struct Wrapped {
            #[source]
            cause: Interrupted,
        }
        let error = DriverError::new(
            FailureClass::Transient,
            Wrapped {
                cause: Interrupted::Cancelled,
            },
        );
        assert_eq!(error.interruption(), Some(&Interrupted::Cancelled));
        assert_eq!(DriverError::from(Driverish::Port).interruption(), None);
    }
}
