//! The publisher trait: where the relay sends messages.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::OutboxMessage;

/// Why a message was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The broker returned the message: no queue is bound for its routing key,
    /// or the exchange does not exist.
    #[error("unroutable: {0}")]
    Unroutable(String),
    /// The broker refused the message (negative confirm).
    #[error("negatively acknowledged by the broker")]
    Nacked,
    /// The broker or connection is down; does not count as an attempt.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// No confirm within the publisher's timeout; does not count as an attempt.
    #[error("no confirm within {0:?}")]
    TimedOut(std::time::Duration),
    /// An in-process handler failed and asked for a retry.
    #[error("handler failed: {0}")]
    HandlerFailed(String),
    /// The message can never succeed (an in-process handler rejected it);
    /// it is dead-lettered at once.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl PublishError {
    /// Whether the failure is about the infrastructure rather than the
    /// message, so it should not count towards the attempt limit.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::TimedOut(_))
    }

    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Rejected(_))
    }
}

/// Sends messages to a broker and reports, per message, whether the broker
/// has taken responsibility for it.
///
/// `Ok(())` must mean durable acceptance (a publisher confirm, or a consumer
/// that committed), because the relay deletes the row afterwards.
#[async_trait]
pub trait Publisher: Send + Sync + Debug {
    /// Publishes `batch`; returns one result per message, in the same order.
    async fn publish(&self, batch: &[OutboxMessage]) -> Vec<Result<(), PublishError>>;
}

fn _obj_safe(_: &dyn Publisher) {}
