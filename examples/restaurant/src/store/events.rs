//! The events log: every payment, refund and printer status change, in the
//! same transaction as the change itself. `GET /v1/events` streams it and a
//! client resumes from the last id it saw.

use futures::TryFutureExt;
use serde::Serialize;
use utoipa::ToSchema;

use super::Get;
use crate::db::{AsConn, Db, on_db, on_tx};
use crate::domain::now_ms;

/// One event, as sent over the WebSocket.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Event {
    /// Grows with every event; resume with `?after=<id>`.
    pub(crate) id: i64,
    pub(crate) restaurant: String,
    /// e.g. `payment.captured`, `receipt.printed`, `printer.status`.
    pub(crate) kind: String,
    /// The payment or printer id the event is about.
    pub(crate) subject: String,
    pub(crate) at: i64,
    pub(crate) data: serde_json::Value,
}

fn decode(r: &impl Get) -> Result<Event, sqlx::Error> {
    let data = r.text("data")?;
    Ok(Event {
        id: r.int("id")?,
        restaurant: r.text("restaurant_id")?,
        kind: r.text("kind")?,
        subject: r.text("subject")?,
        at: r.int("at")?,
        data: super::json_col("data", &data)?,
    })
}

/// Appends an event inside the caller's transaction.
pub(crate) async fn append(
    tx: &mut impl AsConn,
    restaurant: &str,
    kind: &str,
    subject: &str,
    data: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    let data = data.to_string();
    on_tx!(tx, |e| {
        sqlx::query(
        "INSERT INTO app_events (restaurant_id, kind, subject, data, at) VALUES ($1, $2, $3, $4, $5)"
    )
    .bind(restaurant)
    .bind(kind)
    .bind(subject)
    .bind(&data)
    .bind(now_ms())
    .execute(e).map_ok(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Events of `restaurant` (all restaurants for `None`) with id > `after`,
/// oldest first.
pub(crate) async fn after(
    db: &Db,
    restaurant: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    on_db!(db, |e| async move {
        let rows = sqlx::query(
            "SELECT id, restaurant_id, kind, subject, data, at FROM app_events \
             WHERE id > $1 AND ($2 IS NULL OR restaurant_id = $2) ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(restaurant)
        .bind(limit)
        .fetch_all(e)
        .await?;
        rows.iter().map(decode).collect::<Result<Vec<_>, _>>()
    })
}

/// Events with the given ids (re-reading ids that were skipped because
/// their transaction had not committed yet).
pub(crate) async fn by_ids(
    db: &Db,
    restaurant: Option<&str>,
    ids: &[i64],
) -> Result<Vec<Event>, sqlx::Error> {
    let mut out = Vec::new();
    for id in ids {
        let found = on_db!(db, |e| async move {
            let row = sqlx::query(
                "SELECT id, restaurant_id, kind, subject, data, at FROM app_events \
                 WHERE id = $1 AND ($2 IS NULL OR restaurant_id = $2)",
            )
            .bind(*id)
            .bind(restaurant)
            .fetch_optional(e)
            .await?;
            row.as_ref().map(decode).transpose()
        })?;
        out.extend(found);
    }
    Ok(out)
}

/// The journey of one payment (its events and its refunds'), oldest first.
pub(crate) async fn for_subject(
    db: &Db,
    restaurant: &str,
    subject: &str,
) -> Result<Vec<Event>, sqlx::Error> {
    on_db!(db, |e| async move {
        let rows = sqlx::query(
            "SELECT id, restaurant_id, kind, subject, data, at FROM app_events \
             WHERE subject = $1 AND restaurant_id = $2 ORDER BY id",
        )
        .bind(subject)
        .bind(restaurant)
        .fetch_all(e)
        .await?;
        rows.iter().map(decode).collect::<Result<Vec<_>, _>>()
    })
}

/// The highest event id so far (0 when empty).
pub(crate) async fn last_id(db: &Db) -> Result<i64, sqlx::Error> {
    let id: Option<i64> = on_db!(db, |e| sqlx::query_scalar("SELECT MAX(id) FROM app_events")
        .fetch_one(e))?;
    Ok(id.unwrap_or(0))
}
