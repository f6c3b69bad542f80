//! Per-key rate limiting: a token bucket per API key (by principal), in
//! memory. Several `serve` instances each allow the rate; set it per
//! instance accordingly (docs/operations.md).

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

/// Token buckets by key.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`; `Err(seconds)` to wait when none is left.
    pub(crate) fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Bounded memory: forget full buckets.
            let burst = self.burst;
            buckets.retain(|_, (t, _)| *t < burst);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let l = RateLimiter::new(10, 3);
        let t = Instant::now();
        assert!(l.check_at("a", t).is_ok());
        assert!(l.check_at("a", t).is_ok());
        assert!(l.check_at("a", t).is_ok());
        assert_eq!(l.check_at("a", t), Err(1));
        // Another key has its own bucket.
        assert!(l.check_at("b", t).is_ok());
        // 100 ms later one token is back.
        assert!(l.check_at("a", t + Duration::from_millis(100)).is_ok());
        assert!(l.check_at("a", t + Duration::from_millis(100)).is_err());
    }
}
