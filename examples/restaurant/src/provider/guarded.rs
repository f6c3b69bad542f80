//! The provider behind a circuit breaker and retries (counterfoil-breaker).
//!
//! - A declined card is the customer's business: it never trips the
//!   breaker (`Outcome::Ignored`), nor does a request the provider rejects.
//! - Timeouts, 5xx and refused connections are failures; enough of them
//!   open the breaker, and calls fail fast with "unavailable" until it
//!   half-opens, so a provider outage does not tie up every saga worker.
//! - Only "unavailable" is retried here (nothing happened, and the call
//!   carries its idempotency key anyway). An in-doubt answer goes back to
//!   the saga, which reconciles by looking the key up.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use counterfoil_breaker::{
    Backoff, CircuitBreaker, Error as BreakerError, OpenDuration, Outcome, Retry, RetryBudget,
    Transience, Window,
};

use super::{Operation, PaymentProvider, ProviderError, Request};

/// A provider guarded by a breaker and retries.
#[derive(Debug, Clone)]
pub(crate) struct GuardedProvider {
    inner: Arc<dyn PaymentProvider>,
    breaker: CircuitBreaker,
    retry: Retry,
}

impl GuardedProvider {
    pub(crate) fn new(
        inner: Arc<dyn PaymentProvider>,
    ) -> Result<Self, counterfoil_breaker::BuildError> {
        let breaker = CircuitBreaker::builder()
            .name("payment-provider")
            .window(Window::Count(50))
            .minimum_calls(10)
            .failure_rate(0.5)
            .slow_calls(Duration::from_secs(3), 0.8)
            .open_duration(
                OpenDuration::backoff(Duration::from_secs(2), Duration::from_secs(30)).jitter(0.2),
            )
            .build()?;
        let retry = Retry::builder()
            .backoff(
                Backoff::exponential(Duration::from_millis(100)).max_delay(Duration::from_secs(1)),
            )
            .max_attempts(3)
            .deadline(Duration::from_secs(5))
            .budget(RetryBudget::default())
            .build()?;
        Ok(Self {
            inner,
            breaker,
            retry,
        })
    }
}

fn classify<T>(r: &Result<T, ProviderError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Success,
        Err(ProviderError::Rejected(_)) => Outcome::Ignored,
        Err(ProviderError::InDoubt(_) | ProviderError::Unavailable(_)) => Outcome::Failure,
    }
}

fn transience(e: &BreakerError<ProviderError>) -> Transience {
    e.transience(|e| match e {
        ProviderError::Unavailable(_) => Transience::Transient,
        ProviderError::InDoubt(_) | ProviderError::Rejected(_) => Transience::Permanent,
    })
}

fn flatten(e: BreakerError<ProviderError>) -> ProviderError {
    match e {
        BreakerError::Inner(e) => e,
        BreakerError::Rejected(r) => ProviderError::Unavailable(format!("circuit open: {r}")),
        other => ProviderError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl PaymentProvider for GuardedProvider {
    async fn execute(
        &self,
        key: &str,
        req: &Request,
        traceparent: Option<&str>,
    ) -> Result<Operation, ProviderError> {
        self.retry
            .run(
                || {
                    self.breaker
                        .call_classified(self.inner.execute(key, req, traceparent), classify)
                },
                transience,
            )
            .await
            .map_err(flatten)
    }

    async fn lookup(&self, key: &str) -> Result<Option<Operation>, ProviderError> {
        self.retry
            .run(
                || {
                    self.breaker
                        .call_classified(self.inner.lookup(key), classify)
                },
                transience,
            )
            .await
            .map_err(flatten)
    }
}
