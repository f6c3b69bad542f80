//! The in-process bus: the embedded default in place of a broker.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use parking_lot::RwLock;

use crate::handler::{Handler, HandlerError};
use crate::publisher::{PublishError, Publisher};
use crate::{Binding, IncomingMessage, OutboxMessage};

struct Subscription {
    name: String,
    bindings: Vec<Binding>,
    handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .field("bindings", &self.bindings)
            .finish_non_exhaustive()
    }
}

/// A [`Publisher`] that hands messages straight to in-process [`Handler`]s.
///
/// It keeps nothing in memory: a publish is confirmed only once every
/// matching subscriber's handler returned `Ok` (that is, committed). A
/// failing handler makes the publish fail, so the outbox row stays and the
/// relay retries it with backoff, then dead-letters it; a crash loses
/// nothing. Handlers must therefore deduplicate with the inbox: when one of
/// two subscribers fails, both see the message again.
///
/// A message that matches no subscription is [`PublishError::Unroutable`],
/// like a mandatory AMQP publish.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    subs: Arc<RwLock<Vec<Arc<Subscription>>>>,
    timeout: Duration,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBus {
    /// An empty bus; handlers get 30 s per message.
    pub fn new() -> Self {
        Self {
            subs: Arc::default(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Sets how long a handler may take before the publish counts as failed. Default: 30 s.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Subscribes `handler`, under the consumer name `name`, to messages matching any of `bindings`.
    pub fn subscribe(
        &self,
        name: impl Into<String>,
        bindings: impl IntoIterator<Item = Binding>,
        handler: Arc<dyn Handler>,
    ) {
        self.subs.write().push(Arc::new(Subscription {
            name: name.into(),
            bindings: bindings.into_iter().collect(),
            handler,
        }));
    }

    /// Removes the subscription named `name`.
    pub fn unsubscribe(&self, name: &str) {
        self.subs.write().retain(|s| s.name != name);
    }

    async fn deliver(&self, msg: &OutboxMessage) -> Result<(), PublishError> {
        let targets: Vec<Arc<Subscription>> = self
            .subs
            .read()
            .iter()
            .filter(|s| {
                s.bindings
                    .iter()
                    .any(|b| b.matches(&msg.destination.exchange, &msg.destination.routing_key))
            })
            .cloned()
            .collect();
        if targets.is_empty() {
            return Err(PublishError::Unroutable(format!(
                "no subscription for {}/{}",
                msg.destination.exchange, msg.destination.routing_key
            )));
        }
        let incoming = IncomingMessage::from_outbox(msg, 1);
        let results = join_all(targets.iter().map(|s| {
            let incoming = &incoming;
            async move {
                match tokio::time::timeout(self.timeout, s.handler.handle(incoming)).await {
                    Ok(r) => r,
                    Err(_) => Err(HandlerError::retry(format!(
                        "handler `{}` timed out after {:?}",
                        s.name, self.timeout
                    ))),
                }
            }
        }))
        .await;
        let mut failure = None;
        for r in results {
            match r {
                Ok(()) => {}
                Err(HandlerError::Reject(e)) => return Err(PublishError::Rejected(e.to_string())),
                Err(HandlerError::Retry(e)) => {
                    failure = Some(PublishError::HandlerFailed(e.to_string()))
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl Publisher for InProcessBus {
    async fn publish(&self, batch: &[OutboxMessage]) -> Vec<Result<(), PublishError>> {
        join_all(batch.iter().map(|m| self.deliver(m))).await
    }
}
