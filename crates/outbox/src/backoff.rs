//! Exponential backoff with full jitter.

use std::time::Duration;

/// Exponential backoff: `base * 2^(attempt-1)`, capped at `max`, with optional
/// jitter that picks a delay in `[d/2, d]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure. Default: 200 ms.
    pub base: Duration,
    /// The largest delay. Default: 60 s.
    pub max: Duration,
    /// Whether to randomize each delay within `[d/2, d]`. Default: true.
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            max: Duration::from_secs(60),
            jitter: true,
        }
    }
}

impl Backoff {
    /// A backoff growing from `base` to `max`, with jitter.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: true,
        }
    }

    /// The same backoff without jitter (predictable, for tests).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The delay before retry number `attempt` (1 = after the first failure).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let d = self
            .base
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        if self.jitter && !d.is_zero() {
            let half = d / 2;
            let extra = rand::random_range(0..=half.as_micros().min(u128::from(u64::MAX)) as u64);
            half + Duration::from_micros(extra)
        } else {
            d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grows_then_caps() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).without_jitter();
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.delay(0), Duration::from_millis(100));
    }

    proptest! {
        #[test]
        fn jittered_delay_stays_in_bounds(base_ms in 0u64..10_000, max_ms in 0u64..100_000, attempt in 0u32..100) {
            let b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let plain = b.without_jitter().delay(attempt);
            let d = b.delay(attempt);
            prop_assert!(d <= plain);
            prop_assert!(d >= plain / 2);
            prop_assert!(plain <= Duration::from_millis(max_ms));
        }

        #[test]
        fn delay_is_monotonic(base_ms in 1u64..10_000, max_ms in 1u64..100_000, attempt in 1u32..60) {
            let b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms)).without_jitter();
            prop_assert!(b.delay(attempt) <= b.delay(attempt + 1));
        }
    }
}
