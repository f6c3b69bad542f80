//! A retry budget shared by all callers of a dependency: retries may add at most a fixed share
//! of extra load, so they cannot multiply an outage.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};

use crate::error::BuildError;

/// A budget of retries, replenished by first attempts: every call deposits, every retry
/// withdraws. Clones share one budget; give one to every caller of the same dependency.
///
/// This is tower's [`TpsBudget`] (the Finagle design) behind validated construction: deposits
/// expire after `ttl`, a retry costs `1 / retry_ratio` deposits, and `min_per_sec` retries a
/// second are always allowed so that a quiet service can still retry.
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<TpsBudget>,
}

impl RetryBudget {
    /// A budget allowing `retry_ratio` retries per call (0.2 = retries add at most 20 % load),
    /// plus `min_per_sec` retries a second, counted over the last `ttl`.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when `ttl` is not within 1 to 60 seconds or `retry_ratio` is not within
    /// 0 to 1000.
    pub fn new(ttl: Duration, min_per_sec: u32, retry_ratio: f32) -> Result<Self, BuildError> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(BuildError(
                "retry budget ttl must be within 1 and 60 seconds",
            ));
        }
        if !(0.0..=1000.0).contains(&retry_ratio) {
            return Err(BuildError("retry ratio must be within 0 and 1000"));
        }
        if min_per_sec >= i32::MAX as u32 {
            return Err(BuildError("retry budget minimum per second is too large"));
        }
        Ok(Self {
            inner: Arc::new(TpsBudget::new(ttl, min_per_sec, retry_ratio)),
        })
    }

    /// Records a first attempt.
    pub fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        self.inner.withdraw()
    }
}

impl Default for RetryBudget {
    /// 20 % extra load and 10 retries a second over 10 seconds, as Finagle and tower.
    fn default() -> Self {
        Self {
            inner: Arc::new(TpsBudget::default()),
        }
    }
}

impl Budget for RetryBudget {
    fn deposit(&self) {
        self.inner.deposit();
    }

    fn withdraw(&self) -> bool {
        self.inner.withdraw()
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RetryBudget").field(&self.inner).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_values_tower_would_panic_on() {
        assert!(RetryBudget::new(Duration::ZERO, 1, 0.1).is_err());
        assert!(RetryBudget::new(Duration::from_secs(61), 1, 0.1).is_err());
        assert!(RetryBudget::new(Duration::from_secs(1), 1, -1.0).is_err());
        assert!(RetryBudget::new(Duration::from_secs(1), 1, f32::NAN).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_calls() {
        let b = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
        let shared = b.clone();
        assert!(!b.withdraw(), "no calls, no minimum: nothing to spend");
        for _ in 0..10 {
            shared.deposit();
        }
        let granted = (0..10).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 5);
    }
}
