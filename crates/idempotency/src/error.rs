//! The crate's error types.

use std::time::Duration;

use crate::key::KeyError;

/// A boxed error from a backend or an operation.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong when claiming, checkpointing or completing a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key or its scope failed validation.
    #[error("invalid idempotency key")]
    InvalidKey(#[from] KeyError),
    /// The key was used before with a different request fingerprint.
    #[error("idempotency key reused with a different request")]
    Mismatch,
    /// The first request with this key is still being processed.
    #[error("a request with this idempotency key is in flight, retry after {retry_after:?}")]
    InFlight {
        /// When the current lease runs out, at the latest.
        retry_after: Duration,
    },
    /// The lease is no longer held: another holder took the key over, or the
    /// record was completed, released or reaped. Nothing was written.
    #[error("lease on the idempotency key was lost")]
    LeaseLost,
    /// A request body could not be fingerprinted.
    #[error("malformed request body: {0}")]
    MalformedBody(String),
    /// A stored record could not be decoded.
    #[error("corrupt idempotency record: {0}")]
    Corrupt(String),
    /// The storage backend failed.
    #[error("idempotency store backend failed")]
    Backend(#[source] BoxError),
}

impl Error {
    /// Wraps a backend error (for implementers of
    /// [`IdempotencyStore`](crate::IdempotencyStore)).
    pub fn backend(e: impl Into<BoxError>) -> Self {
        Self::Backend(e.into())
    }
}

/// An invalid configuration given to a builder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A JSON pointer does not start with `/` (and is not empty).
    #[error("invalid JSON pointer {0:?}")]
    InvalidPointer(String),
    /// A duration that must be positive is zero.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// The lease renewal interval is not shorter than the lease.
    #[error("renew_every ({every:?}) must be shorter than the lease ({lease:?})")]
    RenewNotShorterThanLease {
        /// The renewal interval.
        every: std::time::Duration,
        /// The lease.
        lease: std::time::Duration,
    },
    /// A configured name is invalid.
    #[error("invalid {0}")]
    InvalidKey(#[from] KeyError),
}

/// The result of [`Idempotency::run`](crate::Idempotency::run).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError<E> {
    /// Claiming or completing the key failed; see [`Error`].
    #[error(transparent)]
    Idempotency(#[from] Error),
    /// The operation itself failed; the key was released for a retry.
    #[error("idempotent operation failed")]
    Operation(#[source] E),
}
