//! How a message travels inside a logical-decoding message.
//!
//! ```text
//! [1 byte version = 1][4 bytes big-endian length N][N bytes JSON head][payload bytes]
//! ```
//!
//! The head carries everything but the payload; the payload follows raw, so a
//! binary body costs its own size and no escaping.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::message::Headers;
use crate::{Destination, Error, MessageId, OutboxMessage};

const VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Head {
    id: Uuid,
    ex: String,
    rk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pk: Option<String>,
    #[serde(default)]
    h: Headers,
    ct: String,
    /// Delivery time, ms since the epoch.
    at: i64,
    /// Enqueue time, ms since the epoch.
    cr: i64,
}

/// A message read back from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// The message; `available_at` is set.
    pub(crate) message: OutboxMessage,
    /// Enqueue time, ms since the epoch.
    pub(crate) created_at: i64,
}

impl Decoded {
    pub(crate) fn available_at(&self) -> i64 {
        self.message.available_at.unwrap_or(self.created_at)
    }
}

/// Encodes `m`, enqueued at `now`.
pub(crate) fn encode(m: &OutboxMessage, now: i64) -> Result<Vec<u8>, Error> {
    m.validate()?;
    let head = Head {
        id: m.id.as_uuid(),
        ex: m.destination.exchange.clone(),
        rk: m.destination.routing_key.clone(),
        pk: m.partition_key.clone(),
        h: m.headers.clone(),
        ct: m.content_type.clone(),
        at: m.resolve_available_at(now),
        cr: now,
    };
    let head =
        serde_json::to_vec(&head).map_err(|e| Error::InvalidMessage(format!("envelope: {e}")))?;
    let len = u32::try_from(head.len())
        .map_err(|_| Error::InvalidMessage("message head too large".into()))?;
    let mut out = Vec::with_capacity(5 + head.len() + m.payload.len());
    out.push(VERSION);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&m.payload);
    Ok(out)
}

/// Decodes bytes written by [`encode`].
///
/// # Errors
///
/// [`Error::Corrupt`] for anything else; never panics.
pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded, Error> {
    let corrupt = |why: &str| Error::Corrupt(format!("stream message: {why}"));
    let (&version, rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
    if version != VERSION {
        return Err(corrupt(&format!("unknown version {version}")));
    }
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("truncated length"))?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| corrupt("length"))?;
    if rest.len() < len {
        return Err(corrupt("truncated head"));
    }
    let (head, payload) = rest.split_at(len);
    let head: Head = serde_json::from_slice(head).map_err(|e| corrupt(&format!("head: {e}")))?;
    Ok(Decoded {
        message: OutboxMessage {
            id: MessageId::from_uuid(head.id),
            destination: Destination {
                exchange: head.ex,
                routing_key: head.rk,
            },
            partition_key: head.pk,
            headers: head.h,
            payload: payload.to_vec(),
            content_type: head.ct,
            available_at: Some(head.at),
            delay: None,
        },
        created_at: head.cr,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trip_keeps_every_field_and_resolves_the_delay() {
        let m = OutboxMessage::new(Destination::new("ex", "rk"), vec![0, 255, 7])
            .partition_key("k")
            .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .correlation_id("c")
            .header("tenant", "acme")
            .content_type("application/x-test")
            .delay(Duration::from_secs(2));
        let d = decode(&encode(&m, 1_000).unwrap()).unwrap();
        assert_eq!(d.created_at, 1_000);
        assert_eq!(d.available_at(), 3_000);
        let mut expected = m;
        expected.delay = None;
        expected.available_at = Some(3_000);
        assert_eq!(d.message, expected);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        for bytes in [
            &b""[..],
            &[2, 0, 0, 0, 0][..],
            &[1, 0, 0][..],
            &[1, 0, 0, 0, 9, b'{'][..],
            &[1, 0, 0, 0, 2, b'{', b'}'][..],
        ] {
            assert!(matches!(decode(bytes), Err(Error::Corrupt(_))), "{bytes:?}");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn any_message_round_trips(
            payload in proptest::collection::vec(any::<u8>(), 0..256),
            key in proptest::option::of("[a-z0-9-]{1,12}"),
            rk in "[a-z.]{0,20}",
            now in 0i64..4_000_000_000_000,
        ) {
            let mut m = OutboxMessage::new(Destination::new("x", rk), payload);
            m.partition_key = key;
            let d = decode(&encode(&m, now).unwrap()).unwrap();
            prop_assert_eq!(d.created_at, now);
            m.available_at = Some(now);
            prop_assert_eq!(d.message, m);
        }
    }
}
