//! The sliding windows that hold recent outcomes: count ring, rolling time buckets, consecutive.

use std::time::Duration;

use crate::config::{Config, Window};

/// One recorded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

/// What the window holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
    pub(crate) consecutive_failures: u32,
}

/// Which threshold a window crossed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Exceeded {
    FailureRate(f64),
    SlowCallRate(f64),
    ConsecutiveFailures(u32),
}

impl Totals {
    pub(crate) fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    pub(crate) fn slow_call_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }

    /// The threshold these totals cross under `config`, judged as a closed window.
    pub(crate) fn exceeded(&self, config: &Config) -> Option<Exceeded> {
        match config.window {
            Window::ConsecutiveFailures(n) => (self.consecutive_failures >= n)
                .then_some(Exceeded::ConsecutiveFailures(self.consecutive_failures)),
            Window::Count(n) => self.rates_exceeded(config, config.minimum_calls.min(n)),
            Window::Time(_) => self.rates_exceeded(config, config.minimum_calls),
        }
    }

    /// The threshold these totals cross, given at least `minimum` calls.
    pub(crate) fn rates_exceeded(&self, config: &Config, minimum: u32) -> Option<Exceeded> {
        if self.calls == 0 || self.calls < u64::from(minimum) {
            return None;
        }
        let fr = self.failure_rate();
        if fr >= config.failure_rate {
            return Some(Exceeded::FailureRate(fr));
        }
        let sr = self.slow_call_rate();
        if config.slow_call_duration.is_some() && sr >= config.slow_call_rate {
            return Some(Exceeded::SlowCallRate(sr));
        }
        None
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The last `len` calls as two bitsets in a ring.
#[derive(Debug)]
pub(crate) struct CountWindow {
    size: u32,
    start: u32,
    len: u32,
    failures: u64,
    slow: u64,
    failure_bits: Box<[u64]>,
    slow_bits: Box<[u64]>,
}

impl CountWindow {
    fn new(size: u32) -> Self {
        let words = (size as usize).div_ceil(64);
        Self {
            size,
            start: 0,
            len: 0,
            failures: 0,
            slow: 0,
            failure_bits: vec![0; words].into_boxed_slice(),
            slow_bits: vec![0; words].into_boxed_slice(),
        }
    }

    fn get(bits: &[u64], i: u32) -> bool {
        bits.get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn put(bits: &mut [u64], i: u32, on: bool) {
        if let Some(w) = bits.get_mut((i / 64) as usize) {
            if on {
                *w |= 1 << (i % 64);
            } else {
                *w &= !(1 << (i % 64));
            }
        }
    }

    fn push(&mut self, r: Record) {
        let slot = if self.len < self.size {
            self.len += 1;
            (self.start + self.len - 1) % self.size
        } else {
            let oldest = self.start;
            self.failures -= u64::from(Self::get(&self.failure_bits, oldest));
            self.slow -= u64::from(Self::get(&self.slow_bits, oldest));
            self.start = (self.start + 1) % self.size;
            oldest
        };
        Self::put(&mut self.failure_bits, slot, r.failure);
        Self::put(&mut self.slow_bits, slot, r.slow);
        self.failures += u64::from(r.failure);
        self.slow += u64::from(r.slow);
    }

    /// The records, oldest first.
    fn records(&self) -> impl Iterator<Item = Record> + '_ {
        (0..self.len).map(move |k| {
            let i = (self.start + k) % self.size;
            Record {
                failure: Self::get(&self.failure_bits, i),
                slow: Self::get(&self.slow_bits, i),
            }
        })
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// The calls of the last `n` seconds in `n` one-second buckets.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
}

impl TimeWindow {
    fn new(seconds: u32) -> Self {
        Self {
            buckets: vec![Bucket::default(); seconds as usize].into_boxed_slice(),
        }
    }

    fn seconds(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn push(&mut self, r: Record, now: Duration) {
        // Second 0 is "never used", so seconds count from 1.
        let second = now.as_secs() + 1;
        let n = self.seconds();
        if let Some(b) = self.buckets.get_mut((second % n) as usize) {
            if b.second != second {
                *b = Bucket {
                    second,
                    ..Bucket::default()
                };
            }
            b.calls = b.calls.saturating_add(1);
            b.failures = b.failures.saturating_add(u32::from(r.failure));
            b.slow = b.slow.saturating_add(u32::from(r.slow));
        }
    }

    /// Adds `n` successes to `second` (counted from 1), if that second can still be in the
    /// window.
    fn add_successes(&mut self, second: u64, n: u64) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let len = self.seconds();
        if let Some(b) = self.buckets.get_mut((second % len) as usize) {
            if b.second == second {
                b.calls = b.calls.saturating_add(n);
            } else if b.second < second {
                *b = Bucket {
                    second,
                    calls: n,
                    ..Bucket::default()
                };
            }
        }
    }

    fn totals(&self, now: Duration) -> Totals {
        let second = now.as_secs() + 1;
        let n = self.seconds();
        let mut t = Totals::default();
        for b in self.buckets.iter() {
            if b.second != 0 && b.second <= second && b.second + n > second {
                t.calls += u64::from(b.calls);
                t.failures += u64::from(b.failures);
                t.slow += u64::from(b.slow);
            }
        }
        t
    }
}

/// The recorded recent calls, in the shape the configured [`Window`] asks for.
#[derive(Debug)]
pub(crate) enum WindowState {
    Count(CountWindow),
    Time(TimeWindow),
    Consecutive(u32),
}

impl WindowState {
    pub(crate) fn new(window: Window) -> Self {
        match window {
            Window::Count(n) => Self::Count(CountWindow::new(n)),
            Window::Time(n) => Self::Time(TimeWindow::new(n)),
            Window::ConsecutiveFailures(_) => Self::Consecutive(0),
        }
    }

    /// Adds a call; `now` is read only for time windows.
    pub(crate) fn record(&mut self, r: Record, now: impl FnOnce() -> Duration) {
        match self {
            Self::Count(w) => w.push(r),
            Self::Time(w) => w.push(r, now()),
            Self::Consecutive(n) => {
                *n = if r.failure { n.saturating_add(1) } else { 0 };
            }
        }
    }

    pub(crate) fn totals(&self, now: impl FnOnce() -> Duration) -> Totals {
        match self {
            Self::Count(w) => Totals {
                calls: u64::from(w.len),
                failures: w.failures,
                slow: w.slow,
                consecutive_failures: 0,
            },
            Self::Time(w) => w.totals(now()),
            Self::Consecutive(n) => Totals {
                consecutive_failures: *n,
                ..Totals::default()
            },
        }
    }

    /// Adds successes counted outside the lock to a time window's `second` (from 1).
    pub(crate) fn add_successes(&mut self, second: u64, n: u64) {
        if let Self::Time(w) = self
            && second != 0
            && n != 0
        {
            w.add_successes(second, n);
        }
    }

    /// Whether one more fast (not slow) success would leave the window unchanged, so it need
    /// not be recorded at all.
    pub(crate) fn success_is_noop(&self) -> bool {
        match self {
            Self::Count(w) => w.len == w.size && w.failures == 0 && w.slow == 0,
            Self::Time(_) => false,
            Self::Consecutive(n) => *n == 0,
        }
    }

    /// Adapts to a new window shape, keeping what still fits: the newest calls of a count
    /// window, the buckets of a time window, the consecutive count. A change of kind starts empty.
    pub(crate) fn reshape(&mut self, window: Window, now: impl FnOnce() -> Duration) {
        match (&mut *self, window) {
            (Self::Count(old), Window::Count(n)) if old.size != n => {
                let mut new = CountWindow::new(n);
                let skip = old.len.saturating_sub(n) as usize;
                for r in old.records().skip(skip) {
                    new.push(r);
                }
                *old = new;
            }
            (Self::Count(_), Window::Count(_))
            | (Self::Consecutive(_), Window::ConsecutiveFailures(_)) => {}
            (Self::Time(old), Window::Time(n)) if old.seconds() != u64::from(n) => {
                // Only the buckets still in the old window carry over.
                let second = now().as_secs() + 1;
                let len = old.seconds();
                let mut new = TimeWindow::new(n);
                for b in old
                    .buckets
                    .iter()
                    .filter(|b| b.second != 0 && b.second <= second && b.second + len > second)
                {
                    if let Some(slot) = new.buckets.get_mut((b.second % u64::from(n)) as usize)
                        && slot.second < b.second
                    {
                        *slot = *b;
                    }
                }
                *old = new;
            }
            (Self::Time(_), Window::Time(_)) => {}
            _ => *self = Self::new(window),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Record = Record {
        failure: false,
        slow: false,
    };
    const FAIL: Record = Record {
        failure: true,
        slow: false,
    };
    const SLOW: Record = Record {
        failure: false,
        slow: true,
    };
    fn zero() -> Duration {
        Duration::ZERO
    }

    #[test]
    fn count_window_evicts_oldest() {
        let mut w = WindowState::new(Window::Count(3));
        w.record(FAIL, zero);
        w.record(OK, zero);
        w.record(SLOW, zero);
        assert_eq!(w.totals(zero).failures, 1);
        assert!(!w.success_is_noop());
        w.record(OK, zero);
        let t = w.totals(zero);
        assert_eq!((t.calls, t.failures, t.slow), (3, 0, 1));
        w.record(OK, zero);
        w.record(OK, zero);
        assert!(w.success_is_noop());
    }

    #[test]
    fn count_window_spans_words() {
        let mut w = WindowState::new(Window::Count(130));
        for i in 0..300 {
            w.record(if i % 3 == 0 { FAIL } else { OK }, zero);
        }
        // The last 130 of 0..300: indices 170..300, of which 43 are multiples of 3.
        assert_eq!(w.totals(zero).failures, 43);
        assert_eq!(w.totals(zero).calls, 130);
    }

    #[test]
    fn time_window_rolls_per_second() {
        let mut w = WindowState::new(Window::Time(3));
        let at = |s: u64| move || Duration::from_millis(s);
        w.record(FAIL, at(0));
        w.record(OK, at(1_500));
        w.record(OK, at(2_999));
        assert_eq!(w.totals(at(2_999)).calls, 3);
        // At 3.0 s the bucket of second 0 has left the window.
        let t = w.totals(at(3_000));
        assert_eq!((t.calls, t.failures), (2, 0));
        // Its slot is reused by second 3.
        w.record(FAIL, at(3_100));
        let t = w.totals(at(3_200));
        assert_eq!((t.calls, t.failures), (3, 1));
        assert_eq!(w.totals(at(60_000)).calls, 0);
    }

    #[test]
    fn consecutive_resets_on_success() {
        let mut w = WindowState::new(Window::ConsecutiveFailures(3));
        w.record(FAIL, zero);
        w.record(FAIL, zero);
        assert_eq!(w.totals(zero).consecutive_failures, 2);
        w.record(OK, zero);
        assert!(w.success_is_noop());
        assert_eq!(w.totals(zero).consecutive_failures, 0);
    }

    #[test]
    fn reshape_keeps_newest_calls() {
        let mut w = WindowState::new(Window::Count(4));
        for r in [FAIL, FAIL, OK, FAIL] {
            w.record(r, zero);
        }
        w.reshape(Window::Count(2), zero);
        let t = w.totals(zero);
        assert_eq!((t.calls, t.failures), (2, 1));
        w.reshape(Window::Count(10), zero);
        assert_eq!(w.totals(zero).calls, 2);
        w.reshape(Window::Time(5), zero);
        assert_eq!(w.totals(zero).calls, 0);
        w.record(FAIL, zero);
        w.reshape(Window::Time(2), zero);
        assert_eq!(w.totals(zero).failures, 1);
    }
}
