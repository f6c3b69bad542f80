//! The `app_print_jobs` table: receipts and reversals waiting for a
//! restaurant's agent, and the outcome the agent reported.

use futures::TryFutureExt;
use serde::{Deserialize, Serialize};

use super::{Get, json_col};
use crate::db::{AsConn, Db, on_db, on_tx};
use crate::domain::{FiscalDocument, ReceiptLine, now_ms};

/// What a print job asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PrintJob {
    /// The sale key: `{payment}/receipt` or `{refund}/reversal`. The printer
    /// sees one key per sale, whatever the retries.
    pub(crate) key: String,
    /// What the job's events are about: the payment, or the printer for
    /// reports and cash moves.
    pub(crate) subject: String,
    pub(crate) restaurant: String,
    pub(crate) printer: String,
    /// `receipt`, `reversal`, `x_report`, `z_report`, `cash` or
    /// `simulator` (set a simulated printer's faults).
    pub(crate) kind: String,
    pub(crate) lines: Vec<ReceiptLine>,
    pub(crate) amount: i64,
    pub(crate) currency: String,
    /// For a reversal: the receipt it reverses.
    pub(crate) original: Option<FiscalDocument>,
    /// For `simulator` jobs: the faults to set.
    #[serde(default)]
    pub(crate) faults: Option<serde_json::Value>,
    /// For `resolve` jobs: a person's answer for a job the agent reported
    /// as unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) resolve: Option<JobResolution>,
    pub(crate) traceparent: Option<String>,
    pub(crate) correlation_id: Option<String>,
}

/// A person's answer for a job whose outcome is unknown, after reading the
/// device's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobResolution {
    /// The unknown job's sale key.
    pub(crate) job: String,
    /// The number of the document it printed as; `None`: it did not print.
    pub(crate) document_number: Option<u64>,
}

/// How a print job ended, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum PrintOutcome {
    /// Exactly one fiscal document was printed.
    Printed { document: FiscalDocument },
    /// Nothing was printed, and retrying will not help.
    NotPrinted { detail: String },
    /// Nobody can tell whether it printed: a person must look at the device.
    Unknown { detail: String },
}

/// A job with its id and flow.
#[derive(Debug, Clone)]
pub(crate) struct JobRow {
    pub(crate) saga_id: String,
    pub(crate) job: PrintJob,
    pub(crate) outcome: Option<PrintOutcome>,
}

fn decode(r: &impl Get) -> Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        saga_id: r.text("saga_id")?,
        job: json_col("payload", &r.text("payload")?)?,
        outcome: r
            .opt_text("outcome")?
            .map(|t| json_col("outcome", &t))
            .transpose()?,
    })
}

/// Enqueues a job in the caller's transaction (a no-op when its key is
/// already queued).
pub(crate) async fn enqueue(
    tx: &mut impl AsConn,
    saga_id: &str,
    job: &PrintJob,
) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_string(job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    on_tx!(tx, |e| {
        sqlx::query(
        "INSERT INTO app_print_jobs (id, restaurant_id, printer_id, saga_id, kind, payload, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (id) DO NOTHING"
    )
    .bind(&job.key)
    .bind(&job.restaurant)
    .bind(&job.printer)
    .bind(saga_id)
    .bind(&job.kind)
    .bind(&payload)
    .bind(now_ms())
    .execute(e).map_ok(|r| r.rows_affected())
    })?;
    Ok(())
}

pub(crate) async fn get(db: &Db, key: &str) -> Result<Option<JobRow>, sqlx::Error> {
    on_db!(db, |e| async {
        let row = sqlx::query("SELECT saga_id, payload, outcome FROM app_print_jobs WHERE id = $1")
            .bind(key)
            .fetch_optional(e)
            .await?;
        row.as_ref().map(decode).transpose()
    })
}

/// Records a job's outcome (once: a second report for the same key is
/// ignored). Returns the job when this call recorded it.
pub(crate) async fn complete(
    tx: &mut impl AsConn,
    key: &str,
    outcome: &PrintOutcome,
) -> Result<Option<JobRow>, sqlx::Error> {
    let text = serde_json::to_string(outcome).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    on_tx!(tx, |e| async move {
        let row = sqlx::query(
            "UPDATE app_print_jobs SET status = 'done', outcome = $2, updated_at = $3 \
             WHERE id = $1 AND status = 'queued' RETURNING saga_id, payload, outcome",
        )
        .bind(key)
        .bind(&text)
        .bind(now_ms())
        .fetch_optional(e)
        .await?;
        row.as_ref().map(decode).transpose()
    })
}

/// A `LIKE` pattern for the outcome column of a job that ended unknown
/// (the tag is serialized first); the agent's journal uses it too.
pub(crate) const UNKNOWN: &str = r#"{"result":"unknown"%"#;

/// Replaces an `unknown` outcome with a person's answer, as the agent
/// reports it. Returns the job when this call recorded it.
pub(crate) async fn settle_unknown(
    tx: &mut impl AsConn,
    key: &str,
    outcome: &PrintOutcome,
) -> Result<Option<JobRow>, sqlx::Error> {
    if matches!(outcome, PrintOutcome::Unknown { .. }) {
        return Ok(None);
    }
    let text = serde_json::to_string(outcome).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    on_tx!(tx, |e| async move {
        let row = sqlx::query(
            "UPDATE app_print_jobs SET outcome = $2, updated_at = $3 \
             WHERE id = $1 AND status = 'done' AND outcome LIKE $4 RETURNING saga_id, payload, outcome",
        )
        .bind(key)
        .bind(&text)
        .bind(now_ms())
        .bind(UNKNOWN)
        .fetch_optional(e)
        .await?;
        row.as_ref().map(decode).transpose()
    })
}

/// Jobs whose outcome nobody could tell, oldest first: each waits for a
/// person to read the device's journal.
pub(crate) async fn unknown(db: &Db, limit: i64) -> Result<Vec<JobRow>, sqlx::Error> {
    on_db!(db, |e| async {
        let rows = sqlx::query(
            "SELECT saga_id, payload, outcome FROM app_print_jobs \
             WHERE status = 'done' AND outcome LIKE $1 ORDER BY updated_at LIMIT CAST($2 AS BIGINT)",
        )
        .bind(UNKNOWN)
        .bind(limit)
        .fetch_all(e)
        .await?;
        rows.iter().map(decode).collect::<Result<Vec<_>, _>>()
    })
}

/// Queued jobs and the age of the oldest, in ms (the backlog and lag
/// between the server and the agents).
pub(crate) async fn backlog(db: &Db) -> Result<(i64, i64), sqlx::Error> {
    let (n, oldest): (i64, Option<i64>) = on_db!(db, |e| {
        sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT), MIN(created_at) FROM app_print_jobs WHERE status = 'queued'"
    )
    .fetch_one(e)
    })?;
    Ok((n, oldest.map_or(0, |o| (now_ms() - o).max(0))))
}
