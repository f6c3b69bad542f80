//! Messages between the cloud and the restaurants, on counterfoil-outbox.
//!
//! - Print jobs (cloud → agent): enqueued in the outbox in the same
//!   transaction as the saga step that asks for them, published by the
//!   `relay` to the `{prefix}.print` exchange with routing key
//!   `{restaurant}.{printer}`, ordered per printer. Each agent consumes its
//!   restaurant's queue and records the job in its own database, deduplicated
//!   by its inbox, before acknowledging.
//! - Results (agent → cloud): the agent writes each outcome to its journal
//!   and its own outbox in one transaction; its relay publishes them to
//!   `{prefix}.results`. When the restaurant's link is down they wait there.
//!   The `saga` role consumes them (inbox in the server database) and
//!   resumes the waiting saga.
//!
//! Embedded, both ends share an in-process bus; in production, RabbitMQ
//! (quorum queues, publisher confirms).

use std::sync::Arc;
use std::time::Duration;

use counterfoil_outbox::{
    AmqpConsumer, AmqpPublisher, Binding, Destination, Handler, InProcessBus, OutboxMessage,
    OutboxStore, PgOutboxStore, PublishError, Publisher, QueueTopology, Relay, RelayHandle,
    SqliteOutboxStore,
};
use serde::{Deserialize, Serialize};

use crate::db::{Db, Durability, Tx};
use crate::store::print_jobs::{PrintJob, PrintOutcome};
use crate::store::printers::PrinterState;

/// A print job, as sent to the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobMessage {
    /// The saga waiting for the outcome (or the command's key).
    pub(crate) saga_id: String,
    pub(crate) job: PrintJob,
}

/// What an agent reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ResultMessage {
    /// How a print job ended.
    Outcome { key: String, outcome: PrintOutcome },
    /// A printer's state changed.
    PrinterStatus {
        printer: String,
        state: PrinterState,
    },
}

/// Names of exchanges and queues, under a prefix (so several deployments,
/// or test runs, can share a broker).
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) prefix: String,
}

impl Names {
    pub(crate) fn print_exchange(&self) -> String {
        format!("{}.print", self.prefix)
    }
    pub(crate) fn results_exchange(&self) -> String {
        format!("{}.results", self.prefix)
    }
    pub(crate) fn print_queue(&self, restaurant: &str) -> String {
        format!("{}.print.{restaurant}", self.prefix)
    }
    pub(crate) fn results_queue(&self) -> String {
        format!("{}.results", self.prefix)
    }

    /// The outbox message of a print job (ordered per printer).
    pub(crate) fn job(
        &self,
        saga_id: &str,
        job: &PrintJob,
    ) -> Result<OutboxMessage, counterfoil_outbox::Error> {
        let dest = Destination::new(
            self.print_exchange(),
            format!("{}.{}", job.restaurant, job.printer),
        );
        let mut msg = OutboxMessage::json(
            dest,
            &JobMessage {
                saga_id: saga_id.to_owned(),
                job: job.clone(),
            },
        )?
        .partition_key(job.printer.clone());
        if let Some(tp) = &job.traceparent {
            msg = msg.traceparent(tp.clone());
        }
        if let Some(c) = &job.correlation_id {
            msg = msg.correlation_id(c.clone());
        }
        Ok(msg)
    }

    /// The outbox message of an agent's report (ordered per printer).
    pub(crate) fn result(
        &self,
        printer: &str,
        body: &ResultMessage,
    ) -> Result<OutboxMessage, counterfoil_outbox::Error> {
        let kind = match body {
            ResultMessage::Outcome { .. } => "outcome",
            ResultMessage::PrinterStatus { .. } => "status",
        };
        Ok(OutboxMessage::json(
            Destination::new(self.results_exchange(), format!("{kind}.{printer}")),
            body,
        )?
        .partition_key(printer.to_owned()))
    }
}

/// The message transport: the in-process bus or RabbitMQ.
#[derive(Debug, Clone)]
pub(crate) enum Bus {
    InProcess(InProcessBus),
    Amqp(String),
}

impl Bus {
    pub(crate) fn publisher(&self) -> Result<Arc<dyn Publisher>, counterfoil_outbox::BuildError> {
        Ok(match self {
            Bus::InProcess(b) => Arc::new(b.clone()),
            Bus::Amqp(url) => Arc::new(
                AmqpPublisher::builder(url.clone())
                    .connection_name("restaurant-relay")
                    // Below the relay's lease (see `Outbox::relay`).
                    .confirm_timeout(Duration::from_secs(10))
                    .build()?,
            ),
        })
    }

    /// Subscribes `handler` to `exchange`/`pattern` through `queue`; returns
    /// a handle to stop it (RabbitMQ) or nothing (in-process).
    pub(crate) async fn subscribe(
        &self,
        queue: &str,
        exchange: &str,
        pattern: &str,
        handler: Arc<dyn Handler>,
    ) -> Result<Option<counterfoil_outbox::ConsumerHandle>, Box<dyn std::error::Error + Send + Sync>>
    {
        match self {
            Bus::InProcess(b) => {
                b.subscribe(queue, [Binding::new(exchange, pattern)], handler);
                Ok(None)
            }
            Bus::Amqp(url) => {
                let topology = QueueTopology::new(queue).bind(exchange, pattern);
                let consumer = AmqpConsumer::builder(url.clone(), topology, handler)
                    .concurrency(4)
                    .build()?;
                // The consumer declares its queue each time it connects: a
                // broker out of reach at start-up (an agent booting while the
                // shop's line is down) delays it, and never stops it.
                if let Err(e) = consumer.declare().await {
                    tracing::warn!(%queue, error = %e, "broker out of reach; consuming once it answers");
                }
                Ok(Some(consumer.spawn()))
            }
        }
    }

    /// For `/health/ready`: the in-process bus is always there; RabbitMQ
    /// must accept a TCP connection.
    pub(crate) async fn check(&self) -> Result<&'static str, String> {
        match self {
            Bus::InProcess(_) => Ok("in-process"),
            Bus::Amqp(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                let host = host.split('/').next().unwrap_or(host);
                let addr = if host.contains(':') {
                    host.to_owned()
                } else {
                    format!("{host}:5672")
                };
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(&addr),
                )
                .await
                {
                    Ok(Ok(_)) => Ok("rabbitmq"),
                    Ok(Err(e)) => Err(format!("rabbitmq: {e}")),
                    Err(_) => Err("rabbitmq: timeout".to_owned()),
                }
            }
        }
    }
}

/// An outbox on one of the two backends.
#[derive(Debug, Clone)]
pub(crate) enum Outbox {
    Postgres(Arc<PgOutboxStore>),
    Sqlite(Arc<SqliteOutboxStore>),
}

impl Outbox {
    /// The outbox of `db`, with its (and the inbox's) tables migrated.
    pub(crate) async fn open(db: &Db) -> Result<Self, counterfoil_outbox::Error> {
        Ok(match db {
            Db::Postgres(p) => {
                let s = PgOutboxStore::new(p.clone());
                s.migrate().await?;
                Outbox::Postgres(Arc::new(s))
            }
            Db::Sqlite(p) => {
                let s = SqliteOutboxStore::new(p.clone());
                s.migrate().await?;
                Outbox::Sqlite(Arc::new(s))
            }
        })
    }

    /// Enqueues inside the caller's transaction.
    pub(crate) async fn enqueue(
        &self,
        tx: &mut Tx,
        messages: &[OutboxMessage],
    ) -> Result<(), counterfoil_outbox::Error> {
        match (self, tx) {
            (Outbox::Postgres(s), Tx::Postgres(t)) => s.enqueue(t, messages).await,
            (Outbox::Sqlite(s), Tx::Sqlite(t)) => s.enqueue(t, messages).await,
            _ => Err(counterfoil_outbox::Error::InvalidMessage(
                "outbox and transaction differ".into(),
            )),
        }
    }

    /// Enqueues inside a saga step's transaction.
    pub(crate) async fn enqueue_step(
        &self,
        tx: &mut counterfoil_saga::StepTx,
        messages: &[OutboxMessage],
    ) -> Result<(), counterfoil_outbox::Error> {
        match self {
            Outbox::Postgres(s) => match tx.postgres() {
                Some(t) => s.enqueue(t, messages).await,
                None => Err(counterfoil_outbox::Error::InvalidMessage(
                    "not a PostgreSQL step".into(),
                )),
            },
            Outbox::Sqlite(s) => match tx.sqlite() {
                Some(t) => s.enqueue(t, messages).await,
                None => Err(counterfoil_outbox::Error::InvalidMessage(
                    "not an SQLite step".into(),
                )),
            },
        }
    }

    /// The outbox as the store trait (dead letters, backlog).
    pub(crate) fn store(&self) -> Arc<dyn OutboxStore> {
        match self {
            Outbox::Postgres(s) => s.clone(),
            Outbox::Sqlite(s) => s.clone(),
        }
    }

    /// Starts a relay from this outbox to `bus`; each batch is published
    /// only once the commits before it are on disk (`durable`).
    pub(crate) fn relay(
        &self,
        bus: &Bus,
        durable: Durability,
    ) -> Result<RelayHandle, Box<dyn std::error::Error + Send + Sync>> {
        let store: Arc<dyn OutboxStore> = match self {
            Outbox::Postgres(s) => s.clone(),
            Outbox::Sqlite(s) => s.clone(),
        };
        let publisher: Arc<dyn Publisher> = Arc::new(AfterSync {
            inner: bus.publisher()?,
            durable,
        });
        let relay = Relay::builder(store, publisher)
            .mode(counterfoil_outbox::ClaimMode::Ordered)
            // A relay killed holding a claim delays its printer's messages
            // (ordered per printer) until the lease ends: keep it short, above
            // the publisher's 10 s confirm timeout.
            .lease(Duration::from_secs(15))
            .poll_interval(Duration::from_millis(10), Duration::from_millis(200))
            .build()?;
        Ok(relay.spawn())
    }
}

/// A publisher that first waits for the commits before the batch to reach
/// the disk (group commit, see [`Durability`]): an agent never prints a
/// receipt for a payment record a power failure could take back.
#[derive(Debug)]
struct AfterSync {
    inner: Arc<dyn Publisher>,
    durable: Durability,
}

#[async_trait::async_trait]
impl Publisher for AfterSync {
    async fn publish(&self, batch: &[OutboxMessage]) -> Vec<Result<(), PublishError>> {
        match self.durable.barrier().await {
            Ok(()) => self.inner.publish(batch).await,
            Err(e) => batch
                .iter()
                .map(|_| Err(PublishError::Unavailable(e.to_string())))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the messages it is asked to publish.
    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    #[async_trait::async_trait]
    impl Publisher for Counting {
        async fn publish(&self, batch: &[OutboxMessage]) -> Vec<Result<(), PublishError>> {
            self.0.fetch_add(batch.len(), Ordering::SeqCst);
            batch.iter().map(|_| Ok(())).collect()
        }
    }

    fn batch() -> Vec<OutboxMessage> {
        (0..3)
            .map(|i| OutboxMessage::new(Destination::new("x", "y"), vec![i]))
            .collect()
    }

    /// A batch whose commits cannot be synced never reaches the agents: it
    /// stays in the outbox as an outage (not an attempt) and goes out after
    /// a restart.
    #[tokio::test]
    async fn a_batch_waits_for_its_commits_and_is_held_back_when_they_cannot_be_synced() {
        let inner = Arc::new(Counting::default());
        let synced = AfterSync {
            inner: inner.clone(),
            durable: Durability::none(),
        };
        assert!(synced.publish(&batch()).await.iter().all(Result::is_ok));
        assert_eq!(inner.0.load(Ordering::SeqCst), 3);

        let failed = AfterSync {
            inner: inner.clone(),
            // The log's directory is a file: the sync fails.
            durable: Durability::grouped(std::path::Path::new("/dev/null/x.sqlite")),
        };
        let r = failed.publish(&batch()).await;
        assert_eq!(r.len(), 3);
        assert!(
            r.iter().all(|r| matches!(r, Err(e) if e.is_outage())),
            "{r:?}"
        );
        assert_eq!(inner.0.load(Ordering::SeqCst), 3, "nothing more published");
    }
}
