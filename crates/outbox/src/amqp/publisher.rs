//! Publishing to RabbitMQ with pipelined publisher confirms.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};
use parking_lot::Mutex;
use tracing::{debug, warn};

use super::{connect, convert};
use crate::error::BuildError;
use crate::publisher::{PublishError, Publisher};
use crate::{Error, OutboxMessage};

/// Builds an [`AmqpPublisher`].
#[derive(Debug, Clone)]
pub struct AmqpPublisherBuilder {
    uri: String,
    window: usize,
    confirm_timeout: Duration,
    name: String,
}

impl AmqpPublisherBuilder {
    /// Unconfirmed messages allowed in flight per publish call. Default: 512.
    pub fn window(mut self, n: usize) -> Self {
        self.window = n;
        self
    }

    /// How long to wait for a confirm before counting the message as failed. Default: 30 s.
    pub fn confirm_timeout(mut self, t: Duration) -> Self {
        self.confirm_timeout = t;
        self
    }

    /// The connection name shown in the RabbitMQ console. Default: `counterfoil-outbox`.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Checks the settings. Does not connect: the first publish does.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] for a zero window or timeout.
    pub fn build(self) -> Result<AmqpPublisher, BuildError> {
        if self.window == 0 {
            return Err(BuildError::invalid("window", "must be at least 1"));
        }
        if self.confirm_timeout.is_zero() {
            return Err(BuildError::invalid("confirm_timeout", "must be positive"));
        }
        Ok(AmqpPublisher {
            inner: Arc::new(Inner {
                cfg: self,
                conn: tokio::sync::Mutex::new(None),
                channels: Mutex::new(Vec::new()),
                exchanges: Mutex::new(HashSet::new()),
            }),
        })
    }
}

struct Inner {
    cfg: AmqpPublisherBuilder,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
    channels: Mutex<Vec<Channel>>,
    exchanges: Mutex<HashSet<String>>,
}

/// Publishes to RabbitMQ: persistent messages, `mandatory` (a returned,
/// unroutable message is a failure, not a success), publisher confirms with
/// a sliding window of unconfirmed messages.
///
/// It keeps one connection and a pool of confirm-mode channels. When the
/// broker goes away, in-flight messages fail as
/// [`PublishError::Unavailable`] (which does not count as an attempt), and
/// the next publish reconnects. An exchange that does not exist is detected
/// with a passive declare on a side channel and reported as
/// [`PublishError::Unroutable`] without closing the publishing channel.
#[derive(Clone)]
pub struct AmqpPublisher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPublisher")
            .field("window", &self.inner.cfg.window)
            .field("confirm_timeout", &self.inner.cfg.confirm_timeout)
            .finish_non_exhaustive()
    }
}

impl AmqpPublisher {
    /// Starts building a publisher for the broker at `uri` (`amqp://user:pass@host:5672/%2f`).
    pub fn builder(uri: impl Into<String>) -> AmqpPublisherBuilder {
        AmqpPublisherBuilder {
            uri: uri.into(),
            window: 512,
            confirm_timeout: Duration::from_secs(30),
            name: "counterfoil-outbox".to_owned(),
        }
    }

    async fn connection(&self) -> Result<Arc<Connection>, Error> {
        let mut guard = self.inner.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && c.status().connected()
        {
            return Ok(c.clone());
        }
        self.inner.channels.lock().clear();
        let c = connect(&self.inner.cfg.uri, &self.inner.cfg.name).await?;
        debug!("outbox publisher connected");
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn channel(&self) -> Result<Channel, Error> {
        loop {
            let popped = self.inner.channels.lock().pop();
            match popped {
                Some(ch) if ch.status().connected() => return Ok(ch),
                Some(_) => continue,
                None => break,
            }
        }
        let conn = self.connection().await?;
        let ch = super::step("open a channel", conn.create_channel()).await?;
        super::step(
            "select confirms",
            ch.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(ch)
    }

    async fn forget_connection(&self) {
        let mut guard = self.inner.conn.lock().await;
        if guard.as_ref().is_some_and(|c| !c.status().connected()) {
            *guard = None;
            self.inner.channels.lock().clear();
        }
    }

    /// Checks that `exchange` exists (cached once it does).
    async fn exchange_exists(&self, exchange: &str) -> Result<bool, Error> {
        if exchange.is_empty() || self.inner.exchanges.lock().contains(exchange) {
            return Ok(true);
        }
        let conn = self.connection().await?;
        let side = super::step("open a channel", conn.create_channel()).await?;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let declared = tokio::time::timeout(
            super::BROKER_STEP,
            side.exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                passive,
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|_| super::silent("check an exchange"))?;
        match declared {
            Ok(()) => {
                self.inner.exchanges.lock().insert(exchange.to_owned());
                super::close_channel(&side).await;
                Ok(true)
            }
            // A 404 closes only the side channel; a dead connection is an outage.
            Err(e) if conn.status().connected() => {
                debug!(exchange, error = %e, "exchange does not exist");
                Ok(false)
            }
            Err(e) => Err(super::broker(e)),
        }
    }

    /// Declares durable topic exchanges (idempotent), for a relay that starts
    /// before any consumer has declared its topology. Without it, messages to
    /// a missing exchange fail as unroutable.
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] when the broker cannot be reached or an exchange
    /// exists with another type.
    pub async fn declare_exchanges(&self, names: &[&str]) -> Result<(), Error> {
        let conn = self.connection().await?;
        let ch = super::step("open a channel", conn.create_channel()).await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for name in names.iter().filter(|n| !n.is_empty()) {
            super::step(
                "declare an exchange",
                ch.exchange_declare(
                    (*name).into(),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                ),
            )
            .await?;
            self.inner.exchanges.lock().insert((*name).to_owned());
        }
        super::close_channel(&ch).await;
        Ok(())
    }

    /// Opens a connection now rather than at the first publish.
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] when the broker cannot be reached.
    pub async fn connect(&self) -> Result<(), Error> {
        let ch = self.channel().await?;
        self.inner.channels.lock().push(ch);
        Ok(())
    }
}

fn map_confirmation(c: Confirmation) -> Result<(), PublishError> {
    match c {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(ret)) => Err(PublishError::Unroutable(format!(
            "returned by the broker: {} {}",
            ret.reply_code, ret.reply_text
        ))),
        Confirmation::Nack(_) => Err(PublishError::Nacked),
        Confirmation::NotRequested => Err(PublishError::Unavailable(
            "channel not in confirm mode".into(),
        )),
    }
}

#[async_trait]
impl Publisher for AmqpPublisher {
    async fn publish(&self, batch: &[OutboxMessage]) -> Vec<Result<(), PublishError>> {
        let mut results: Vec<Option<Result<(), PublishError>>> = vec![None; batch.len()];
        let outage = |e: &dyn std::fmt::Display| PublishError::Unavailable(e.to_string());

        // Exchanges that do not exist fail their messages up front.
        let mut missing = HashSet::new();
        let mut checked = HashSet::new();
        for m in batch {
            let ex = m.destination.exchange.as_str();
            if checked.insert(ex) {
                match self.exchange_exists(ex).await {
                    Ok(true) => {}
                    Ok(false) => {
                        missing.insert(ex);
                    }
                    Err(e) => {
                        self.forget_connection().await;
                        return batch.iter().map(|_| Err(outage(&e))).collect();
                    }
                }
            }
        }

        let channel = match self.channel().await {
            Ok(c) => c,
            Err(e) => {
                self.forget_connection().await;
                return batch.iter().map(|_| Err(outage(&e))).collect();
            }
        };
        let timeout = self.inner.cfg.confirm_timeout;
        let window = self.inner.cfg.window;
        let mut inflight = FuturesUnordered::new();
        let mut broken: Option<String> = None;
        let opts = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        for (i, m) in batch.iter().enumerate() {
            if missing.contains(m.destination.exchange.as_str()) {
                results[i] = Some(Err(PublishError::Unroutable(format!(
                    "exchange `{}` does not exist",
                    m.destination.exchange
                ))));
                continue;
            }
            if let Some(e) = &broken {
                results[i] = Some(Err(PublishError::Unavailable(e.clone())));
                continue;
            }
            while inflight.len() >= window {
                if let Some((j, r)) = inflight.next().await {
                    results[j] = Some(r);
                }
            }
            match channel
                .basic_publish(
                    m.destination.exchange.as_str().into(),
                    m.destination.routing_key.as_str().into(),
                    opts,
                    &m.payload,
                    convert::properties(m),
                )
                .await
            {
                Ok(confirm) => inflight.push(async move {
                    let r = match tokio::time::timeout(timeout, confirm).await {
                        Ok(Ok(c)) => map_confirmation(c),
                        Ok(Err(e)) => Err(PublishError::Unavailable(e.to_string())),
                        Err(_) => Err(PublishError::TimedOut(timeout)),
                    };
                    (i, r)
                }),
                Err(e) => {
                    warn!(error = %e, "publish failed; reconnecting");
                    results[i] = Some(Err(PublishError::Unavailable(e.to_string())));
                    broken = Some(e.to_string());
                }
            }
        }
        while let Some((j, r)) = inflight.next().await {
            results[j] = Some(r);
        }
        let healthy = broken.is_none()
            && channel.status().connected()
            && results.iter().all(|r| {
                !matches!(
                    r,
                    Some(Err(PublishError::Unavailable(_) | PublishError::TimedOut(_)))
                )
            });
        if healthy {
            self.inner.channels.lock().push(channel);
        } else {
            // In the background: a dead connection may never answer.
            tokio::spawn(async move { super::close_channel(&channel).await });
            self.forget_connection().await;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(PublishError::Unavailable("not published".into()))))
            .collect()
    }
}
