//! Relay counters and the names of the exported metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Gauge: undelivered messages.
pub const BACKLOG: &str = "outbox_backlog_messages";
/// Gauge: age in seconds of the oldest undelivered message.
pub const OLDEST_AGE: &str = "outbox_oldest_pending_age_seconds";
/// Gauge: messages in the dead-letter table.
pub const DEAD: &str = "outbox_dead_letters";
/// Histogram: seconds to publish a batch and receive its confirms.
pub const PUBLISH_SECONDS: &str = "outbox_publish_duration_seconds";
/// Histogram: seconds from enqueue (commit) to confirm, per message.
pub const DELIVERY_LAG_SECONDS: &str = "outbox_delivery_lag_seconds";
/// Histogram: attempts a message needed, recorded when it is delivered or dead-lettered.
pub const ATTEMPTS: &str = "outbox_delivery_attempts";
/// Counter: messages confirmed by the broker.
pub const PUBLISHED: &str = "outbox_published_total";
/// Counter: failed publishes (label `reason`).
pub const FAILED: &str = "outbox_publish_failures_total";
/// Gauge: bytes of WAL the WAL outbox's replication slot has not confirmed.
pub const STREAM_LAG_BYTES: &str = "outbox_stream_lag_bytes";
/// Counter: messages moved to the dead-letter table.
pub const DEAD_LETTERED: &str = "outbox_dead_lettered_total";

/// Cumulative counters of one relay, for tests and health endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RelayStats {
    /// Messages claimed.
    pub claimed: u64,
    /// Messages confirmed and acked.
    pub published: u64,
    /// Failed publishes.
    pub failed: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Acks or failures that found the lease already lost.
    pub lease_lost: u64,
}

#[derive(Debug, Default)]
pub(crate) struct AtomicStats {
    pub(crate) claimed: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
}

impl AtomicStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RelayStats {
        RelayStats {
            claimed: self.claimed.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            lease_lost: self.lease_lost.load(Ordering::Relaxed),
        }
    }
}
