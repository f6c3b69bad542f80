//! Retrying an operation: backoff, attempts, deadline, Retry-After, classification, budget.

use std::future::Future;
use std::time::Duration;

use crate::backoff::{Backoff, Jitter};
use crate::budget::RetryBudget;
use crate::error::{BuildError, Error};
use crate::state::State;

/// Whether an error is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transience {
    /// Retrying cannot help (a declined card, a validation error): stop now.
    Permanent,
    /// Retrying may help (a timeout, a 5xx, a refused connection): retry after the backoff.
    Transient,
    /// Retrying may help after this long (a `Retry-After` header, an open breaker): this delay
    /// replaces the backoff's.
    TransientAfter(Duration),
}

impl<E> Error<E> {
    /// Classifies a breaker call's error for [`Retry`]: a rejection by an open breaker is
    /// transient after its [`retry_after`](crate::Rejected::retry_after), by a half-open one
    /// (every probe taken) transient after the backoff, by a forced-open one permanent; the
    /// operation's own error is classified by `inner`.
    pub fn transience(&self, inner: impl FnOnce(&E) -> Transience) -> Transience {
        match self {
            Self::Rejected(r) => match (r.retry_after(), r.state()) {
                (Some(d), _) => Transience::TransientAfter(d),
                (None, State::HalfOpen) => Transience::Transient,
                (None, _) => Transience::Permanent,
            },
            Self::Inner(e) => inner(e),
        }
    }
}

/// Retries an operation with [`Backoff`], up to a number of attempts and a total deadline,
/// within an optional shared [`RetryBudget`]. Cheap to clone.
///
/// Only retry what is safe to repeat: reads, and writes made idempotent by a key the
/// dependency honours.
#[derive(Debug, Clone)]
pub struct Retry {
    backoff: Backoff,
    max_attempts: u32,
    deadline: Option<Duration>,
    budget: Option<RetryBudget>,
}

impl Retry {
    /// A builder starting from 3 attempts, exponential backoff from 100 ms up to 10 s with full
    /// jitter, no deadline, no budget.
    pub fn builder() -> RetryBuilder {
        RetryBuilder {
            retry: Self {
                backoff: Backoff::exponential(Duration::from_millis(100))
                    .max_delay(Duration::from_secs(10))
                    .jitter(Jitter::Full),
                max_attempts: 3,
                deadline: None,
                budget: None,
            },
        }
    }

    /// Runs `op` until it succeeds, `classify` calls its error permanent, the attempts are used
    /// up, the next attempt would start after the deadline, or the budget refuses a retry.
    ///
    /// Sleeps with [`tokio::time::sleep`], so `tokio::time::pause()` drives it in tests.
    ///
    /// # Errors
    ///
    /// The last attempt's error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops retrying; an attempt in flight is dropped with it.
    pub async fn run<T, E, Op, Fut, C>(&self, mut op: Op, classify: C) -> Result<T, E>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Transience,
    {
        let start = tokio::time::Instant::now();
        if let Some(b) = &self.budget {
            b.deposit();
        }
        let mut previous = self.backoff.base();
        let mut attempt: u32 = 1;
        loop {
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let delay = match classify(&err) {
                Transience::Permanent => return Err(err),
                _ if attempt >= self.max_attempts => {
                    tracing::debug!(target: "counterfoil_breaker", attempt, "retry: attempts used up");
                    return Err(err);
                }
                Transience::Transient => {
                    let d = self.backoff.delay(attempt, previous, rand::random::<f64>());
                    previous = d;
                    d
                }
                Transience::TransientAfter(d) => d,
            };
            if let Some(deadline) = self.deadline
                && start.elapsed().saturating_add(delay) >= deadline
            {
                tracing::debug!(target: "counterfoil_breaker", attempt, "retry: deadline reached");
                return Err(err);
            }
            if let Some(b) = &self.budget
                && !b.withdraw()
            {
                tracing::debug!(target: "counterfoil_breaker", attempt, "retry: budget spent");
                return Err(err);
            }
            tracing::debug!(target: "counterfoil_breaker", attempt, delay_ms = delay.as_millis() as u64, "retry: waiting before next attempt");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The backoff.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The most attempts, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The total deadline.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The shared budget.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }
}

/// Builds a [`Retry`].
#[derive(Debug, Clone)]
pub struct RetryBuilder {
    retry: Retry,
}

impl RetryBuilder {
    /// The delays. Default: exponential from 100 ms, up to 10 s, full jitter.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.retry.backoff = backoff;
        self
    }

    /// The most attempts, the first included. Default: 3.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.retry.max_attempts = n;
        self
    }

    /// No attempt starts later than `d` after the first. Default: none.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.retry.deadline = Some(d);
        self
    }

    /// Retries draw from `budget`, shared with other callers. Default: none.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.retry.budget = Some(budget);
        self
    }

    /// Checks the values.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when `max_attempts` is 0.
    pub fn build(self) -> Result<Retry, BuildError> {
        if self.retry.max_attempts == 0 {
            return Err(BuildError("at least one attempt is needed"));
        }
        Ok(self.retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, PartialEq)]
    enum E {
        Busy,
        Declined,
        RetryAfter(u64),
    }

    fn classify(e: &E) -> Transience {
        match e {
            E::Busy => Transience::Transient,
            E::Declined => Transience::Permanent,
            E::RetryAfter(s) => Transience::TransientAfter(Duration::from_secs(*s)),
        }
    }

    fn fixed(delay_ms: u64, attempts: u32) -> RetryBuilder {
        Retry::builder()
            .backoff(Backoff::constant(Duration::from_millis(delay_ms)))
            .max_attempts(attempts)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_until_success() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let r = fixed(100, 5).build().unwrap();
        let out = r
            .run(
                || async {
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(E::Busy)
                    } else {
                        Ok(7)
                    }
                },
                classify,
            )
            .await;
        assert_eq!(out, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_stops_at_once_and_attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let r = fixed(100, 4).build().unwrap();
        let out: Result<(), E> = r
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(E::Declined)
                },
                classify,
            )
            .await;
        assert_eq!(out, Err(E::Declined));
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1);
        let out: Result<(), E> = r
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(E::Busy)
                },
                classify,
            )
            .await;
        assert_eq!(out, Err(E::Busy));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_overrides_backoff_and_deadline_bounds_it() {
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let r = fixed(10, 10)
            .deadline(Duration::from_secs(10))
            .build()
            .unwrap();
        let out: Result<(), E> = r
            .run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err(E::RetryAfter(4))
                },
                classify,
            )
            .await;
        // Attempts at 0 s, 4 s, 8 s; the next would start at 12 s, past the deadline.
        assert_eq!(out, Err(E::RetryAfter(4)));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(start.elapsed(), Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_budget_caps_retries_across_callers() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
        let r = fixed(1, 100).budget(budget.clone()).build().unwrap();
        let calls = AtomicU32::new(0);
        // Ten callers that always fail: ten deposits allow five retries in all.
        let mut tasks = Vec::new();
        for _ in 0..10 {
            tasks.push(r.run(
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), E>(E::Busy)
                },
                classify,
            ));
        }
        for t in futures_join(tasks).await {
            assert_eq!(t, Err(E::Busy));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 15);
    }

    async fn futures_join<F: Future>(fs: Vec<F>) -> Vec<F::Output> {
        let mut out = Vec::new();
        for f in fs {
            out.push(f.await);
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_rejection_waits_for_retry_after() {
        let b = crate::CircuitBreaker::new("psp");
        b.open_for(Duration::from_secs(3));
        let r = fixed(1, 3).build().unwrap();
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let clock_breaker = crate::CircuitBreaker::builder()
            .clock(crate::TokioClock::new())
            .build()
            .unwrap();
        clock_breaker.open_for(Duration::from_secs(3));
        let out = r
            .run(
                || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    clock_breaker.call(async { Ok::<_, E>(1) })
                },
                |e| e.transience(classify),
            )
            .await;
        assert_eq!(out.ok(), Some(1));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert!(matches!(
            b.call(async { Ok::<_, E>(1) }).await,
            Err(Error::Rejected(_))
        ));
        b.force_open();
        let e = b.call(async { Ok::<_, E>(1) }).await.unwrap_err();
        assert_eq!(e.transience(classify), Transience::Permanent);
        let half = crate::CircuitBreaker::builder()
            .half_open_calls(1)
            .build()
            .unwrap();
        half.open_for(Duration::ZERO);
        let _probe = half.try_acquire().unwrap();
        let e = half.call(async { Ok::<_, E>(1) }).await.unwrap_err();
        assert_eq!(e.transience(classify), Transience::Transient);
    }
}
