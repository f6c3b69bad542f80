//! The agent's own database: the fiscal journal (intent before printing,
//! outcome after) and the jobs received from the cloud.

use crate::db::{Db, on_db, on_tx};
use crate::domain::now_ms;
use crate::store::print_jobs::{PrintJob, PrintOutcome};
use futures::TryFutureExt;

/// What the journal knows about a sale key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Never seen.
    New,
    /// An intent without an outcome: a previous attempt may have printed.
    InDoubt,
    /// Finished with this outcome.
    Done(PrintOutcome),
}

/// Records the intent (a no-op when it exists) and says what was there.
///
/// The insert comes first: a new sale, every job's first visit, takes one
/// statement; only a sale seen before reads its entry back.
pub(crate) async fn intent(
    db: &Db,
    printer: &str,
    saga_id: &str,
    job: &PrintJob,
) -> Result<Entry, sqlx::Error> {
    let inserted = on_db!(db, |e| {
        sqlx::query(
            "INSERT INTO agent_journal (sale_key, printer_id, saga_id, kind, amount, intent_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sale_key) DO NOTHING",
        )
        .bind(&job.key)
        .bind(printer)
        .bind(saga_id)
        .bind(&job.kind)
        .bind(job.amount)
        .bind(now_ms())
        .execute(e)
        .map_ok(|r| r.rows_affected())
    })?;
    if inserted == 1 {
        return Ok(Entry::New);
    }
    let existing: Option<(Option<String>,)> = on_db!(db, |e| sqlx::query_as(
        "SELECT outcome FROM agent_journal WHERE sale_key = $1"
    )
    .bind(&job.key)
    .fetch_optional(e))?;
    match existing {
        Some((Some(text),)) => {
            let outcome = crate::store::json_col("outcome", &text)?;
            Ok(Entry::Done(outcome))
        }
        Some((None,)) => Ok(Entry::InDoubt),
        // The insert met an entry that is gone now: the journal is never
        // pruned of a sale's entry, so this is a damaged journal.
        None => Err(sqlx::Error::Protocol(format!(
            "the journal entry of {} vanished while it was read",
            job.key
        ))),
    }
}

/// Which recorded outcome a report may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replacing {
    /// None: the job's first outcome.
    Nothing,
    /// `unknown`: a person's answer for the job.
    Unknown,
}

/// Records the outcome (once), marks the job done, and enqueues the report
/// to the cloud in the agent's outbox: one transaction.
pub(crate) async fn finish(
    db: &Db,
    outbox: &crate::messaging::Outbox,
    report: counterfoil_outbox::OutboxMessage,
    key: &str,
    outcome: &PrintOutcome,
    replacing: Replacing,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let text = serde_json::to_string(outcome)?;
    // What the outcome column may hold now: nothing, or `unknown`. Every
    // job takes the first case, which has no LIKE: SQLite plans a LIKE with
    // its pattern's bound value, so it would prepare the statement again on
    // every run.
    let (sql, pattern) = match replacing {
        Replacing::Nothing => (
            "UPDATE agent_journal SET outcome = $2, outcome_at = $3 \
             WHERE sale_key = $1 AND outcome IS NULL",
            None,
        ),
        Replacing::Unknown => (
            "UPDATE agent_journal SET outcome = $2, outcome_at = $3 \
             WHERE sale_key = $1 AND outcome LIKE $4",
            Some(crate::store::print_jobs::UNKNOWN),
        ),
    };
    let mut tx = db.begin().await?;
    let n = on_tx!(&mut tx, |e| {
        let mut q = sqlx::query(sql).bind(key).bind(&text).bind(now_ms());
        if let Some(pattern) = pattern {
            q = q.bind(pattern);
        }
        q.execute(e).map_ok(|r| r.rows_affected())
    })?;
    on_tx!(&mut tx, |e| sqlx::query(
        "UPDATE agent_jobs SET done = 1 WHERE sale_key = $1"
    )
    .bind(key)
    .execute(e)
    .map_ok(|r| r.rows_affected()))?;
    if n == 1 {
        outbox.enqueue(&mut tx, &[report]).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records a job received from the cloud; `false` when it was known.
pub(crate) async fn receive(
    tx: &mut crate::db::Tx,
    saga_id: &str,
    job: &PrintJob,
) -> Result<bool, sqlx::Error> {
    let payload = serde_json::to_string(job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let n = on_tx!(tx, |e| {
        sqlx::query(
        "INSERT INTO agent_jobs (sale_key, saga_id, printer_id, payload, received_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (sale_key) DO NOTHING"
    )
    .bind(&job.key)
    .bind(saga_id)
    .bind(&job.printer)
    .bind(&payload)
    .bind(now_ms())
    .execute(e)
    .map_ok(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// A job received from the cloud, by sale key.
pub(crate) async fn received(db: &Db, key: &str) -> Result<Option<PrintJob>, sqlx::Error> {
    let row: Option<(String,)> = on_db!(db, |e| sqlx::query_as(
        "SELECT payload FROM agent_jobs WHERE sale_key = $1"
    )
    .bind(key)
    .fetch_optional(e))?;
    row.map(|(p,)| crate::store::json_col("payload", &p))
        .transpose()
}

/// Jobs not done yet, oldest first.
pub(crate) async fn pending(db: &Db, limit: i64) -> Result<Vec<(String, PrintJob)>, sqlx::Error> {
    let rows: Vec<(String, String)> = on_db!(db, |e| {
        sqlx::query_as(
        "SELECT saga_id, payload FROM agent_jobs WHERE done = 0 ORDER BY received_at, sale_key LIMIT CAST($1 AS BIGINT)"
    )
    .bind(limit)
    .fetch_all(e)
    })?;
    rows.into_iter()
        .map(|(saga, p)| Ok((saga, crate::store::json_col("payload", &p)?)))
        .collect()
}

/// Jobs waiting, per printer.
pub(crate) async fn pending_per_printer(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    on_db!(db, |e| {
        sqlx::query_as(
        "SELECT printer_id, CAST(COUNT(*) AS BIGINT) FROM agent_jobs WHERE done = 0 GROUP BY printer_id"
    )
    .fetch_all(e)
    })
}
