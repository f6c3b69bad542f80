//! SQLite store: the embedded default. One writer at a time; write transactions begin with
//! `BEGIN IMMEDIATE` so they never deadlock upgrading a read lock.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::sqlite::{Sqlite, SqlitePool};
use sqlx::{Row, Transaction};
use uuid::Uuid;

use crate::Error;
use crate::clock::{Clock, SystemClock};
use crate::definition::{Definition, SagaState};
use crate::record::{Delivery, ListFilter, LogEntry, SagaRecord, Started, Status};
use crate::sql::{UPDATE_SET, bind_checkpoint, shared_sql_store};
use crate::store::{
    Checkpoint, CheckpointAck, ClaimRequest, Claimed, NewSaga, OperatorOp, SagaStore, StepTx,
};

const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/sqlite/0001_saga.sql"))];

/// A [`SagaStore`] on SQLite. Open the pool in WAL mode with a busy timeout.
#[derive(Debug, Clone)]
pub struct SqliteSagaStore {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

shared_sql_store!(SqliteSagaStore, Sqlite);

// `LIMIT CAST($3 AS INTEGER)`, not `LIMIT $3`: the bundled SQLite (3.51) plans
// a bare LIMIT parameter with its bound value, so every execution would
// prepare the statement again. The same holds for every LIMIT below.
const CLAIM: &str = "UPDATE saga_instances SET epoch = epoch + 1, lease_until = $2, \
recovered = in_flight, in_flight = TRUE, status = 'running', updated_at = $1 \
WHERE id IN (SELECT id FROM saga_instances WHERE status IN ('running', 'waiting') \
AND NOT paused AND wake_at <= $1 AND lease_until <= $1 \
AND (name || '@' || version) IN (SELECT value FROM json_each($4)) \
ORDER BY wake_at LIMIT CAST($3 AS INTEGER)) RETURNING ";

const DELIVER: &str = "UPDATE saga_instances SET event_name = $2, event_payload = $3, \
status = 'running', wake_at = $4, updated_at = $4 WHERE id = $1 AND status = 'waiting' \
AND event_name IS NULL AND instr(wait_events, ',' || $2 || ',') > 0";

impl SqliteSagaStore {
    /// A store on `pool`, on the system clock.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            clock: Arc::new(SystemClock),
        }
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The pool.
    pub fn get_ref(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a saga inside the caller's transaction, so it commits (or not) together with the
    /// caller's business and outbox rows. Same key twice: the first saga's id,
    /// `created: false`.
    ///
    /// # Errors
    /// [`Error::Serde`], [`Error::Backend`].
    ///
    /// # Cancel safety
    /// Writes only inside `tx`; nothing is visible unless the caller commits.
    pub async fn start_in<S: SagaState>(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        def: &Definition<S>,
        key: &str,
        state: &S,
    ) -> Result<Started, Error> {
        let new = def.new_saga(key, state, self.clock.now_ms())?;
        Self::start_on(tx, &new).await
    }

    async fn begin_immediate(&self) -> Result<Transaction<'static, Sqlite>, Error> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

#[async_trait]
impl SagaStore for SqliteSagaStore {
    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self.begin_immediate().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS saga_migrations \
             (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        for (version, sql) in MIGRATIONS {
            let done = sqlx::query("SELECT 1 FROM saga_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !done {
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO saga_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(version)
                    .bind(self.clock.now_ms())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn start(&self, new: NewSaga) -> Result<Started, Error> {
        let mut conn = self.pool.acquire().await?;
        Self::start_on(&mut conn, &new).await
    }

    async fn active_versions(&self) -> Result<Vec<(String, u32)>, Error> {
        self.active_versions_sql().await
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>, Error> {
        let sql = format!("{CLAIM}{}, recovered", crate::sql::SAGA_COLS);
        let known = serde_json::to_string(&req.known)?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(req.now)
            .bind(req.lease_until)
            .bind(i64::from(req.limit))
            .bind(known)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    record: Self::decode_saga(r)?,
                    recovered: r.try_get("recovered")?,
                })
            })
            .collect()
    }

    async fn begin(&self) -> Result<StepTx, Error> {
        Ok(StepTx::Sqlite(self.begin_immediate().await?))
    }

    async fn checkpoint(
        &self,
        tx: Option<StepTx>,
        cp: Checkpoint,
    ) -> Result<Option<CheckpointAck>, Error> {
        let mut tx = match tx {
            Some(StepTx::Sqlite(tx)) => tx,
            Some(other) => {
                return Err(Error::Corrupt(format!(
                    "a SQLite store got a foreign transaction {other:?}"
                )));
            }
            None => self.begin_immediate().await?,
        };
        // The step log's row and the fenced update in one multi-statement
        // query: one round trip to the connection's thread instead of two.
        // Parameters are numbered, so both statements bind from one list.
        // A stale epoch updates nothing and the rollback takes the log row
        // with it.
        let sql = format!(
            "{} VALUES ($1, $15, $17, $18, $19, $20, $21, $2); \
             UPDATE saga_instances SET {UPDATE_SET} WHERE id = $1 AND epoch = $2 \
             RETURNING paused, cancel_requested",
            crate::sql::INSERT_LOG
        );
        let row = bind_checkpoint!(sqlx::query(sqlx::AssertSqlSafe(sql)), cp)
            .bind(&cp.log.step)
            .bind(cp.log.phase.as_str())
            .bind(i64::from(cp.log.attempt))
            .bind(cp.log.outcome)
            .bind(&cp.log.detail)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let ack = CheckpointAck {
            paused: row.try_get("paused")?,
            cancel_requested: row.try_get("cancel_requested")?,
        };
        if let Some(r) = &cp.release {
            Self::wake_next_on(&mut *tx, r, cp.now).await?;
        }
        tx.commit().await?;
        Ok(Some(ack))
    }

    async fn acquire(&self, id: Uuid, epoch: i64, seq: i64, resource: &str) -> Result<bool, Error> {
        self.acquire_sql(id, epoch, seq, resource).await
    }

    async fn deliver(
        &self,
        id: Uuid,
        event: &str,
        payload: &str,
        now: i64,
    ) -> Result<Delivery, Error> {
        let mut conn = self.pool.acquire().await?;
        Self::deliver_on(&mut conn, id, event, payload, now).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<SagaRecord>, Error> {
        self.get_sql(id).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>, Error> {
        self.list_sql(filter).await
    }

    async fn log(&self, id: Uuid) -> Result<Vec<LogEntry>, Error> {
        self.log_sql(id).await
    }

    async fn operate(&self, id: Uuid, op: OperatorOp, now: i64) -> Result<bool, Error> {
        let mut tx = self.begin_immediate().await?;
        let done = Self::operate_on(&mut tx, id, op, now).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn counts(&self) -> Result<Vec<(Status, u64)>, Error> {
        self.counts_sql().await
    }
}
