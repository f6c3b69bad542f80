//! RabbitMQ over AMQP 0-9-1 (lapin): the publisher and the consumer helper.

mod consumer;
mod convert;
mod publisher;
mod topology;

pub use consumer::{AmqpConsumer, AmqpConsumerBuilder, ConsumerHandle};
pub use publisher::{AmqpPublisher, AmqpPublisherBuilder};
pub use topology::QueueTopology;

use std::sync::Arc;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use crate::Error;

/// How long one exchange with the broker (connecting, opening a channel,
/// declaring, settling a delivery, closing) may take before the connection
/// is treated as broken and made again. A broker that accepts a connection
/// and then goes silent must not hold a consumer or a publisher forever.
pub(crate) const BROKER_STEP: Duration = Duration::from_secs(10);

pub(crate) async fn connect(uri: &str, name: &str) -> Result<Arc<Connection>, Error> {
    let props = ConnectionProperties::default().with_connection_name(name.to_owned().into());
    step("connect", Connection::connect(uri, props))
        .await
        .map(Arc::new)
}

/// Runs one exchange with the broker, bounded by [`BROKER_STEP`].
pub(crate) async fn step<T>(
    what: &str,
    exchange: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(BROKER_STEP, exchange).await {
        Ok(r) => r.map_err(broker),
        Err(_) => Err(silent(what)),
    }
}

/// Closes `ch`, waiting at most [`BROKER_STEP`] (the connection may be dead).
pub(crate) async fn close_channel(ch: &lapin::Channel) {
    let _ = tokio::time::timeout(BROKER_STEP, ch.close(200, "bye".into())).await;
}

/// Closes `conn`, waiting at most [`BROKER_STEP`].
pub(crate) async fn close_connection(conn: &Connection) {
    let _ = tokio::time::timeout(BROKER_STEP, conn.close(200, "bye".into())).await;
}

/// The error for a broker that did not answer `what` within [`BROKER_STEP`].
pub(crate) fn silent(what: &str) -> Error {
    Error::Broker(format!("{what}: no answer from the broker within {BROKER_STEP:?}").into())
}

pub(crate) fn broker(e: lapin::Error) -> Error {
    Error::Broker(Box::new(e))
}
