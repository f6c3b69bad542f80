//! The `app_payments` table.

use super::events;
use super::{Get, json_col};
use crate::db::{AsConn, Conn, Db, on_db, on_tx};
use crate::domain::{FiscalDocument, PaymentMethod, PaymentStatus, ReceiptLine, now_ms};
use futures::TryFutureExt;

/// A payment row.
#[derive(Debug, Clone)]
pub(crate) struct PaymentRow {
    pub(crate) id: String,
    pub(crate) restaurant: String,
    pub(crate) idempotency_key: String,
    pub(crate) fingerprint: String,
    pub(crate) order_ref: String,
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) method: PaymentMethod,
    pub(crate) printer: String,
    pub(crate) lines: Vec<ReceiptLine>,
    pub(crate) status: PaymentStatus,
    pub(crate) reason: Option<String>,
    pub(crate) provider_ref: Option<String>,
    pub(crate) receipt: Option<FiscalDocument>,
    pub(crate) traceparent: Option<String>,
    pub(crate) correlation_id: Option<String>,
    /// The payment saga.
    pub(crate) saga_id: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

macro_rules! columns {
    () => {
        "id, restaurant_id, idempotency_key, fingerprint, order_ref, amount, currency, method, \
         printer_id, lines, status, reason, provider_ref, receipt, traceparent, correlation_id, \
         saga_id, created_at, updated_at"
    };
}

fn decode(r: &impl Get) -> Result<PaymentRow, sqlx::Error> {
    let status = r.text("status")?;
    let receipt = r.opt_text("receipt")?;
    Ok(PaymentRow {
        id: r.text("id")?,
        restaurant: r.text("restaurant_id")?,
        idempotency_key: r.text("idempotency_key")?,
        fingerprint: r.text("fingerprint")?,
        order_ref: r.text("order_ref")?,
        amount: r.int("amount")?,
        currency: r.text("currency")?,
        method: PaymentMethod::Card,
        printer: r.text("printer_id")?,
        lines: json_col("lines", &r.text("lines")?)?,
        status: PaymentStatus::parse(&status).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "status".into(),
            source: format!("unknown payment status `{status}`").into(),
        })?,
        reason: r.opt_text("reason")?,
        provider_ref: r.opt_text("provider_ref")?,
        receipt: receipt.map(|t| json_col("receipt", &t)).transpose()?,
        traceparent: r.opt_text("traceparent")?,
        correlation_id: r.opt_text("correlation_id")?,
        saga_id: r.opt_text("saga_id")?,
        created_at: r.int("created_at")?,
        updated_at: r.int("updated_at")?,
    })
}

/// What `insert` did.
#[derive(Debug)]
pub(crate) enum Inserted {
    /// A new payment.
    New,
    /// The key was used before: here is that payment.
    Existing(Box<PaymentRow>),
}

/// Inserts a new payment, or finds the one created before with the same
/// restaurant and idempotency key.
pub(crate) async fn insert(tx: &mut impl AsConn, p: &PaymentRow) -> Result<Inserted, sqlx::Error> {
    let lines = serde_json::to_string(&p.lines).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let sql = "INSERT INTO app_payments (id, restaurant_id, idempotency_key, fingerprint, order_ref, amount, \
         currency, method, printer_id, lines, status, traceparent, correlation_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'card', $8, $9, $10, $11, $12, $13, $13) \
         ON CONFLICT (restaurant_id, idempotency_key) DO NOTHING";
    let n = on_tx!(tx, |e| sqlx::query(sql)
        .bind(&p.id)
        .bind(&p.restaurant)
        .bind(&p.idempotency_key)
        .bind(&p.fingerprint)
        .bind(&p.order_ref)
        .bind(p.amount)
        .bind(&p.currency)
        .bind(&p.printer)
        .bind(&lines)
        .bind(p.status.as_str())
        .bind(&p.traceparent)
        .bind(&p.correlation_id)
        .bind(p.created_at)
        .execute(e)
        .map_ok(|r| r.rows_affected()))?;
    if n == 1 {
        return Ok(Inserted::New);
    }
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM app_payments WHERE restaurant_id = $1 AND idempotency_key = $2"
    );
    let existing = on_tx!(tx, |e| async move {
        let row = sqlx::query(sql)
            .bind(&p.restaurant)
            .bind(&p.idempotency_key)
            .fetch_one(e)
            .await?;
        decode(&row)
    })?;
    Ok(Inserted::Existing(Box::new(existing)))
}

/// One payment of `restaurant` (`None`: any restaurant, for operators and
/// workers).
pub(crate) async fn get(
    db: &Db,
    restaurant: Option<&str>,
    id: &str,
) -> Result<Option<PaymentRow>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM app_payments WHERE id = $1 AND ($2 IS NULL OR restaurant_id = $2)"
    );
    on_db!(db, |e| async {
        let row = sqlx::query(sql)
            .bind(id)
            .bind(restaurant)
            .fetch_optional(e)
            .await?;
        row.as_ref().map(decode).transpose()
    })
}

/// A page of payments, newest first, after the `before` cursor (a payment
/// id: ids are UUIDv7, so they sort by creation time).
pub(crate) async fn list(
    db: &Db,
    restaurant: &str,
    status: Option<PaymentStatus>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<PaymentRow>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM app_payments WHERE restaurant_id = $1 AND ($2 IS NULL OR status = $2) \
         AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT CAST($4 AS BIGINT)"
    );
    let status = status.map(|s| s.as_str());
    on_db!(db, |e| async {
        let rows = sqlx::query(sql)
            .bind(restaurant)
            .bind(status)
            .bind(before)
            .bind(limit)
            .fetch_all(e)
            .await?;
        rows.iter().map(decode).collect::<Result<Vec<_>, _>>()
    })
}

/// The restaurant's payments among `ids`, newest first, in one query.
pub(crate) async fn get_many(
    db: &Db,
    restaurant: &str,
    ids: &[String],
) -> Result<Vec<PaymentRow>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    on_db!(db, |e| async {
        let mut q = sqlx::QueryBuilder::new(concat!(
            "SELECT ",
            columns!(),
            " FROM app_payments WHERE restaurant_id = "
        ));
        q.push_bind(restaurant).push(" AND id IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id);
        }
        q.push(") ORDER BY id DESC");
        let rows = q.build().fetch_all(e).await?;
        rows.iter().map(decode).collect::<Result<Vec<_>, _>>()
    })
}

/// A status change and what came with it.
#[derive(Debug, Default)]
pub(crate) struct Change<'a> {
    pub(crate) reason: Option<&'a str>,
    pub(crate) provider_ref: Option<&'a str>,
    pub(crate) receipt: Option<&'a FiscalDocument>,
}

const SET_STATUS: &str = "UPDATE app_payments SET status = $2, reason = COALESCE($3, reason), \
provider_ref = COALESCE($4, provider_ref), receipt = COALESCE($5, receipt), updated_at = $6 \
WHERE id = $1";

/// [`SET_STATUS`] and the payment's event (`$7` restaurant, `$8` kind, `$9`
/// data, at `$6`) as one multi-statement query, for SQLite: one round trip
/// to the connection's thread instead of two. PostgreSQL prepares one
/// statement at a time, so it runs the two apart.
static SET_STATUS_AND_EVENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{SET_STATUS}; INSERT INTO app_events (restaurant_id, kind, subject, data, at) \
         VALUES ($7, $8, $1, $9, $6)"
    )
});

/// Binds [`SET_STATUS`]'s `$1` – `$6` on either backend's query.
macro_rules! bind_status {
    ($q:expr, $id:expr, $status:expr, $change:expr, $receipt:expr) => {
        $q.bind($id)
            .bind($status.as_str())
            .bind($change.reason)
            .bind($change.provider_ref)
            .bind($receipt)
            .bind(now_ms())
    };
}

/// Sets the status (and reason, provider ref, receipt when given).
pub(crate) async fn set_status(
    tx: &mut impl AsConn,
    id: &str,
    status: PaymentStatus,
    change: Change<'_>,
) -> Result<(), sqlx::Error> {
    let receipt = encode_receipt(&change)?;
    on_tx!(tx, |e| {
        bind_status!(sqlx::query(SET_STATUS), id, status, change, &receipt)
            .execute(e)
            .map_ok(|r| r.rows_affected())
    })?;
    Ok(())
}

/// Sets the status as [`set_status`] does and appends the payment's event
/// (subject: the payment) in the same transaction.
pub(crate) async fn set_status_with_event(
    tx: &mut impl AsConn,
    id: &str,
    status: PaymentStatus,
    change: Change<'_>,
    restaurant: &str,
    data: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    let kind = format!("payment.{}", status.as_str());
    match tx.conn()? {
        Conn::Postgres(c) => {
            let mut c = Conn::Postgres(c);
            set_status(&mut c, id, status, change).await?;
            events::append(&mut c, restaurant, &kind, id, data)
                .await
                .map(drop)
        }
        Conn::Sqlite(c) => {
            let receipt = encode_receipt(&change)?;
            let q = sqlx::query(SET_STATUS_AND_EVENT.as_str());
            bind_status!(q, id, status, change, &receipt)
                .bind(restaurant)
                .bind(&kind)
                .bind(data.to_string())
                .execute(c)
                .await
                .map(drop)
        }
    }
}

fn encode_receipt(change: &Change<'_>) -> Result<Option<String>, sqlx::Error> {
    change
        .receipt
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Records the payment's saga (same transaction as the insert).
pub(crate) async fn set_saga_id(
    tx: &mut impl AsConn,
    id: &str,
    saga_id: &str,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, |e| sqlx::query(
        "UPDATE app_payments SET saga_id = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(saga_id)
    .execute(e)
    .map_ok(|r| r.rows_affected()))?;
    Ok(())
}

/// Counts of payments per status (for the saga-state gauges).
pub(crate) async fn count_by_status(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    on_db!(db, |e| sqlx::query_as(
        "SELECT status, COUNT(*) FROM app_payments GROUP BY status"
    )
    .fetch_all(e))
}

/// Locks a payment row until the transaction ends (PostgreSQL `FOR UPDATE`;
/// SQLite write transactions are already exclusive).
pub(crate) async fn lock(tx: &mut impl AsConn, id: &str) -> Result<(), sqlx::Error> {
    if let crate::db::Conn::Postgres(c) = tx.conn()? {
        sqlx::query("SELECT id FROM app_payments WHERE id = $1 FOR UPDATE")
            .bind(id)
            .execute(c)
            .await?;
    }
    Ok(())
}
