//! The events log: every payment, refund and printer status change, in the
//! same transaction as the change itself. `GET /v1/events` streams it and a
//! client resumes from the last id it saw.

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

/// Appends an event inside the caller's transaction and returns it.
pub(crate) async fn append(
    tx: &mut impl AsConn,
    restaurant: &str,
    kind: &str,
    subject: &str,
    data: &serde_json::Value,
) -> Result<Event, sqlx::Error> {
    let text = data.to_string();
    let at = now_ms();
    let id = on_tx!(tx, |e| {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO app_events (restaurant_id, kind, subject, data, at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(restaurant)
        .bind(kind)
        .bind(subject)
        .bind(&text)
        .bind(at)
        .fetch_one(e)
    })?;
    Ok(Event {
        id,
        restaurant: restaurant.to_owned(),
        kind: kind.to_owned(),
        subject: subject.to_owned(),
        at,
        data: data.clone(),
    })
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
             WHERE id > $1 AND ($2 IS NULL OR restaurant_id = $2) ORDER BY id LIMIT CAST($3 AS BIGINT)",
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
    // One query per chunk: the tail re-reads every missing id each tick.
    for chunk in ids.chunks(500) {
        let found = on_db!(db, |e| async move {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT id, restaurant_id, kind, subject, data, at FROM app_events WHERE ",
            );
            if let Some(r) = restaurant {
                q.push("restaurant_id = ").push_bind(r).push(" AND ");
            }
            q.push("id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(") ORDER BY id");
            let rows = q.build().fetch_all(e).await?;
            rows.iter().map(decode).collect::<Result<Vec<_>, _>>()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SqliteSync;
    use crate::store::keys;

    /// The tail's re-read of missing ids: only those asked for, only the
    /// restaurant's when one is given, in id order, and more ids than one
    /// chunk in one call.
    #[tokio::test]
    async fn by_ids_reads_the_ids_asked_for() {
        let dir = std::env::temp_dir().join(format!("restaurant-events-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/x.sqlite", dir.display());
        let db = Db::connect(&url, 1, SqliteSync::Full).await.unwrap();
        db.migrate().await.unwrap();
        for r in ["r1", "r2"] {
            keys::ensure_restaurant(&db, r).await.unwrap();
        }
        let mut tx = db.begin().await.unwrap();
        for i in 0..1200 {
            let r = if i % 2 == 0 { "r1" } else { "r2" };
            append(
                &mut tx,
                r,
                "payment.pending",
                &format!("p{i}"),
                &serde_json::json!({}),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let first = last_id(&db).await.unwrap() - 1199;
        let wanted: Vec<i64> = (first..first + 1200)
            .step_by(2)
            .chain([first + 1, 9_999_999])
            .collect();
        let all = by_ids(&db, None, &wanted).await.unwrap();
        assert_eq!(
            all.len(),
            601,
            "600 even ids, one odd one, the missing one skipped"
        );
        let mine = by_ids(&db, Some("r2"), &wanted).await.unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].id, first + 1);
        assert_eq!(mine[0].subject, "p1");
        let ids: Vec<i64> = by_ids(&db, Some("r1"), &wanted[..3])
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![first, first + 2, first + 4]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
