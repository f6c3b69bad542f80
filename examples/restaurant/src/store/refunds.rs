//! The `app_refunds` table.

use super::{Get, json_col};
use crate::db::{AsConn, Db, on_db, on_tx};
use crate::domain::{FiscalDocument, Refund, RefundStatus, now_ms};
use futures::TryFutureExt;

/// A refund row.
#[derive(Debug, Clone)]
pub(crate) struct RefundRow {
    pub(crate) id: String,
    pub(crate) payment_id: String,
    pub(crate) restaurant: String,
    pub(crate) idempotency_key: String,
    pub(crate) fingerprint: String,
    pub(crate) amount: i64,
    pub(crate) reason: String,
    pub(crate) status: RefundStatus,
    pub(crate) provider_ref: Option<String>,
    pub(crate) reversal: Option<FiscalDocument>,
    pub(crate) traceparent: Option<String>,
    pub(crate) correlation_id: Option<String>,
    /// The refund saga.
    pub(crate) saga_id: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl RefundRow {
    pub(crate) fn to_api(&self) -> Refund {
        Refund {
            id: self.id.clone(),
            payment_id: self.payment_id.clone(),
            amount: self.amount,
            reason: self.reason.clone(),
            status: self.status,
            provider_ref: self.provider_ref.clone(),
            reversal: self.reversal.clone(),
            saga_id: self.saga_id.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

macro_rules! columns {
    () => {
        "id, payment_id, restaurant_id, idempotency_key, fingerprint, amount, reason, status, \
         provider_ref, reversal, traceparent, correlation_id, saga_id, created_at, updated_at"
    };
}

fn decode(r: &impl Get) -> Result<RefundRow, sqlx::Error> {
    let status = r.text("status")?;
    let reversal = r.opt_text("reversal")?;
    Ok(RefundRow {
        id: r.text("id")?,
        payment_id: r.text("payment_id")?,
        restaurant: r.text("restaurant_id")?,
        idempotency_key: r.text("idempotency_key")?,
        fingerprint: r.text("fingerprint")?,
        amount: r.int("amount")?,
        reason: r.text("reason")?,
        status: RefundStatus::parse(&status).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "status".into(),
            source: format!("unknown refund status `{status}`").into(),
        })?,
        provider_ref: r.opt_text("provider_ref")?,
        reversal: reversal.map(|t| json_col("reversal", &t)).transpose()?,
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
    New,
    Existing(Box<RefundRow>),
}

/// Inserts a refund, or finds the one made before with the same key.
pub(crate) async fn insert(tx: &mut impl AsConn, r: &RefundRow) -> Result<Inserted, sqlx::Error> {
    let n = on_tx!(tx, |e| {
        sqlx::query(
        "INSERT INTO app_refunds (id, payment_id, restaurant_id, idempotency_key, fingerprint, amount, \
         reason, status, traceparent, correlation_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
         ON CONFLICT (restaurant_id, idempotency_key) DO NOTHING"
    )
    .bind(&r.id)
    .bind(&r.payment_id)
    .bind(&r.restaurant)
    .bind(&r.idempotency_key)
    .bind(&r.fingerprint)
    .bind(r.amount)
    .bind(&r.reason)
    .bind(r.status.as_str())
    .bind(&r.traceparent)
    .bind(&r.correlation_id)
    .bind(r.created_at)
    .execute(e).map_ok(|r| r.rows_affected())
    })?;
    if n == 1 {
        return Ok(Inserted::New);
    }
    let existing = on_tx!(tx, |e| async move {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM app_refunds WHERE restaurant_id = $1 AND idempotency_key = $2"
        ))
        .bind(&r.restaurant)
        .bind(&r.idempotency_key)
        .fetch_one(e)
        .await?;
        decode(&row)
    })?;
    Ok(Inserted::Existing(Box::new(existing)))
}

/// Refunds of one payment, oldest first.
pub(crate) async fn for_payment(db: &Db, payment_id: &str) -> Result<Vec<RefundRow>, sqlx::Error> {
    on_db!(db, |e| async {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM app_refunds WHERE payment_id = $1 ORDER BY id"
        ))
        .bind(payment_id)
        .fetch_all(e)
        .await?;
        rows.iter().map(decode).collect::<Result<Vec<_>, _>>()
    })
}

/// Sum of the refunds of a payment that were not rejected, inside `tx` (the
/// refund endpoint checks it before inserting, under the same lock).
pub(crate) async fn refunded_total(
    tx: &mut impl AsConn,
    payment_id: &str,
) -> Result<i64, sqlx::Error> {
    let n: Option<i64> = on_tx!(tx, |e| {
        sqlx::query_scalar(
        "SELECT CAST(SUM(amount) AS BIGINT) FROM app_refunds WHERE payment_id = $1 AND status <> 'rejected'"
    )
    .bind(payment_id)
    .fetch_one(e)
    })?;
    Ok(n.unwrap_or(0))
}

pub(crate) async fn get(db: &Db, id: &str) -> Result<Option<RefundRow>, sqlx::Error> {
    on_db!(db, |e| async {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM app_refunds WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(e)
        .await?;
        row.as_ref().map(decode).transpose()
    })
}

/// Records the refund's saga (same transaction as the insert).
pub(crate) async fn set_saga_id(
    tx: &mut impl AsConn,
    id: &str,
    saga_id: &str,
) -> Result<(), sqlx::Error> {
    on_tx!(tx, |e| sqlx::query(
        "UPDATE app_refunds SET saga_id = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(saga_id)
    .execute(e)
    .map_ok(|r| r.rows_affected()))?;
    Ok(())
}

/// Sets the status (and provider ref, reversal receipt when given).
pub(crate) async fn set_status(
    tx: &mut impl AsConn,
    id: &str,
    status: RefundStatus,
    provider_ref: Option<&str>,
    reversal: Option<&FiscalDocument>,
) -> Result<(), sqlx::Error> {
    let reversal = reversal
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    on_tx!(tx, |e| sqlx::query(
        "UPDATE app_refunds SET status = $2, provider_ref = COALESCE($3, provider_ref), \
         reversal = COALESCE($4, reversal), updated_at = $5 WHERE id = $1"
    )
    .bind(id)
    .bind(status.as_str())
    .bind(provider_ref)
    .bind(&reversal)
    .bind(now_ms())
    .execute(e)
    .map_ok(|r| r.rows_affected()))?;
    Ok(())
}
