//! SQLite journal.

use super::sql::{self, MIGRATIONS_SQLITE};
use super::{Job, JobRecord, JobState, Journal, JournalTotals};
use crate::error::Error;
use crate::outcome::{Outcome, Snapshot};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// A journal in SQLite (the on-site agent's choice).
#[derive(Debug, Clone)]
pub struct SqliteJournal {
    pool: SqlitePool,
}

const SELECT: &str = "SELECT job_id, printer_id, job, state, attempt, baseline, outcome, created_at, updated_at FROM fiscal_jobs";

impl SqliteJournal {
    /// Wraps a pool. Call [`SqliteJournal::migrate`] once before use.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Opens (creating if needed) the database at `url`
    /// (`sqlite://journal.db`, `sqlite::memory:`), in WAL mode with a 5 s
    /// busy timeout, and applies the migrations.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database cannot be opened or migrated.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(Error::backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        let max = if url.contains(":memory:") { 1 } else { 4 };
        // Switching a new file to WAL needs a lock SQLite does not wait for
        // (no busy handler): processes opening the same new journal at once
        // can get SQLITE_BUSY here. Try again a few times.
        let mut attempt = 0u32;
        let pool = loop {
            // A local file needs no liveness ping before each acquire;
            // on SQLite that ping is a round trip to the connection's
            // thread on every transaction.
            match SqlitePoolOptions::new()
                .max_connections(max)
                .test_before_acquire(false)
                .connect_with(opts.clone())
                .await
            {
                Ok(pool) => break pool,
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("5") && attempt < 10 =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err(e) => return Err(Error::backend(e)),
            }
        };
        let j = Self::new(pool);
        j.migrate().await?;
        Ok(j)
    }

    /// The pool.
    pub fn get_ref(&self) -> &SqlitePool {
        &self.pool
    }

    /// Applies pending migrations under `BEGIN IMMEDIATE`, recording them in
    /// `fiscal_migrations`. Safe to run from many processes at once.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when a statement fails.
    pub async fn migrate(&self) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await.map_err(Error::backend)?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(Error::backend)?;
        let res: Result<(), sqlx::Error> = async {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS fiscal_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .execute(&mut *conn)
            .await?;
            for (version, script) in MIGRATIONS_SQLITE {
                let done = sqlx::query("SELECT 1 FROM fiscal_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&mut *conn)
                    .await?;
                if done.is_none() {
                    sqlx::raw_sql(*script).execute(&mut *conn).await?;
                    sqlx::query("INSERT INTO fiscal_migrations (version, applied_at) VALUES (?, ?)")
                        .bind(version)
                        .bind(crate::clock::Clock::now_millis(&crate::clock::SystemClock))
                        .execute(&mut *conn)
                        .await?;
                }
            }
            Ok(())
        }
        .await;
        let end = if res.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let fin = sqlx::query(end).execute(&mut *conn).await;
        res.map_err(Error::backend)?;
        fin.map_err(Error::backend)?;
        Ok(())
    }

    fn row(r: sqlx::sqlite::SqliteRow) -> Result<JobRecord, Error> {
        let g = |e: sqlx::Error| Error::backend(e);
        sql::record(
            r.try_get(0).map_err(g)?,
            r.try_get(1).map_err(g)?,
            r.try_get(2).map_err(g)?,
            r.try_get(3).map_err(g)?,
            r.try_get(4).map_err(g)?,
            r.try_get(5).map_err(g)?,
            r.try_get(6).map_err(g)?,
            r.try_get(7).map_err(g)?,
            r.try_get(8).map_err(g)?,
        )
    }
}

#[async_trait]
impl Journal for SqliteJournal {
    async fn record_intent(
        &self,
        printer_id: &str,
        job_id: &str,
        job: &Job,
        attempt: u32,
        baseline: &Snapshot,
        now: i64,
    ) -> Result<(), Error> {
        let job_json = sql::json(job)?;
        let base = sql::json(baseline)?;
        let inserted = sqlx::query(
            "INSERT INTO fiscal_jobs (job_id, printer_id, kind, job, state, attempt, baseline, created_at, updated_at) \
             VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?) ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(job_id)
        .bind(printer_id)
        .bind(job.kind())
        .bind(&job_json)
        .bind(i64::from(attempt))
        .bind(&base)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(Error::backend)?
        .rows_affected();
        if inserted == 1 {
            return Ok(());
        }
        let existing = self
            .get(job_id)
            .await?
            .ok_or_else(|| Error::Conflict(job_id.to_owned()))?;
        sql::check_same(&existing, printer_id, job)?;
        sqlx::query(
            "UPDATE fiscal_jobs SET state = 'pending', attempt = ?, baseline = ?, outcome = NULL, \
             doc_no = NULL, amount = NULL, updated_at = ? WHERE job_id = ?",
        )
        .bind(i64::from(attempt))
        .bind(&base)
        .bind(now)
        .bind(job_id)
        .execute(&self.pool)
        .await
        .map_err(Error::backend)?;
        Ok(())
    }

    async fn record_outcome(&self, job_id: &str, outcome: &Outcome, now: i64) -> Result<(), Error> {
        let (doc_no, amount) = sql::outcome_cols(outcome);
        sqlx::query(
            "UPDATE fiscal_jobs SET state = ?, outcome = ?, doc_no = ?, amount = ?, updated_at = ? WHERE job_id = ?",
        )
        .bind(JobState::of(outcome).as_str())
        .bind(sql::json(outcome)?)
        .bind(doc_no)
        .bind(amount)
        .bind(now)
        .bind(job_id)
        .execute(&self.pool)
        .await
        .map_err(Error::backend)?;
        Ok(())
    }

    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, Error> {
        const Q: &str = "SELECT job_id, printer_id, job, state, attempt, baseline, outcome, created_at, updated_at FROM fiscal_jobs WHERE job_id = ?";
        debug_assert!(Q.starts_with(SELECT));
        sqlx::query(Q)
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::backend)?
            .map(Self::row)
            .transpose()
    }

    async fn in_state(&self, printer_id: &str, state: JobState) -> Result<Vec<JobRecord>, Error> {
        sqlx::query(
            "SELECT job_id, printer_id, job, state, attempt, baseline, outcome, created_at, updated_at FROM fiscal_jobs \
             WHERE printer_id = ? AND state = ? ORDER BY created_at, job_id",
        )
        .bind(printer_id)
        .bind(state.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(Error::backend)?
        .into_iter()
        .map(Self::row)
        .collect()
    }

    async fn totals(&self, printer_id: &str) -> Result<JournalTotals, Error> {
        let rows = sqlx::query(
            "SELECT kind, COUNT(*), CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM fiscal_jobs \
             WHERE printer_id = ? AND state = 'printed' GROUP BY kind",
        )
        .bind(printer_id)
        .fetch_all(&self.pool)
        .await
        .map_err(Error::backend)?;
        let mut t = JournalTotals::default();
        for r in rows {
            let kind: String = r.try_get(0).map_err(Error::backend)?;
            let n: i64 = r.try_get(1).map_err(Error::backend)?;
            let sum: i64 = r.try_get(2).map_err(Error::backend)?;
            match kind.as_str() {
                "receipt" => {
                    t.receipts = n.unsigned_abs();
                    t.receipts_amount = sum;
                }
                "reversal" => {
                    t.reversals = n.unsigned_abs();
                    t.reversals_amount = sum;
                }
                _ => {}
            }
        }
        Ok(t)
    }
}
