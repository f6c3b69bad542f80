//! Delays between retries: exponential growth, a cap, and jitter.

use std::time::Duration;

/// How randomness spreads retry delays, so that callers failed by one outage do not retry in
/// step. With `t = min(max, base × multiplierⁿ)`:
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly `t`.
    None,
    /// Uniform in `[0, t)`: the widest spread, the least total load.
    Full,
    /// Uniform in `[t/2, t)`: never much shorter than planned.
    Equal,
    /// Uniform in `[base, 3 × previous delay)`, capped at `max` (ignores the multiplier): spreads
    /// well and grows on its own.
    Decorrelated,
}

/// Exponential backoff with a maximum delay and [`Jitter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
}

impl Backoff {
    /// Starts at `base`, doubles, caps at 30 s, full jitter.
    pub const fn exponential(base: Duration) -> Self {
        Self {
            base,
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: Jitter::Full,
        }
    }

    /// The same delay every time, no jitter.
    pub const fn constant(delay: Duration) -> Self {
        Self {
            base: delay,
            max: delay,
            multiplier: 1.0,
            jitter: Jitter::None,
        }
    }

    /// The largest delay. Default: 30 s.
    pub const fn max_delay(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The growth per retry (values below 1 count as 1). Default: 2.
    pub const fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m;
        self
    }

    /// The jitter. Default: [`Jitter::Full`].
    pub const fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The delay before retry number `retry` (1 = the first retry), given the previous delay
    /// (for [`Jitter::Decorrelated`]; pass [`Backoff::base`] the first time) and a random number
    /// in `[0, 1)`.
    pub fn delay(&self, retry: u32, previous: Duration, random: f64) -> Duration {
        let r = random.clamp(0.0, 1.0);
        let base = self.base.as_secs_f64();
        let max = self.max.as_secs_f64().max(base);
        let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let t = (base * self.multiplier.max(1.0).powi(exp)).min(max);
        let secs = match self.jitter {
            Jitter::None => t,
            Jitter::Full => t * r,
            Jitter::Equal => t / 2.0 + t / 2.0 * r,
            Jitter::Decorrelated => {
                let hi = (previous.as_secs_f64() * 3.0).max(base);
                (base + (hi - base) * r).min(max)
            }
        };
        Duration::try_from_secs_f64(secs).unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn grows_and_caps() {
        let b = Backoff::exponential(S)
            .max_delay(Duration::from_secs(5))
            .jitter(Jitter::None);
        let d: Vec<u64> = (1..=5).map(|n| b.delay(n, S, 0.5).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 5, 5]);
        assert_eq!(b.delay(u32::MAX, S, 0.5), Duration::from_secs(5));
        assert_eq!(Backoff::constant(S).delay(9, S, 0.9), S);
    }

    #[test]
    fn jitter_kinds_span_their_ranges() {
        let b = Backoff::exponential(S).max_delay(Duration::from_secs(60));
        assert_eq!(b.delay(3, S, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, S, 0.5), Duration::from_secs(2));
        let e = b.jitter(Jitter::Equal);
        assert_eq!(e.delay(3, S, 0.0), Duration::from_secs(2));
        assert_eq!(e.delay(3, S, 0.5), Duration::from_secs(3));
        let d = b.jitter(Jitter::Decorrelated);
        assert_eq!(d.delay(1, S, 0.0), S);
        assert_eq!(
            d.delay(2, Duration::from_secs(10), 0.5),
            Duration::from_millis(15_500)
        );
        assert_eq!(
            d.delay(2, Duration::from_secs(50), 0.9),
            Duration::from_secs(60)
        );
    }

    proptest! {
        #[test]
        fn delays_stay_within_bounds(
            base_ms in 1u64..5_000,
            max_ms in 1u64..120_000,
            retry in 1u32..100,
            prev_ms in 0u64..200_000,
            r in 0.0f64..1.0,
            kind in 0usize..4,
        ) {
            let jitter = [Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Decorrelated][kind];
            let base = Duration::from_millis(base_ms);
            let max = Duration::from_millis(max_ms).max(base);
            let b = Backoff::exponential(base).max_delay(max).jitter(jitter);
            let d = b.delay(retry, Duration::from_millis(prev_ms), r);
            prop_assert!(d <= max + Duration::from_nanos(1));
            if matches!(jitter, Jitter::None | Jitter::Decorrelated) {
                prop_assert!(d + Duration::from_nanos(1) >= base);
            }
        }
    }
}
