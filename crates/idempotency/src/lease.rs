//! Leases with fencing tokens, and recovery points.

use std::time::Duration;

use crate::key::IdempotencyKey;

/// A phase reached by a holder and the state it needs to resume from there
/// (Stripe's "recovery points").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPoint {
    /// The phase name, e.g. `charge_created`.
    pub phase: String,
    /// Whatever the next phase needs, e.g. the provider's charge id.
    pub state: Vec<u8>,
}

impl RecoveryPoint {
    /// A recovery point.
    pub fn new(phase: impl Into<String>, state: impl Into<Vec<u8>>) -> Self {
        Self {
            phase: phase.into(),
            state: state.into(),
        }
    }
}

/// The right to execute the request for a key, until `expires_at_ms`.
///
/// Every write (`checkpoint`, `complete`, `release`) is fenced by
/// [`token`](Self::token): once another caller has taken the key over, the
/// old lease's writes fail with [`Error::LeaseLost`](crate::Error::LeaseLost)
/// and change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub(crate) key: std::sync::Arc<IdempotencyKey>,
    pub(crate) token: i64,
    pub(crate) expires_at_ms: i64,
    pub(crate) duration: Duration,
    pub(crate) recovery: Option<RecoveryPoint>,
    pub(crate) taken_over: bool,
}

impl Lease {
    /// The key held.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// The fencing token: strictly increasing for a key across holders
    /// (also across reaping, since tokens are at least the claim time in ms).
    pub fn token(&self) -> i64 {
        self.token
    }

    /// When the lease runs out, in ms since the Unix epoch, as last known.
    pub fn expires_at_ms(&self) -> i64 {
        self.expires_at_ms
    }

    /// How long the lease lasts from a claim or checkpoint.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The last recovery point recorded by a previous holder (or by this one).
    pub fn recovery_point(&self) -> Option<&RecoveryPoint> {
        self.recovery.as_ref()
    }

    /// Whether this lease was taken over from a holder whose lease ran out.
    pub fn is_takeover(&self) -> bool {
        self.taken_over
    }
}

/// How long a claim holds the key and how long the record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeginOptions {
    /// How long the holder may work before another caller can take over.
    /// Default: 30 s.
    pub lease: Duration,
    /// How long the record (and its stored response) is kept. Default: 24 h.
    pub ttl: Duration,
}

impl Default for BeginOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl BeginOptions {
    /// Options with this lease and the default TTL.
    pub fn with_lease(lease: Duration) -> Self {
        Self {
            lease,
            ..Self::default()
        }
    }

    /// Sets the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }
}
