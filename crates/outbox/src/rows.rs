//! Decoding stored rows (shared by the SQL backends).

#![cfg(any(feature = "postgres", feature = "sqlite"))]

/// Columns every message query returns, in this order.
pub(crate) const MESSAGE_COLUMNS: &str = "id, exchange, routing_key, partition_key, headers, payload, content_type, created_at, attempts";

/// Builds an [`OutboxMessage`](crate::OutboxMessage) from a row holding [`MESSAGE_COLUMNS`].
macro_rules! decode_message {
    ($row:expr, $available_at:expr) => {{
        use sqlx::Row as _;
        let r = $row;
        let db = crate::Error::db;
        let id: uuid::Uuid = r.try_get("id").map_err(db)?;
        let headers: String = r.try_get("headers").map_err(db)?;
        let available_at: Option<i64> = $available_at;
        let attempts: i32 = r.try_get("attempts").map_err(db)?;
        let created_at: i64 = r.try_get("created_at").map_err(db)?;
        let message = crate::OutboxMessage {
            id: crate::MessageId::from_uuid(id),
            destination: crate::Destination {
                exchange: r.try_get("exchange").map_err(db)?,
                routing_key: r.try_get("routing_key").map_err(db)?,
            },
            partition_key: r.try_get("partition_key").map_err(db)?,
            headers: crate::message::Headers::from_json(&headers)?,
            payload: r.try_get("payload").map_err(db)?,
            content_type: r.try_get("content_type").map_err(db)?,
            available_at,
            delay: None,
        };
        (message, u32::try_from(attempts).unwrap_or(0), created_at)
    }};
}

macro_rules! decode_dead_letter {
    ($row:expr) => {{
        use sqlx::Row as _;
        let r = $row;
        let (message, attempts, created_at) = crate::rows::decode_message!(r, None);
        crate::store::DeadLetter {
            message,
            attempts,
            last_error: r.try_get("last_error").map_err(crate::Error::db)?,
            created_at,
            dead_at: r.try_get("dead_at").map_err(crate::Error::db)?,
        }
    }};
}

pub(crate) use decode_dead_letter;
pub(crate) use decode_message;
