//! PostgreSQL journal.

use super::sql::{self, MIGRATIONS_POSTGRES};
use super::{Job, JobRecord, JobState, Journal, JournalTotals};
use crate::error::Error;
use crate::outcome::{Outcome, Snapshot};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// A journal in PostgreSQL (cloud side, or an agent with a local server).
#[derive(Debug, Clone)]
pub struct PgJournal {
    pool: PgPool,
}

const SELECT: &str = "SELECT job_id, printer_id, job, state, attempt, baseline, outcome, created_at, updated_at FROM fiscal_jobs";

impl PgJournal {
    /// Wraps a pool. Call [`PgJournal::migrate`] once before use.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Connects to `url` and applies the migrations.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database cannot be reached or migrated.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(url)
            .await
            .map_err(Error::backend)?;
        let j = Self::new(pool);
        j.migrate().await?;
        Ok(j)
    }

    /// The pool.
    pub fn get_ref(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations in one transaction serialized by
    /// `pg_advisory_xact_lock`, recording them in `fiscal_migrations`. Safe
    /// to run from many processes at once.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when a statement fails.
    pub async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(Error::backend)?;
        sqlx::query("SELECT pg_advisory_xact_lock(7365740271)")
            .execute(&mut *tx)
            .await
            .map_err(Error::backend)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS fiscal_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(Error::backend)?;
        for (version, script) in MIGRATIONS_POSTGRES {
            let done = sqlx::query("SELECT 1 FROM fiscal_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Error::backend)?;
            if done.is_none() {
                sqlx::raw_sql(*script)
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::backend)?;
                sqlx::query("INSERT INTO fiscal_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(version)
                    .bind(crate::clock::Clock::now_millis(&crate::clock::SystemClock))
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::backend)?;
            }
        }
        tx.commit().await.map_err(Error::backend)
    }

    fn row(r: sqlx::postgres::PgRow) -> Result<JobRecord, Error> {
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
impl Journal for PgJournal {
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
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8) ON CONFLICT (job_id) DO NOTHING",
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
            "UPDATE fiscal_jobs SET state = 'pending', attempt = $1, baseline = $2, outcome = NULL, \
             doc_no = NULL, amount = NULL, updated_at = $3 WHERE job_id = $4",
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
            "UPDATE fiscal_jobs SET state = $1, outcome = $2, doc_no = $3, amount = $4, updated_at = $5 WHERE job_id = $6",
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
        const Q: &str = "SELECT job_id, printer_id, job, state, attempt, baseline, outcome, created_at, updated_at FROM fiscal_jobs WHERE job_id = $1";
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
             WHERE printer_id = $1 AND state = $2 ORDER BY created_at, job_id",
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
             WHERE printer_id = $1 AND state = 'printed' GROUP BY kind",
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
