//! [`Retry`] as a tower [`Policy`], for `tower::retry::RetryLayer`.

use std::fmt;
use std::time::Duration;

use tower::retry::Policy;

use crate::retry::{Retry, Transience};

/// A tower retry [`Policy`] with a [`Retry`]'s backoff, attempts, deadline and budget.
///
/// `classify` looks at each result: `None` accepts it (a success, or an answer not worth
/// retrying), `Some(transience)` asks for another attempt. Requests must be `Clone`.
///
/// ```
/// use std::time::Duration;
/// use counterfoil_breaker::{Retry, RetryPolicy, Transience};
/// use tower::{Service, ServiceExt, retry::RetryLayer, Layer, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let policy = RetryPolicy::new(Retry::builder().build().unwrap(), |r: &Result<u16, ()>| match r {
///     Ok(503) => Some(Transience::Transient),
///     _ => None,
/// });
/// let mut svc = RetryLayer::new(policy).layer(service_fn(|_: ()| async { Ok::<u16, ()>(200) }));
/// assert_eq!(svc.ready().await.unwrap().call(()).await, Ok(200));
/// # }
/// ```
#[derive(Clone)]
pub struct RetryPolicy<C> {
    retry: Retry,
    classify: C,
    attempt: u32,
    previous: Duration,
    started: Option<tokio::time::Instant>,
}

impl<C> RetryPolicy<C> {
    /// A policy retrying as `retry` says, results judged by `classify`.
    pub fn new(retry: Retry, classify: C) -> Self {
        let previous = retry.backoff().base();
        Self {
            retry,
            classify,
            attempt: 1,
            previous,
            started: None,
        }
    }
}

impl<C> fmt::Debug for RetryPolicy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("retry", &self.retry)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl<Req, Res, E, C> Policy<Req, Res, E> for RetryPolicy<C>
where
    Req: Clone,
    C: Fn(&Result<Res, E>) -> Option<Transience>,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        let delay = match (self.classify)(result)? {
            Transience::Permanent => return None,
            _ if self.attempt >= self.retry.max_attempts() => return None,
            Transience::Transient => {
                let d =
                    self.retry
                        .backoff()
                        .delay(self.attempt, self.previous, rand::random::<f64>());
                self.previous = d;
                d
            }
            Transience::TransientAfter(d) => d,
        };
        if let (Some(deadline), Some(started)) = (self.retry.deadline(), self.started)
            && started.elapsed().saturating_add(delay) >= deadline
        {
            return None;
        }
        if let Some(b) = self.retry.budget()
            && !b.withdraw()
        {
            return None;
        }
        self.attempt += 1;
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        if self.attempt == 1 {
            // A new request (tower asks the service's own policy first, then each request's
            // clone for its retries).
            self.started = Some(tokio::time::Instant::now());
            if let Some(b) = self.retry.budget() {
                b.deposit();
            }
        }
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Backoff;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tower::retry::RetryLayer;
    use tower::{Layer, Service, ServiceExt, service_fn};

    #[tokio::test(start_paused = true)]
    async fn retries_503_with_backoff_until_ok() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let inner = service_fn(move |_: ()| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<u16, ()>(if n < 2 { 503 } else { 200 }) }
        });
        let retry = Retry::builder()
            .backoff(Backoff::constant(Duration::from_millis(250)))
            .max_attempts(5)
            .build()
            .unwrap();
        let policy = RetryPolicy::new(retry, |r: &Result<u16, ()>| match r {
            Ok(503) => Some(Transience::Transient),
            Ok(429) => Some(Transience::TransientAfter(Duration::from_secs(2))),
            _ => None,
        });
        let mut svc = RetryLayer::new(policy).layer(inner);
        let start = tokio::time::Instant::now();
        assert_eq!(svc.ready().await.unwrap().call(()).await, Ok(200));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        // The next request starts with fresh attempts.
        calls.store(0, Ordering::SeqCst);
        assert_eq!(svc.ready().await.unwrap().call(()).await, Ok(200));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_max_attempts_and_on_permanent() {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let inner = service_fn(move |code: u16| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<u16, ()>(code) }
        });
        let retry = Retry::builder()
            .backoff(Backoff::constant(Duration::from_millis(1)))
            .max_attempts(3)
            .build()
            .unwrap();
        let policy = RetryPolicy::new(retry, |r: &Result<u16, ()>| match r {
            Ok(503) => Some(Transience::Transient),
            Ok(400) => Some(Transience::Permanent),
            _ => None,
        });
        let mut svc = RetryLayer::new(policy).layer(inner);
        assert_eq!(svc.ready().await.unwrap().call(503).await, Ok(503));
        assert_eq!(calls.swap(0, Ordering::SeqCst), 3);
        assert_eq!(svc.ready().await.unwrap().call(400).await, Ok(400));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
