//! The consumer handler API, shared by the AMQP consumer and the in-process bus.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;

use crate::IncomingMessage;
use crate::error::BoxError;

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// Try again later, with backoff (e.g. a database or device is down).
    #[error("retry: {0}")]
    Retry(#[source] BoxError),
    /// Never going to work (malformed message): dead-letter it now.
    #[error("reject: {0}")]
    Reject(#[source] BoxError),
}

impl HandlerError {
    /// A retryable failure from anything error-like.
    pub fn retry(e: impl Into<BoxError>) -> Self {
        Self::Retry(e.into())
    }

    /// A permanent failure from anything error-like.
    pub fn reject(e: impl Into<BoxError>) -> Self {
        Self::Reject(e.into())
    }
}

/// Handles one message. Return `Ok(())` only after the handler's own
/// transaction (with its inbox row) has committed: the message is then
/// acknowledged and never delivered to this consumer again, except after a
/// crash between commit and ack, which the inbox turns into a no-op.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Handles `msg`.
    ///
    /// # Errors
    ///
    /// [`HandlerError::Retry`] to be redelivered after a backoff,
    /// [`HandlerError::Reject`] to be dead-lettered.
    async fn handle(&self, msg: &IncomingMessage) -> Result<(), HandlerError>;
}

fn _obj_safe(_: &dyn Handler) {}

/// A [`Handler`] made from an async closure; see [`handler_fn`].
pub struct HandlerFn<F, Fut> {
    f: F,
    _fut: PhantomData<fn() -> Fut>,
}

impl<F, Fut> fmt::Debug for HandlerFn<F, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerFn").finish_non_exhaustive()
    }
}

/// Wraps `f(message) -> Future<Output = Result<(), HandlerError>>` as a [`Handler`].
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F, Fut>
where
    F: Fn(IncomingMessage) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    HandlerFn {
        f,
        _fut: PhantomData,
    }
}

#[async_trait]
impl<F, Fut> Handler for HandlerFn<F, Fut>
where
    F: Fn(IncomingMessage) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    async fn handle(&self, msg: &IncomingMessage) -> Result<(), HandlerError> {
        (self.f)(msg.clone()).await
    }
}
