//! The storage trait every outbox backend implements.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Error, MessageId, OutboxMessage};

/// How the relay picks messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClaimMode {
    /// Any available message, oldest first. Highest throughput.
    #[default]
    Unordered,
    /// Per partition key, only the oldest undelivered message is claimable,
    /// so at most one message of a key is in flight across all relays and
    /// keys are delivered in enqueue order. Messages without a key are
    /// claimed as in [`ClaimMode::Unordered`].
    Ordered,
}

/// A fencing token identifying one claim; acks and failures must carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken(pub i64);

impl LeaseToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        // Never 0, so a zeroed column can never match.
        Self(rand::random_range(1..i64::MAX))
    }
}

/// A claim request.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest {
    /// At most this many messages.
    pub batch_size: u32,
    /// How long the claim is exclusive. After it, another relay may take the messages.
    pub lease: Duration,
    /// Which messages are eligible.
    pub mode: ClaimMode,
    /// Current time, ms since the epoch.
    pub now: i64,
}

/// A message claimed under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedMessage {
    /// Store-assigned sequence number (enqueue order).
    pub seq: i64,
    /// Failed publish attempts so far.
    pub attempts: u32,
    /// Enqueue time, ms since the epoch.
    pub created_at: i64,
    /// The message; `available_at` is always set.
    pub message: OutboxMessage,
}

/// A claimed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedBatch {
    /// The token fencing acks and failures of this batch.
    pub lease: LeaseToken,
    /// The messages, in `seq` order.
    pub messages: Vec<ClaimedMessage>,
}

/// What to do with a message whose publish failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Try again at `at` (ms since the epoch).
    RetryAt {
        /// When.
        at: i64,
        /// Whether this failure counts towards the attempt limit
        /// (broker outages do not).
        count_attempt: bool,
    },
    /// Move it to the dead-letter table.
    Dead,
}

/// One failed publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The message's `seq`.
    pub seq: i64,
    /// The error text, kept with the row.
    pub error: String,
    /// Retry or dead-letter.
    pub disposition: Disposition,
}

/// Backlog figures for metrics and health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Undelivered messages (available, delayed or in flight).
    pub pending: u64,
    /// Enqueue time of the oldest undelivered message.
    pub oldest_created_at: Option<i64>,
    /// Messages in the dead-letter table.
    pub dead: u64,
}

/// A message in the dead-letter table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message as enqueued.
    pub message: OutboxMessage,
    /// Failed attempts.
    pub attempts: u32,
    /// The last error.
    pub last_error: String,
    /// Enqueue time.
    pub created_at: i64,
    /// When it was dead-lettered.
    pub dead_at: i64,
}

/// Storage for outbox rows; one implementation per backend.
///
/// Enqueueing is not here: it must happen inside the caller's transaction, so
/// it is an inherent method of each backend ([`PgOutboxStore::enqueue`](crate::PgOutboxStore),
/// [`SqliteOutboxStore::enqueue`](crate::SqliteOutboxStore),
/// [`InMemoryOutboxStore::enqueue`](crate::InMemoryOutboxStore::enqueue)).
#[async_trait]
pub trait OutboxStore: Send + Sync + Debug {
    /// Claims up to `batch_size` available messages under a new lease,
    /// committed before returning (no transaction stays open).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    ///
    /// # Cancel safety
    ///
    /// Cancelling may leave messages leased until the lease expires; they are then claimable again.
    async fn claim(&self, req: ClaimRequest) -> Result<ClaimedBatch, Error>;

    /// Marks messages delivered, only if still held under `lease`. Rows are
    /// deleted, or kept with a delivery time when `retain` is true.
    /// Returns how many rows matched.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    ///
    /// # Cancel safety
    ///
    /// Cancelling before completion leaves the messages leased; they are re-published later (duplicates, never loss).
    async fn ack(
        &self,
        lease: LeaseToken,
        seqs: &[i64],
        now: i64,
        retain: bool,
    ) -> Result<u64, Error>;

    /// Records failed publishes, only for rows still held under `lease`.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    ///
    /// # Cancel safety
    ///
    /// As for [`OutboxStore::ack`].
    async fn fail(&self, lease: LeaseToken, failures: &[Failure], now: i64) -> Result<u64, Error>;

    /// Deletes up to `limit` delivered rows delivered before `before`.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: each call is one statement.
    async fn cleanup(&self, before: i64, limit: u32) -> Result<u64, Error>;

    /// Backlog figures.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    async fn backlog(&self) -> Result<Backlog, Error>;

    /// Lists dead letters, oldest first, starting after `after` (an id from a previous page).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    async fn dead_letters(
        &self,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, Error>;

    /// Moves dead letters back to the outbox with zero attempts, available at `now`.
    /// Returns how many were moved. A replayed message goes behind messages
    /// of its partition key that were enqueued meanwhile.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    ///
    /// # Cancel safety
    ///
    /// Atomic: either all listed messages move or none.
    async fn replay(&self, ids: &[MessageId], now: i64) -> Result<u64, Error>;

    /// Deletes dead letters for good. Returns how many were deleted.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    ///
    /// # Cancel safety
    ///
    /// Atomic.
    async fn discard(&self, ids: &[MessageId]) -> Result<u64, Error>;
}

fn _obj_safe(_: &dyn OutboxStore) {}
