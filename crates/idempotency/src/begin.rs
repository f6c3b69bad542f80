//! The answer to a claim.

use std::time::Duration;

use crate::lease::Lease;
use crate::response::StoredResponse;

/// What [`IdempotencyStore::begin`](crate::IdempotencyStore::begin) found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Begin {
    /// The caller holds the key and must execute (or resume from
    /// [`Lease::recovery_point`]), then `complete` or `release`.
    Execute(Lease),
    /// The request was executed before: here is its response.
    Replay(StoredResponse),
    /// Another caller holds a live lease on the key.
    InFlight {
        /// When that lease runs out, at the latest.
        retry_after: Duration,
    },
    /// The key was used with a different request fingerprint.
    Mismatch,
}
