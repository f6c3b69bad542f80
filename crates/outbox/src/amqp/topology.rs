//! Queue topology: quorum queue, dead-letter exchange and queue, bindings.

use lapin::Channel;
use lapin::ExchangeKind;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};

use super::broker;
use crate::{Binding, Error};

/// A consumer's queue: a durable quorum queue bound to topic exchanges, with
/// a delivery limit after which the broker moves a message to the queue's
/// dead-letter exchange (`<queue>.dlx`, fanout) and queue (`<queue>.dlq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTopology {
    /// The queue name.
    pub queue: String,
    /// Bindings to topic exchanges (declared durable if missing).
    pub bindings: Vec<Binding>,
    /// Deliveries after which a message is dead-lettered. Default: 10.
    pub delivery_limit: u32,
}

impl QueueTopology {
    /// A queue with no bindings yet and a delivery limit of 10.
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            bindings: Vec::new(),
            delivery_limit: 10,
        }
    }

    /// Binds the queue to `exchange` (a topic exchange) with `pattern`.
    pub fn bind(mut self, exchange: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.bindings.push(Binding::new(exchange, pattern));
        self
    }

    /// Sets the delivery limit.
    pub fn delivery_limit(mut self, n: u32) -> Self {
        self.delivery_limit = n;
        self
    }

    /// The dead-letter exchange's name.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.queue)
    }

    /// The dead-letter queue's name.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    fn quorum_args() -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        t
    }

    /// Declares exchanges, the queue, the dead-letter exchange and queue, and the bindings.
    /// Idempotent.
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] if the broker refuses (e.g. the queue exists with other arguments).
    pub(crate) async fn declare(&self, ch: &Channel) -> Result<(), Error> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let ex_durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let dlx = self.dead_letter_exchange();
        let dlq = self.dead_letter_queue();
        ch.exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Fanout,
            ex_durable,
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
        ch.queue_declare(dlq.as_str().into(), durable, Self::quorum_args())
            .await
            .map_err(broker)?;
        ch.queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
        let mut args = Self::quorum_args();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.as_str().into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        ch.queue_declare(self.queue.as_str().into(), durable, args)
            .await
            .map_err(broker)?;
        for b in &self.bindings {
            if !b.exchange.is_empty() {
                ch.exchange_declare(
                    b.exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ex_durable,
                    FieldTable::default(),
                )
                .await
                .map_err(broker)?;
                ch.queue_bind(
                    self.queue.as_str().into(),
                    b.exchange.as_str().into(),
                    b.pattern.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(broker)?;
            }
        }
        Ok(())
    }

    /// Deletes the queue, the dead-letter queue and exchange, and (when
    /// `with_exchanges`) the bound exchanges.
    pub(crate) async fn delete(&self, ch: &Channel, with_exchanges: bool) -> Result<(), Error> {
        ch.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .map_err(broker)?;
        ch.queue_delete(
            self.dead_letter_queue().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .map_err(broker)?;
        ch.exchange_delete(
            self.dead_letter_exchange().into(),
            ExchangeDeleteOptions::default(),
        )
        .await
        .map_err(broker)?;
        if with_exchanges {
            for b in &self.bindings {
                if !b.exchange.is_empty() {
                    ch.exchange_delete(
                        b.exchange.as_str().into(),
                        ExchangeDeleteOptions::default(),
                    )
                    .await
                    .map_err(broker)?;
                }
            }
        }
        Ok(())
    }
}
