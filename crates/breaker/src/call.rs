//! The future returned by [`CircuitBreaker::call`](crate::CircuitBreaker::call).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::breaker::Inner;
use crate::error::Error;
use crate::outcome::Classify;
use crate::permit::Permit;

pin_project! {
    /// A call through a breaker: asks for a permit when first polled, then runs the operation
    /// and records its outcome.
    ///
    /// Dropping it after the permit was granted and before the operation finished records
    /// nothing and gives a half-open probe permit back.
    #[must_use = "futures do nothing unless polled"]
    pub struct Call<'a, F, C> {
        #[pin]
        future: F,
        breaker: &'a Inner,
        permit: Option<Permit<'a>>,
        classify: C,
        started: bool,
    }
}

impl<'a, F, C> Call<'a, F, C> {
    #[inline]
    pub(crate) fn new(breaker: &'a Inner, future: F, classify: C) -> Self {
        Self {
            future,
            breaker,
            permit: None,
            classify,
            started: false,
        }
    }
}

impl<F, C, T, E> Future for Call<'_, F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    type Output = Result<T, Error<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if !*this.started {
            *this.started = true;
            match this.breaker.acquire() {
                Ok(ticket) => *this.permit = Some(Permit::new(this.breaker, ticket)),
                Err(rejected) => return Poll::Ready(Err(Error::Rejected(rejected))),
            }
        }
        let result = ready!(this.future.poll(cx));
        if let Some(p) = this.permit.take() {
            p.record(this.classify.classify(&result));
        }
        Poll::Ready(result.map_err(Error::Inner))
    }
}

impl<F, C> fmt::Debug for Call<'_, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("started", &self.started)
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}
