//! The `app_printers` table: which printers exist, and the last status each
//! agent reported (paper, open receipt, last document, breaker state).

use futures::TryFutureExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Get, json_col};
use crate::db::{AsConn, Db, on_db, on_tx};
use crate::domain::now_ms;

/// A printer's last reported state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct PrinterState {
    /// Reachable and ready to print.
    pub(crate) online: bool,
    /// `ok`, `low` or `out`.
    pub(crate) paper: String,
    /// A receipt is open on the device.
    pub(crate) receipt_open: bool,
    /// The last fiscal document number.
    pub(crate) last_document: Option<u64>,
    /// The number of the last Z report.
    pub(crate) z_number: Option<u32>,
    /// The printer's circuit breaker: `closed`, `open` or `half_open`.
    pub(crate) breaker: String,
    /// Print jobs waiting for this printer.
    pub(crate) queued: u64,
    /// The last error, if any.
    pub(crate) last_error: Option<String>,
}

/// A printer as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct Printer {
    pub(crate) id: String,
    pub(crate) restaurant: String,
    /// `sim` or `tcp://host:port`.
    pub(crate) address: String,
    #[serde(flatten)]
    pub(crate) state: PrinterState,
    /// When the agent last reported (ms since the Unix epoch).
    pub(crate) updated_at: i64,
}

fn decode(r: &impl Get) -> Result<Printer, sqlx::Error> {
    Ok(Printer {
        id: r.text("id")?,
        restaurant: r.text("restaurant_id")?,
        address: r.text("address")?,
        state: json_col("state", &r.text("state")?)?,
        updated_at: r.int("updated_at")?,
    })
}

/// Registers a printer (no-op when it exists).
pub(crate) async fn ensure(
    db: &Db,
    id: &str,
    restaurant: &str,
    address: &str,
) -> Result<(), sqlx::Error> {
    let state = serde_json::to_string(&PrinterState {
        paper: "ok".into(),
        breaker: "closed".into(),
        ..PrinterState::default()
    })
    .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    on_db!(db, |e| sqlx::query(
        "INSERT INTO app_printers (id, restaurant_id, address, state, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING"
    )
    .bind(id)
    .bind(restaurant)
    .bind(address)
    .bind(&state)
    .bind(now_ms())
    .execute(e)
    .map_ok(|r| r.rows_affected()))?;
    Ok(())
}

pub(crate) async fn list(db: &Db, restaurant: Option<&str>) -> Result<Vec<Printer>, sqlx::Error> {
    on_db!(db, |e| async {
        let rows = sqlx::query(
            "SELECT id, restaurant_id, address, state, updated_at FROM app_printers \
             WHERE ($1 IS NULL OR restaurant_id = $1) ORDER BY id",
        )
        .bind(restaurant)
        .fetch_all(e)
        .await?;
        rows.iter().map(decode).collect::<Result<Vec<_>, _>>()
    })
}

pub(crate) async fn get(
    db: &Db,
    restaurant: Option<&str>,
    id: &str,
) -> Result<Option<Printer>, sqlx::Error> {
    get_in(&mut db.acquire().await?, restaurant, id).await
}

/// [`get`] on the caller's connection, in its transaction if it has one.
pub(crate) async fn get_in(
    tx: &mut impl AsConn,
    restaurant: Option<&str>,
    id: &str,
) -> Result<Option<Printer>, sqlx::Error> {
    let row = on_tx!(tx, |e| sqlx::query(
        "SELECT id, restaurant_id, address, state, updated_at FROM app_printers \
         WHERE id = $1 AND ($2 IS NULL OR restaurant_id = $2)"
    )
    .bind(id)
    .bind(restaurant)
    .fetch_optional(e)
    .map_ok(|r| r.as_ref().map(decode)))?;
    row.transpose()
}

/// Stores a reported state; `true` when it changed (then an event is due).
pub(crate) async fn set_state(
    tx: &mut impl AsConn,
    id: &str,
    state: &PrinterState,
) -> Result<bool, sqlx::Error> {
    let text = serde_json::to_string(state).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let n = on_tx!(tx, |e| sqlx::query(
        "UPDATE app_printers SET state = $2, updated_at = $3 WHERE id = $1 AND state <> $2"
    )
    .bind(id)
    .bind(&text)
    .bind(now_ms())
    .execute(e)
    .map_ok(|r| r.rows_affected()))?;
    Ok(n > 0)
}
