//! Outgoing and incoming messages.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

/// A message's identity: a UUIDv7, so ids sort roughly by creation time.
///
/// The same id travels to the broker (AMQP `message-id`) and is the key the
/// consumer's inbox deduplicates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A new time-ordered id (UUIDv7).
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID.
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MessageId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| Error::InvalidMessage(format!("message id `{s}`: {e}")))
    }
}

/// Where a message goes: an exchange and a routing key (AMQP terms; the
/// in-process bus routes on the same pair).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Destination {
    /// The exchange name.
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
}

impl Destination {
    /// A destination.
    pub fn new(exchange: impl Into<String>, routing_key: impl Into<String>) -> Self {
        Self {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
        }
    }
}

/// Message headers: W3C trace context, a correlation id and free-form pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers {
    /// W3C `traceparent` of the producing span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// W3C `tracestate`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// A correlation id (e.g. the payment or saga id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Application headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
}

// Used by the SQL backends (headers are stored as JSON text).
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
impl Headers {
    pub(crate) fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string(self).map_err(|e| Error::InvalidMessage(format!("headers: {e}")))
    }

    pub(crate) fn from_json(s: &str) -> Result<Self, Error> {
        serde_json::from_str(s).map_err(|e| Error::Corrupt(format!("headers: {e}")))
    }
}

/// Content type given to messages built with [`OutboxMessage::new`].
pub const OCTET_STREAM: &str = "application/octet-stream";

/// A message to enqueue in the outbox.
///
/// ```
/// use counterfoil_outbox::{Destination, OutboxMessage};
/// use std::time::Duration;
///
/// let msg = OutboxMessage::json(Destination::new("print", "site-7.jobs"), &serde_json::json!({"receipt": 42}))?
///     .partition_key("printer-1")
///     .correlation_id("payment-42")
///     .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
///     .header("tenant", "acme")
///     .delay(Duration::from_secs(5));
/// assert_eq!(msg.content_type, "application/json");
/// # Ok::<(), counterfoil_outbox::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// The message id (UUIDv7 unless set).
    pub id: MessageId,
    /// Where it goes.
    pub destination: Destination,
    /// Messages sharing a partition key are delivered one at a time in
    /// enqueue order when the relay runs in [`ClaimMode::Ordered`](crate::ClaimMode::Ordered).
    pub partition_key: Option<String>,
    /// Headers.
    pub headers: Headers,
    /// The body.
    pub payload: Vec<u8>,
    /// The body's MIME type.
    pub content_type: String,
    /// Earliest delivery time in ms since the epoch; `None` = at commit.
    pub available_at: Option<i64>,
    /// Delay after enqueue before delivery; added to the enqueue time.
    pub delay: Option<Duration>,
}

impl OutboxMessage {
    /// A message with a fresh id and an `application/octet-stream` body.
    pub fn new(destination: Destination, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            id: MessageId::new(),
            destination,
            partition_key: None,
            headers: Headers::default(),
            payload: payload.into(),
            content_type: OCTET_STREAM.to_owned(),
            available_at: None,
            delay: None,
        }
    }

    /// A message whose body is `value` as JSON.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] if `value` cannot be serialized.
    pub fn json<T: Serialize + ?Sized>(destination: Destination, value: &T) -> Result<Self, Error> {
        let payload =
            serde_json::to_vec(value).map_err(|e| Error::InvalidMessage(format!("json: {e}")))?;
        Ok(Self::new(destination, payload).content_type("application/json"))
    }

    /// Sets the id (e.g. derived from a business key, to make enqueue idempotent).
    pub fn id(mut self, id: MessageId) -> Self {
        self.id = id;
        self
    }

    /// Sets the partition key.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// Sets the content type.
    pub fn content_type(mut self, ct: impl Into<String>) -> Self {
        self.content_type = ct.into();
        self
    }

    /// Sets the W3C `traceparent` header.
    pub fn traceparent(mut self, tp: impl Into<String>) -> Self {
        self.headers.traceparent = Some(tp.into());
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.headers.correlation_id = Some(id.into());
        self
    }

    /// Adds an application header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.user.insert(name.into(), value.into());
        self
    }

    /// Delivers no earlier than `at_ms` (ms since the Unix epoch).
    pub fn available_at(mut self, at_ms: i64) -> Self {
        self.available_at = Some(at_ms);
        self
    }

    /// Delivers no earlier than `delay` after enqueue.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// The delivery time for a message enqueued at `now`.
    pub(crate) fn resolve_available_at(&self, now: i64) -> i64 {
        let after_delay = self
            .delay
            .map(|d| now.saturating_add(crate::clock::duration_ms(d)))
            .unwrap_or(now);
        self.available_at.unwrap_or(now).max(after_delay)
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.destination.exchange.len() > 255 || self.destination.routing_key.len() > 255 {
            return Err(Error::InvalidMessage(
                "exchange and routing key are at most 255 bytes".into(),
            ));
        }
        if self.content_type.len() > 255 {
            return Err(Error::InvalidMessage(
                "content type is at most 255 bytes".into(),
            ));
        }
        Ok(())
    }
}

/// A message as a consumer receives it, from RabbitMQ or the in-process bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// The producer's message id: the inbox key.
    pub id: MessageId,
    /// Where it was published.
    pub destination: Destination,
    /// The partition key, if the producer set one.
    pub partition_key: Option<String>,
    /// Headers.
    pub headers: Headers,
    /// The body.
    pub payload: Vec<u8>,
    /// The body's MIME type.
    pub content_type: String,
    /// How many times this message has been handed to a consumer, 1 the first time.
    pub delivery_count: u32,
}

impl IncomingMessage {
    /// The body parsed as JSON.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] if the body is not valid JSON for `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| Error::InvalidMessage(format!("json body: {e}")))
    }

    pub(crate) fn from_outbox(m: &OutboxMessage, delivery_count: u32) -> Self {
        Self {
            id: m.id,
            destination: m.destination.clone(),
            partition_key: m.partition_key.clone(),
            headers: m.headers.clone(),
            payload: m.payload.clone(),
            content_type: m.content_type.clone(),
            delivery_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_takes_the_latest_of_at_and_delay() {
        let d = Destination::new("x", "k");
        let m = OutboxMessage::new(d.clone(), b"p".to_vec());
        assert_eq!(m.resolve_available_at(1_000), 1_000);
        let m = m.delay(Duration::from_millis(500));
        assert_eq!(m.resolve_available_at(1_000), 1_500);
        let m = m.available_at(9_000);
        assert_eq!(m.resolve_available_at(1_000), 9_000);
        let m = OutboxMessage::new(d, b"p".to_vec()).available_at(10);
        assert_eq!(m.resolve_available_at(1_000), 1_000);
    }

    #[test]
    fn headers_round_trip_through_json() {
        let m = OutboxMessage::new(Destination::new("x", "k"), vec![])
            .traceparent("tp")
            .correlation_id("c")
            .header("a", "b");
        let back = Headers::from_json(&m.headers.to_json().unwrap()).unwrap();
        assert_eq!(back, m.headers);
        assert_eq!(Headers::from_json("{}").unwrap(), Headers::default());
        assert!(Headers::from_json("nope").is_err());
    }

    #[test]
    fn ids_parse_and_sort_by_time() {
        let a = MessageId::new();
        let b = MessageId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<MessageId>().unwrap(), a);
        assert!("zz".parse::<MessageId>().is_err());
    }
}
