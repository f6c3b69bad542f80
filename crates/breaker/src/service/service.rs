use std::task::{Context, Poll};

use tower_service::Service;

use super::ResponseFuture;
use crate::breaker::CircuitBreaker;
use crate::error::Error;
use crate::outcome::{Classify, OkIsSuccess};

/// A service whose calls go through a [`CircuitBreaker`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, C = OkIsSuccess> {
    inner: S,
    breaker: CircuitBreaker,
    classify: C,
}

impl<S> CircuitBreakerService<S> {
    /// Wraps `inner`, recording `Ok` as success and `Err` as failure.
    pub fn new(inner: S, breaker: CircuitBreaker) -> Self {
        Self::with_classifier(inner, breaker, OkIsSuccess)
    }
}

impl<S, C> CircuitBreakerService<S, C> {
    /// Wraps `inner`, with `classify` deciding each response's outcome.
    pub fn with_classifier(inner: S, breaker: CircuitBreaker, classify: C) -> Self {
        Self {
            inner,
            breaker,
            classify,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire_owned() {
            Ok(permit) => {
                ResponseFuture::admitted(self.inner.call(req), permit, self.classify.clone())
            }
            Err(rejected) => ResponseFuture::rejected(rejected),
        }
    }
}
