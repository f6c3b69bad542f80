#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod binding;
mod bus;
mod clock;
mod error;
mod handler;
mod inbox;
mod memory;
mod message;
mod migrate;
mod notifier;
mod publisher;
mod relay;
mod rows;
mod stats;
mod store;

#[cfg(feature = "amqp")]
mod amqp;
#[cfg(feature = "postgres")]
mod logical;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use backoff::Backoff;
pub use binding::Binding;
pub use bus::InProcessBus;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{BoxError, BuildError, Error};
pub use handler::{Handler, HandlerError, HandlerFn, handler_fn};
pub use inbox::{DEFAULT_RETENTION, InMemoryInbox, InboxOutcome, InboxReaper, InboxStore};
pub use memory::InMemoryOutboxStore;
pub use message::{Destination, Headers, IncomingMessage, MessageId, OCTET_STREAM, OutboxMessage};
pub use notifier::OutboxNotifier;
pub use publisher::{PublishError, Publisher};
pub use relay::{BatchReport, Relay, RelayBuilder, RelayHandle, Retention};
pub use stats::RelayStats;
pub use store::{
    Backlog, ClaimMode, ClaimRequest, ClaimedBatch, ClaimedMessage, DeadLetter, Disposition,
    Failure, LeaseToken, OutboxStore,
};

/// Names of the metrics the relay records with the `metrics` crate.
pub mod metric_names {
    pub use crate::stats::{
        ATTEMPTS, BACKLOG, DEAD, DEAD_LETTERED, DELIVERY_LAG_SECONDS, FAILED, OLDEST_AGE,
        PUBLISH_SECONDS, PUBLISHED, STREAM_LAG_BYTES,
    };
}

#[cfg(feature = "amqp")]
#[cfg_attr(docsrs, doc(cfg(feature = "amqp")))]
pub use amqp::{
    AmqpConsumer, AmqpConsumerBuilder, AmqpPublisher, AmqpPublisherBuilder, ConsumerHandle,
    QueueTopology,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use inbox::postgres::PgInbox;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use inbox::sqlite::SqliteInbox;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use logical::{LogicalRelay, LogicalRelayBuilder, PgLogicalOutbox};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PgOutboxStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteOutboxStore;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod conformance;
