//! Counters and HDR histograms of a run: overall and per second, for the
//! summary and the latency-over-time plot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// Counters of a run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) started: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) not_accepted: AtomicU64,
    pub(crate) http_retries: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) duplicate_mismatch: AtomicU64,
    pub(crate) fiscalized: AtomicU64,
    pub(crate) declined: AtomicU64,
    pub(crate) voided: AtomicU64,
    pub(crate) parked: AtomicU64,
    pub(crate) no_outcome: AtomicU64,
    pub(crate) refunds: AtomicU64,
    pub(crate) reversed: AtomicU64,
    pub(crate) refunds_other: AtomicU64,
    pub(crate) z_reports: AtomicU64,
    pub(crate) ws_reconnects: AtomicU64,
    pub(crate) finished: AtomicU64,
}

impl Counters {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

fn hist() -> Histogram<u64> {
    // Microseconds from 1 µs to 10 minutes, 3 significant digits.
    // Panics only if these constant bounds were invalid (they are not).
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid constant histogram bounds")
}

/// Per-second histograms: two significant digits are enough for a plot,
/// and keep each second's histograms small.
fn second_hist() -> Histogram<u64> {
    // Panics only if these constant bounds were invalid (they are not).
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid constant histogram bounds")
}

/// Seconds kept with their histograms (a late record may still land in
/// them); older ones keep only their percentiles, so a long run does not
/// grow by two histograms a second.
const OPEN_SECONDS: usize = 10;

/// One second of the run.
#[derive(Debug, Clone)]
struct Second {
    accepted: u64,
    fiscalized: u64,
    /// Accept and fiscal latencies, until the second is summarised.
    hists: Option<Box<(Histogram<u64>, Histogram<u64>)>>,
    /// The percentiles, once summarised.
    summary: Option<Point>,
}

impl Second {
    fn new() -> Self {
        Self {
            accepted: 0,
            fiscalized: 0,
            hists: Some(Box::new((second_hist(), second_hist()))),
            summary: None,
        }
    }

    /// Keeps the percentiles and drops the histograms.
    fn summarise(&mut self, second: u64) {
        if self.hists.is_some() {
            self.summary = Some(point(second, self));
            self.hists = None;
        }
    }
}

/// Latencies, overall and per second since the start.
#[derive(Debug)]
pub(crate) struct Latencies {
    start: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    accept: Histogram<u64>,
    fiscal: Histogram<u64>,
    seconds: Vec<Second>,
}

/// A point of the time series.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Point {
    pub(crate) second: u64,
    pub(crate) accepted: u64,
    pub(crate) fiscalized: u64,
    pub(crate) accept_p50_ms: f64,
    pub(crate) accept_p99_ms: f64,
    pub(crate) fiscal_p50_ms: f64,
    pub(crate) fiscal_p99_ms: f64,
    pub(crate) fiscal_max_ms: f64,
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, 600_000_000)
}

impl Latencies {
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            inner: Mutex::new(Inner {
                accept: hist(),
                fiscal: hist(),
                seconds: Vec::new(),
            }),
        }
    }

    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    fn second(inner: &mut Inner, at: Instant, start: Instant) -> Option<&mut Second> {
        let s = usize::try_from(at.saturating_duration_since(start).as_secs()).ok()?;
        if s > 24 * 3600 {
            return None;
        }
        while inner.seconds.len() <= s {
            let n = inner.seconds.len();
            if let Some(old) = n.checked_sub(OPEN_SECONDS)
                && let Some(sec) = inner.seconds.get_mut(old)
            {
                sec.summarise(old as u64);
            }
            inner.seconds.push(Second::new());
        }
        inner.seconds.get_mut(s)
    }

    /// A request accepted `latency` after it was due, at `at`.
    pub(crate) fn accepted(&self, at: Instant, latency: Duration) {
        let us = micros(latency);
        let mut inner = self.inner.lock();
        let _ = inner.accept.record(us);
        if let Some(s) = Self::second(&mut inner, at, self.start) {
            s.accepted += 1;
            if let Some(h) = &mut s.hists {
                let _ = h.0.record(us);
            }
        }
    }

    /// A payment fiscalized `latency` after it was accepted, at `at`.
    pub(crate) fn fiscalized(&self, at: Instant, latency: Duration) {
        let us = micros(latency);
        let mut inner = self.inner.lock();
        let _ = inner.fiscal.record(us);
        if let Some(s) = Self::second(&mut inner, at, self.start) {
            s.fiscalized += 1;
            if let Some(h) = &mut s.hists {
                let _ = h.1.record(us);
            }
        }
    }

    pub(crate) fn accept(&self) -> Percentiles {
        percentiles(&self.inner.lock().accept)
    }

    pub(crate) fn fiscal(&self) -> Percentiles {
        percentiles(&self.inner.lock().fiscal)
    }

    /// The last complete second's point, for progress lines.
    pub(crate) fn last_second(&self) -> Option<Point> {
        let inner = self.inner.lock();
        let s = self.start.elapsed().as_secs().checked_sub(1)?;
        inner
            .seconds
            .get(usize::try_from(s).ok()?)
            .map(|x| point(s, x))
    }

    pub(crate) fn series(&self) -> Vec<Point> {
        let inner = self.inner.lock();
        inner
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| point(i as u64, s))
            .collect()
    }
}

fn point(second: u64, s: &Second) -> Point {
    let q = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0.0
        } else {
            ms(h.value_at_quantile(q))
        }
    };
    match (&s.hists, &s.summary) {
        (Some(h), _) => {
            let (accept, fiscal) = &**h;
            Point {
                second,
                accepted: s.accepted,
                fiscalized: s.fiscalized,
                accept_p50_ms: q(accept, 0.5),
                accept_p99_ms: q(accept, 0.99),
                fiscal_p50_ms: q(fiscal, 0.5),
                fiscal_p99_ms: q(fiscal, 0.99),
                fiscal_max_ms: if fiscal.is_empty() {
                    0.0
                } else {
                    ms(fiscal.max())
                },
            }
        }
        (None, Some(p)) => Point {
            accepted: s.accepted,
            fiscalized: s.fiscalized,
            ..p.clone()
        },
        (None, None) => Point {
            second,
            accepted: s.accepted,
            fiscalized: s.fiscalized,
            accept_p50_ms: 0.0,
            accept_p99_ms: 0.0,
            fiscal_p50_ms: 0.0,
            fiscal_p99_ms: 0.0,
            fiscal_max_ms: 0.0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_series() {
        let start = Instant::now();
        let l = Latencies::new(start);
        for i in 1..=100u64 {
            l.accepted(
                start + Duration::from_millis(10 * i),
                Duration::from_millis(i),
            );
        }
        l.fiscalized(
            start + Duration::from_millis(1500),
            Duration::from_millis(40),
        );
        let a = l.accept();
        assert_eq!(a.count, 100);
        assert!((a.p50_ms - 50.0).abs() < 0.5, "{a:?}");
        assert!((a.p99_ms - 99.0).abs() < 0.5, "{a:?}");
        let s = l.series();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].accepted, 99);
        assert_eq!(s[1].fiscalized, 1);
        assert!((s[1].fiscal_p99_ms - 40.0).abs() < 1.0);
    }

    #[test]
    fn old_seconds_keep_their_percentiles_without_histograms() {
        let start = Instant::now();
        let l = Latencies::new(start);
        for sec in 0..30u64 {
            l.accepted(
                start + Duration::from_secs(sec),
                Duration::from_millis(10 + sec),
            );
        }
        let inner = l.inner.lock();
        let open = inner.seconds.iter().filter(|s| s.hists.is_some()).count();
        assert_eq!(open, OPEN_SECONDS);
        drop(inner);
        let s = l.series();
        assert_eq!(s.len(), 30);
        // Summarised seconds answer as before.
        assert_eq!(s[3].accepted, 1);
        assert!((s[3].accept_p99_ms - 13.0).abs() < 0.2, "{:?}", s[3]);
        assert!((s[29].accept_p50_ms - 39.0).abs() < 0.5, "{:?}", s[29]);
    }
}
