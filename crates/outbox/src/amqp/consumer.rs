//! Consuming from RabbitMQ with manual acks after the handler commits.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{
    BROKER_STEP, QueueTopology, broker, close_channel, close_connection, connect, convert, silent,
    step,
};

/// How often a consuming session checks that its connection is still up.
const CONNECTION_CHECK: Duration = Duration::from_secs(1);
use crate::error::BuildError;
use crate::handler::{Handler, HandlerError};
use crate::{Backoff, Error};

/// Builds an [`AmqpConsumer`].
#[derive(Clone)]
pub struct AmqpConsumerBuilder {
    uri: String,
    topology: QueueTopology,
    handler: Arc<dyn Handler>,
    prefetch: u16,
    concurrency: usize,
    retry_backoff: Backoff,
    reconnect_backoff: Backoff,
    name: String,
}

impl std::fmt::Debug for AmqpConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConsumerBuilder")
            .field("topology", &self.topology)
            .field("prefetch", &self.prefetch)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl AmqpConsumerBuilder {
    /// Unacknowledged deliveries the broker may push ahead. Default: 200.
    pub fn prefetch(mut self, n: u16) -> Self {
        self.prefetch = n;
        self
    }

    /// Messages handled at once. Default: 1, which keeps the queue's order
    /// (and so per-key order). Higher values trade order for throughput.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Delay before a failed message is returned to the queue, by delivery
    /// count. Default: 200 ms doubling to 60 s.
    pub fn retry_backoff(mut self, b: Backoff) -> Self {
        self.retry_backoff = b;
        self
    }

    /// Delay between reconnection attempts. Default: 250 ms doubling to 10 s.
    pub fn reconnect_backoff(mut self, b: Backoff) -> Self {
        self.reconnect_backoff = b;
        self
    }

    /// The consumer tag and connection name. Default: the queue name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] for a zero prefetch or concurrency, or a delivery limit of 0.
    pub fn build(self) -> Result<AmqpConsumer, BuildError> {
        if self.prefetch == 0 {
            return Err(BuildError::invalid("prefetch", "must be at least 1"));
        }
        if self.concurrency == 0 {
            return Err(BuildError::invalid("concurrency", "must be at least 1"));
        }
        if self.topology.delivery_limit == 0 {
            return Err(BuildError::invalid("delivery_limit", "must be at least 1"));
        }
        Ok(AmqpConsumer {
            inner: Arc::new(self),
        })
    }
}

/// Consumes a quorum queue and hands each message to a [`Handler`]: the
/// same handler type the [`InProcessBus`](crate::InProcessBus) calls.
///
/// A message is acknowledged only after the handler returned `Ok` (so after
/// its transaction committed). [`HandlerError::Retry`] returns the message
/// to the queue after a backoff; once the queue's delivery limit is spent
/// the broker moves it to the dead-letter queue. [`HandlerError::Reject`]
/// and messages without a valid message id go to the dead-letter queue at
/// once. The consumer reconnects by itself after a broker restart; messages
/// it had not acknowledged are redelivered, and the inbox drops the ones
/// whose transaction had committed.
#[derive(Debug, Clone)]
pub struct AmqpConsumer {
    inner: Arc<AmqpConsumerBuilder>,
}

/// A running consumer.
#[derive(Debug)]
pub struct ConsumerHandle {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl ConsumerHandle {
    /// Stops consuming (unacknowledged messages return to the queue) and waits.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

impl AmqpConsumer {
    /// Starts building a consumer of `topology` at `uri`, calling `handler`.
    pub fn builder(
        uri: impl Into<String>,
        topology: QueueTopology,
        handler: Arc<dyn Handler>,
    ) -> AmqpConsumerBuilder {
        let name = topology.queue.clone();
        AmqpConsumerBuilder {
            uri: uri.into(),
            topology,
            handler,
            prefetch: 200,
            concurrency: 1,
            retry_backoff: Backoff::default(),
            reconnect_backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(10)),
            name,
        }
    }

    /// Declares the topology (idempotent).
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] when the broker cannot be reached or refuses.
    pub async fn declare(&self) -> Result<(), Error> {
        let conn = connect(&self.inner.uri, &self.inner.name).await?;
        let ch = conn.create_channel().await.map_err(broker)?;
        self.inner.topology.declare(&ch).await?;
        let _ = conn.close(200, "ok".into()).await;
        Ok(())
    }

    /// Deletes the queue, its dead-letter queue and exchange and, with
    /// `with_exchanges`, the bound exchanges (for tests and decommissioning).
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] when the broker cannot be reached or refuses.
    pub async fn delete_topology(&self, with_exchanges: bool) -> Result<(), Error> {
        let conn = connect(&self.inner.uri, &self.inner.name).await?;
        let ch = step("open a channel", conn.create_channel()).await?;
        let deleted =
            tokio::time::timeout(BROKER_STEP, self.inner.topology.delete(&ch, with_exchanges))
                .await
                .map_err(|_| silent("delete the topology"));
        close_connection(&conn).await;
        deleted?
    }

    /// Runs on the current Tokio runtime until shut down.
    pub fn spawn(&self) -> ConsumerHandle {
        let cancel = CancellationToken::new();
        let me = self.clone();
        let c = cancel.clone();
        let task = tokio::spawn(async move { me.run(c).await });
        ConsumerHandle { cancel, task }
    }

    /// Consumes until `cancel` fires, reconnecting after failures.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            match self.session(&cancel).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    warn!(queue = %self.inner.topology.queue, error = %e, "consumer session ended");
                }
            }
            if cancel.is_cancelled() {
                break;
            }
            let d = self.inner.reconnect_backoff.delay(failures.max(1));
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(d) => {}
            }
        }
    }

    async fn session(&self, cancel: &CancellationToken) -> Result<(), Error> {
        let cfg = &self.inner;
        let conn = tokio::select! {
            c = connect(&cfg.uri, &cfg.name) => c?,
            () = cancel.cancelled() => return Ok(()),
        };
        let consumed = async {
            let ch = step("open a channel", conn.create_channel()).await?;
            tokio::time::timeout(BROKER_STEP, cfg.topology.declare(&ch))
                .await
                .map_err(|_| silent("declare the topology"))??;
            step(
                "set the prefetch",
                ch.basic_qos(cfg.prefetch, BasicQosOptions::default()),
            )
            .await?;
            let consumer = step(
                "start consuming",
                ch.basic_consume(
                    cfg.topology.queue.as_str().into(),
                    cfg.name.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            Ok::<_, Error>((ch, consumer))
        }
        .await;
        let (ch, consumer) = match consumed {
            Ok(c) => c,
            Err(e) => {
                close_connection(&conn).await;
                return Err(e);
            }
        };
        debug!(queue = %cfg.topology.queue, "consuming");
        // The stream ends on cancel, and also when the connection is no
        // longer up: a connection that broke without ending the stream
        // must not leave the queue without its consumer.
        let lost = async {
            while conn.status().connected() {
                tokio::time::sleep(CONNECTION_CHECK).await;
            }
        };
        let (stopped, lost) = (std::pin::pin!(cancel.cancelled()), std::pin::pin!(lost));
        let ended = futures::future::select(stopped, lost);
        let stream = consumer.take_until(ended);
        let result = std::sync::Mutex::new(Ok(()));
        stream
            .for_each_concurrent(cfg.concurrency, |d| {
                let result = &result;
                async move {
                    match d {
                        Ok(d) => self.deliver(d).await,
                        Err(e) => {
                            if let Ok(mut r) = result.lock() {
                                *r = Err(broker(e));
                            }
                        }
                    }
                }
            })
            .await;
        close_channel(&ch).await;
        close_connection(&conn).await;
        result.into_inner().unwrap_or(Ok(()))?;
        if cancel.is_cancelled() {
            Ok(())
        } else {
            Err(Error::Broker("consumer stream ended".into()))
        }
    }

    async fn deliver(&self, d: lapin::message::Delivery) {
        let cfg = &self.inner;
        let msg = match convert::incoming(&d) {
            Ok(m) => m,
            Err(why) => {
                warn!(queue = %cfg.topology.queue, why, "dead-lettering a malformed message");
                let _ = step("reject", d.reject(BasicRejectOptions { requeue: false })).await;
                return;
            }
        };
        let outcome = cfg.handler.handle(&msg).await;
        // Each settlement is bounded: on a dead connection it may never be
        // answered, and the session must be able to end.
        let r = match outcome {
            Ok(()) => step("ack", d.ack(BasicAckOptions::default())).await,
            Err(HandlerError::Reject(e)) => {
                warn!(id = %msg.id, error = %e, "handler rejected message; dead-lettering");
                step("reject", d.reject(BasicRejectOptions { requeue: false })).await
            }
            Err(HandlerError::Retry(e)) => {
                let delay = cfg.retry_backoff.delay(msg.delivery_count);
                debug!(id = %msg.id, error = %e, ?delay, "handler failed; requeueing after backoff");
                tokio::time::sleep(delay).await;
                step(
                    "nack",
                    d.nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    }),
                )
                .await
            }
        };
        if let Err(e) = r {
            // The channel is gone; the broker redelivers, the inbox dedups.
            warn!(id = %msg.id, error = %e, "could not settle delivery");
        }
    }
}
