//! The crate's error types.

use std::time::Duration;

use crate::state::State;

/// Why a call did not complete: the breaker refused it, or the operation itself failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The breaker did not admit the call; nothing was run.
    #[error("circuit breaker rejected the call")]
    Rejected(#[source] Rejected),
    /// The operation ran and returned this error.
    #[error(transparent)]
    Inner(E),
}

impl<E> Error<E> {
    /// When the caller may try again, if the breaker knows (see [`Rejected::retry_after`]).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Rejected(r) => r.retry_after(),
            Self::Inner(_) => None,
        }
    }

    /// The operation's own error, if the call ran.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::Rejected(_) => None,
        }
    }

    /// Whether the breaker refused the call.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected(_))
    }
}

/// A call refused by a breaker, with the state that refused it and when to come back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker {name:?} is {state}")]
pub struct Rejected {
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) state: State,
    pub(crate) retry_after: Option<Duration>,
}

impl Rejected {
    /// The name of the breaker that refused the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state that refused the call: open, half-open (all probes taken) or forced open.
    pub fn state(&self) -> State {
        self.state
    }

    /// How long until the breaker lets a call through again.
    ///
    /// `Some` while open (the time left until half-open); `None` when forced open (only an
    /// operator changes that) or half-open with every probe taken (the probes decide).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct BuildError(pub(crate) &'static str);
