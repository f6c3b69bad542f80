//! RabbitMQ over AMQP 0-9-1 (lapin): the publisher and the consumer helper.

mod consumer;
mod convert;
mod publisher;
mod topology;

pub use consumer::{AmqpConsumer, AmqpConsumerBuilder, ConsumerHandle};
pub use publisher::{AmqpPublisher, AmqpPublisherBuilder};
pub use topology::QueueTopology;

use std::sync::Arc;

use lapin::{Connection, ConnectionProperties};

use crate::Error;

pub(crate) async fn connect(uri: &str, name: &str) -> Result<Arc<Connection>, Error> {
    let props = ConnectionProperties::default().with_connection_name(name.to_owned().into());
    Connection::connect(uri, props)
        .await
        .map(Arc::new)
        .map_err(|e| Error::Broker(Box::new(e)))
}

pub(crate) fn broker(e: lapin::Error) -> Error {
    Error::Broker(Box::new(e))
}
