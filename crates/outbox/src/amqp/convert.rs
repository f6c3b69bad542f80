//! Mapping messages to and from AMQP properties.

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, ShortString};

use crate::{Destination, Headers, IncomingMessage, MessageId, OCTET_STREAM, OutboxMessage};

pub(crate) const PARTITION_KEY: &str = "x-partition-key";
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
const DELIVERY_COUNT: &str = "x-delivery-count";

/// Persistent (delivery mode 2) properties carrying id, content type, correlation id and headers.
pub(crate) fn properties(m: &OutboxMessage) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(tp) = &m.headers.traceparent {
        headers.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString(tp.as_str().into()),
        );
    }
    if let Some(ts) = &m.headers.tracestate {
        headers.insert(TRACESTATE.into(), AMQPValue::LongString(ts.as_str().into()));
    }
    if let Some(k) = &m.partition_key {
        headers.insert(
            PARTITION_KEY.into(),
            AMQPValue::LongString(k.as_str().into()),
        );
    }
    for (k, v) in &m.headers.user {
        headers.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
    }
    let mut p = BasicProperties::default()
        .with_message_id(m.id.to_string().into())
        .with_content_type(ShortString::from(m.content_type.as_str()))
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(c) = &m.headers.correlation_id {
        p = p.with_correlation_id(c.as_str().into());
    }
    p
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn int(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// The incoming message, or why it cannot be one (no or bad message id).
pub(crate) fn incoming(d: &Delivery) -> Result<IncomingMessage, String> {
    let p = &d.properties;
    let id: MessageId = p
        .message_id()
        .as_ref()
        .ok_or_else(|| "message without message-id".to_owned())?
        .as_str()
        .parse()
        .map_err(|e: crate::Error| e.to_string())?;
    let mut headers = Headers {
        correlation_id: p.correlation_id().as_ref().map(|c| c.as_str().to_owned()),
        ..Headers::default()
    };
    let mut partition_key = None;
    let mut delivery_count = 1u32;
    if let Some(table) = p.headers() {
        for (k, v) in table.inner() {
            match k.as_str() {
                TRACEPARENT => headers.traceparent = text(v),
                TRACESTATE => headers.tracestate = text(v),
                PARTITION_KEY => partition_key = text(v),
                DELIVERY_COUNT => {
                    delivery_count = int(v)
                        .and_then(|n| u32::try_from(n).ok())
                        .map_or(1, |n| n.saturating_add(1));
                }
                other if other.starts_with("x-") => {}
                other => {
                    if let Some(t) = text(v) {
                        headers.user.insert(other.to_owned(), t);
                    }
                }
            }
        }
    }
    Ok(IncomingMessage {
        id,
        destination: Destination::new(d.exchange.as_str(), d.routing_key.as_str()),
        partition_key,
        headers,
        payload: d.data.clone(),
        content_type: p
            .content_type()
            .as_ref()
            .map_or_else(|| OCTET_STREAM.to_owned(), |c| c.as_str().to_owned()),
        delivery_count,
    })
}
