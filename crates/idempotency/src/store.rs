//! The backend trait.

use std::time::Duration;

use async_trait::async_trait;

use crate::begin::Begin;
use crate::error::Error;
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::lease::{BeginOptions, Lease, RecoveryPoint};
use crate::response::StoredResponse;

/// An idempotency-key store: atomic claim, fenced writes, replay, expiry.
///
/// Implemented by [`InMemoryIdempotencyStore`](crate::InMemoryIdempotencyStore)
/// and, behind features, by the SQLite, PostgreSQL and Redis stores. All
/// backends pass the same conformance suite, so they are interchangeable as
/// `Arc<dyn IdempotencyStore>`.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + std::fmt::Debug {
    /// Claims `key` for a request with fingerprint `fp`, atomically and in
    /// one round trip.
    ///
    /// A record whose TTL has passed counts as absent. A record in flight
    /// whose lease has run out is taken over (same fingerprint only): the new
    /// lease carries the last [`RecoveryPoint`] and a higher token.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the store fails, [`Error::Corrupt`] when a
    /// stored record cannot be read.
    ///
    /// # Cancel safety
    ///
    /// If cancelled, the claim may or may not have been made; an unused claim
    /// becomes available again when its lease runs out.
    async fn begin(
        &self,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        opts: &BeginOptions,
    ) -> Result<Begin, Error>;

    /// Records a recovery point and extends the lease by its duration.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when `lease` is no longer the current holder
    /// (nothing is written), or a backend error.
    ///
    /// # Cancel safety
    ///
    /// If cancelled, the checkpoint may or may not have been written.
    async fn checkpoint(&self, lease: &mut Lease, point: &RecoveryPoint) -> Result<(), Error>;

    /// Extends the lease to now plus [`Lease::duration`], in one round trip,
    /// keeping the recovery point: the heartbeat of a holder that is still
    /// alive, so that a short lease can cover a long-running request.
    ///
    /// Fenced like [`checkpoint`](Self::checkpoint): a holder whose lease ran
    /// out may still renew as long as nobody took the key over. On success
    /// [`Lease::expires_at_ms`] is updated.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when `lease` is no longer the current holder (the
    /// key was taken over, or completed, or deleted by `release`); nothing is
    /// written. Or a backend error.
    ///
    /// # Cancel safety
    ///
    /// If cancelled, the lease may or may not have been extended; `lease`
    /// then keeps its previous expiry, which is never later than the stored one.
    async fn renew(&self, lease: &mut Lease) -> Result<(), Error>;

    /// Stores the response and marks the key completed; it will be replayed
    /// for `ttl`.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when `lease` is no longer the current holder
    /// (nothing is written), or a backend error.
    ///
    /// # Cancel safety
    ///
    /// If cancelled, the completion may or may not have been written; the key
    /// is then either completed or still held by `lease`.
    async fn complete(
        &self,
        lease: &Lease,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error>;

    /// Gives the key up so that a retry executes again: the record is deleted,
    /// or, if it has a recovery point, kept with its lease expired so that
    /// the retry resumes from there.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when `lease` is no longer the current holder, or a
    /// backend error.
    ///
    /// # Cancel safety
    ///
    /// If cancelled, the key may still be held until its lease runs out.
    async fn release(&self, lease: &Lease) -> Result<(), Error>;

    /// Deletes up to `batch` records whose TTL has passed; returns how many.
    ///
    /// # Errors
    ///
    /// A backend error.
    ///
    /// # Cancel safety
    ///
    /// Safe: each batch is one statement.
    async fn reap_expired(&self, batch: u32) -> Result<u64, Error>;
}

fn _obj_safe(_: &dyn IdempotencyStore) {}
