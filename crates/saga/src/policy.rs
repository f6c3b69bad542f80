//! Retry policy: how many attempts a step gets and how long to wait between them.

use std::time::Duration;

/// How often and how fast a step (or a compensation) is retried.
///
/// Backoff is exponential without jitter, so schedules are reproducible in tests; the lease
/// claim already spreads work across workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before giving up, counting the first. `0` means no limit.
    /// Default: 5.
    pub max_attempts: u32,
    /// Wait after the first failed attempt. Default: 1 s.
    pub initial_backoff: Duration,
    /// Longest wait between attempts. Default: 5 min.
    pub max_backoff: Duration,
    /// Factor the wait grows by after each attempt. Default: 2.
    pub multiplier: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            multiplier: 2,
        }
    }
}

impl RetryPolicy {
    /// A policy that retries without limit.
    pub fn forever() -> Self {
        Self {
            max_attempts: 0,
            ..Self::default()
        }
    }

    /// The default policy of compensations: 20 attempts, 1 s growing to 5 min.
    pub fn compensation() -> Self {
        Self {
            max_attempts: 20,
            ..Self::default()
        }
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets [`initial_backoff`](Self::initial_backoff).
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Sets [`max_backoff`](Self::max_backoff).
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Whether `attempts_spent` attempts use up the policy.
    pub fn exhausted(&self, attempts_spent: u32) -> bool {
        self.max_attempts != 0 && attempts_spent >= self.max_attempts
    }

    /// The wait after `attempts_spent` failed attempts (1 = after the first).
    pub fn backoff(&self, attempts_spent: u32) -> Duration {
        let mut d = self.initial_backoff;
        for _ in 1..attempts_spent {
            d = d.saturating_mul(self.multiplier.max(1));
            if d >= self.max_backoff {
                return self.max_backoff;
            }
        }
        d.min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_secs(1));
        assert_eq!(p.backoff(2), Duration::from_secs(2));
        assert_eq!(p.backoff(4), Duration::from_secs(8));
        assert_eq!(p.backoff(100), Duration::from_secs(300));
        assert!(!p.exhausted(4));
        assert!(p.exhausted(5));
        assert!(!RetryPolicy::forever().exhausted(u32::MAX));
    }

    proptest! {
        #[test]
        fn backoff_is_monotone_and_bounded(init in 0u64..10_000, max in 0u64..1_000_000, mult in 0u32..10, n in 1u32..200) {
            let p = RetryPolicy { max_attempts: 0, initial_backoff: Duration::from_millis(init), max_backoff: Duration::from_millis(max), multiplier: mult };
            prop_assert!(p.backoff(n) <= p.max_backoff);
            prop_assert!(p.backoff(n) <= p.backoff(n + 1));
        }
    }
}
