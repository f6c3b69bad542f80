//! Monotonic time sources: the system clock, tokio's (pausable) clock and a manual clock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock: time elapsed since an arbitrary origin fixed when the clock was made.
///
/// The breaker reads it only when a configured feature needs the time: a time-based window,
/// slow-call detection, the open state's deadline, the half-open maximum wait.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Time elapsed since this clock's origin; never goes backwards.
    fn now(&self) -> Duration;

    /// Whether time passes on its own. When it does and the breaker runs inside a tokio
    /// runtime, it sets a timer so that open → half-open (and half-open → open after the
    /// maximum wait) happens on time, with its event, even when no call comes. Default: true.
    fn is_real_time(&self) -> bool {
        true
    }
}

fn _obj_safe(_: &dyn Clock) {}

/// The operating system's monotonic clock ([`std::time::Instant`]).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// Tokio's clock ([`tokio::time::Instant`]): the system clock, except that it stands still and
/// jumps with `tokio::time::pause()` and `advance()` in tests.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(to_nanos(by), Ordering::SeqCst);
    }

    /// Moves the clock to `to`, if that is later than now (a monotonic clock never goes back).
    pub fn set(&self, to: Duration) {
        self.nanos.fetch_max(to_nanos(to), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }

    fn is_real_time(&self) -> bool {
        false
    }
}

/// Saturating conversion of a duration to nanoseconds (584 years fit).
pub(crate) fn to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let c = ManualClock::new();
        let shared = c.clone();
        c.advance(Duration::from_secs(2));
        assert_eq!(shared.now(), Duration::from_secs(2));
        c.set(Duration::from_secs(1));
        assert_eq!(c.now(), Duration::from_secs(2));
        c.set(Duration::from_secs(5));
        assert_eq!(shared.now(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = TokioClock::new();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(c.now(), Duration::from_secs(3));
    }

    #[test]
    fn monotonic_clock_never_goes_back() {
        let c = MonotonicClock::new();
        let a = c.now();
        assert!(c.now() >= a);
    }
}
