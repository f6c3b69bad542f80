//! PostgreSQL store: `FOR UPDATE SKIP LOCKED` claims, one round trip per step transition.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use sqlx::postgres::{PgPool, Postgres};
use sqlx::{Row, Transaction};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::Error;
use crate::clock::{Clock, SystemClock};
use crate::definition::{Definition, SagaState};
use crate::record::{Delivery, ListFilter, LogEntry, SagaRecord, Started, Status};
use crate::sql::{bind_checkpoint, shared_sql_store};
use crate::store::{
    Checkpoint, CheckpointAck, ClaimRequest, Claimed, NewSaga, OperatorOp, SagaStore, StepTx,
};

const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/postgres/0001_saga.sql"))];

/// Key of the advisory lock that serializes this crate's migrations.
const MIGRATION_LOCK: i64 = 0x5341_4741_0000_0001;

/// A [`SagaStore`] on PostgreSQL.
///
/// Checkpoints that need no transaction of their own (no step writes, no resource handed on)
/// are group-committed: those arriving while earlier ones are in flight share one statement
/// and one commit, each still fenced by its own epoch.
#[derive(Debug, Clone)]
pub struct PgSagaStore {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    batcher: Arc<Batcher>,
}

/// Most checkpoints in one group commit.
const MAX_BATCH: usize = 64;
/// Group commits in flight at once.
const MAX_IN_FLIGHT: usize = 4;

type Job = (
    Checkpoint,
    oneshot::Sender<Result<Option<CheckpointAck>, Error>>,
);

/// The group-commit queue, started on first use.
#[derive(Default)]
struct Batcher(OnceLock<mpsc::UnboundedSender<Job>>);

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

const BATCH_CHECKPOINT: &str = "WITH v AS (SELECT * FROM unnest($1::text[], $2::bigint[], \
$3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bool[], $8::text[], $9::bigint[], \
$10::bigint[], $11::text[], $12::text[], $13::text[], $14::bool[], $15::bigint[], $16::bool[], \
$17::text[], $18::text[], $19::bigint[], $20::text[], $21::text[]) AS v(id, epoch, status, \
phase, step_cursor, attempt, in_flight, state, wake_at, lease_until, wait_events, reason, \
resource, resource_held, now, clear_cancel, log_step, log_phase, log_attempt, log_outcome, \
log_detail)), u AS (UPDATE saga_instances s SET status = v.status, phase = v.phase, \
step_cursor = v.step_cursor, attempt = v.attempt, in_flight = v.in_flight, state = v.state, \
wake_at = v.wake_at, lease_until = v.lease_until, wait_events = v.wait_events, \
reason = v.reason, resource = v.resource, resource_held = v.resource_held, \
updated_at = v.now, cancel_requested = (s.cancel_requested AND NOT v.clear_cancel), \
event_name = NULL, event_payload = NULL, resolution = NULL FROM v \
WHERE s.id = v.id AND s.epoch = v.epoch RETURNING s.id, s.paused, s.cancel_requested), \
l AS (INSERT INTO saga_step_log (saga_id, at, step, phase, attempt, outcome, detail, epoch) \
SELECT v.id, v.now, v.log_step, v.log_phase, v.log_attempt, v.log_outcome, v.log_detail, \
v.epoch FROM v JOIN u ON u.id = v.id) SELECT id, paused, cancel_requested FROM u";

async fn batch_loop(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // While every slot is busy, checkpoints pile up and the next batch grows.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let _permit = permit;
            run_batch(&pool, jobs).await;
        });
    }
}

async fn run_batch(pool: &PgPool, jobs: Vec<Job>) {
    let cps: Vec<&Checkpoint> = jobs.iter().map(|(cp, _)| cp).collect();
    let q = sqlx::query(BATCH_CHECKPOINT)
        .bind(cps.iter().map(|c| c.id.to_string()).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.epoch).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.status.as_str()).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.phase.as_str()).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| i64::from(c.cursor)).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| i64::from(c.attempt)).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.in_flight).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.state.as_str()).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.wake_at).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.lease_until).collect::<Vec<_>>())
        .bind(
            cps.iter()
                .map(|c| crate::store::encode_events(&c.wait_events))
                .collect::<Vec<_>>(),
        )
        .bind(cps.iter().map(|c| c.reason.clone()).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.resource.clone()).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.resource_held).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.now).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.clear_cancel).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.log.step.as_str()).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.log.phase.as_str()).collect::<Vec<_>>())
        .bind(
            cps.iter()
                .map(|c| i64::from(c.log.attempt))
                .collect::<Vec<_>>(),
        )
        .bind(cps.iter().map(|c| c.log.outcome).collect::<Vec<_>>())
        .bind(cps.iter().map(|c| c.log.detail.clone()).collect::<Vec<_>>());
    match q.fetch_all(pool).await {
        Ok(rows) => {
            let mut acks = std::collections::HashMap::with_capacity(rows.len());
            for r in &rows {
                let ack = (|| -> Result<(String, CheckpointAck), sqlx::Error> {
                    Ok((
                        r.try_get("id")?,
                        CheckpointAck {
                            paused: r.try_get("paused")?,
                            cancel_requested: r.try_get("cancel_requested")?,
                        },
                    ))
                })();
                if let Ok((id, ack)) = ack {
                    acks.insert(id, ack);
                }
            }
            for (cp, reply) in jobs {
                let _ = reply.send(Ok(acks.get(&cp.id.to_string()).copied()));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for (_, reply) in jobs {
                let _ = reply.send(Err(Error::Backend(msg.clone().into())));
            }
        }
    }
}

shared_sql_store!(PgSagaStore, Postgres);

const CHECKPOINT: &str = "WITH u AS (UPDATE saga_instances SET status = $3, phase = $4, \
step_cursor = $5, attempt = $6, in_flight = $7, state = $8, wake_at = $9, lease_until = $10, \
wait_events = $11, reason = $12, resource = $13, resource_held = $14, updated_at = $15, \
cancel_requested = (cancel_requested AND NOT $16), event_name = NULL, event_payload = NULL, \
resolution = NULL WHERE id = $1 AND epoch = $2 RETURNING paused, cancel_requested), \
l AS (INSERT INTO saga_step_log (saga_id, at, step, phase, attempt, outcome, detail, epoch) \
SELECT $1, $15, $17, $18, $19, $20, $21, $2 FROM u) SELECT paused, cancel_requested FROM u";

const RESOURCE_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('counterfoil_saga_resource:' || $1, 0))";

const CLAIM: &str = "UPDATE saga_instances s SET epoch = s.epoch + 1, lease_until = $2, \
recovered = s.in_flight, in_flight = TRUE, status = 'running', updated_at = $1 \
FROM (SELECT id AS cid FROM saga_instances WHERE status IN ('running', 'waiting') \
AND NOT paused AND wake_at <= $1 AND lease_until <= $1 \
AND (name || '@' || version) = ANY($4) ORDER BY wake_at LIMIT $3 FOR UPDATE SKIP LOCKED) c \
WHERE s.id = c.cid RETURNING ";

const DELIVER: &str = "UPDATE saga_instances SET event_name = $2, event_payload = $3, \
status = 'running', wake_at = $4, updated_at = $4 WHERE id = $1 AND status = 'waiting' \
AND event_name IS NULL AND strpos(wait_events, ',' || $2 || ',') > 0";

impl PgSagaStore {
    /// A store on `pool`, on the system clock.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            clock: Arc::new(SystemClock),
            batcher: Arc::default(),
        }
    }

    /// Sends a checkpoint to the group commit.
    async fn group_checkpoint(&self, cp: Checkpoint) -> Result<Option<CheckpointAck>, Error> {
        let queue = self.batcher.0.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(batch_loop(self.pool.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        if queue.send((cp, reply)).is_err() {
            return Err(Error::Backend("checkpoint queue stopped".into()));
        }
        answer
            .await
            .map_err(|_| Error::Backend("checkpoint queue stopped".into()))?
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The pool.
    pub fn get_ref(&self) -> &PgPool {
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
        tx: &mut Transaction<'_, Postgres>,
        def: &Definition<S>,
        key: &str,
        state: &S,
    ) -> Result<Started, Error> {
        let new = def.new_saga(key, state, self.clock.now_ms())?;
        Self::start_on(tx, &new).await
    }

    async fn checkpoint_on(
        tx: &mut Transaction<'static, Postgres>,
        cp: &Checkpoint,
    ) -> Result<Option<CheckpointAck>, Error> {
        let row = bind_checkpoint!(sqlx::query(CHECKPOINT), cp)
            .bind(&cp.log.step)
            .bind(cp.log.phase.as_str())
            .bind(i64::from(cp.log.attempt))
            .bind(cp.log.outcome)
            .bind(&cp.log.detail)
            .fetch_optional(&mut **tx)
            .await?;
        Ok(match row {
            Some(r) => Some(CheckpointAck {
                paused: r.try_get("paused")?,
                cancel_requested: r.try_get("cancel_requested")?,
            }),
            None => None,
        })
    }
}

#[async_trait]
impl SagaStore for PgSagaStore {
    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS saga_migrations \
             (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
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
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(req.now)
            .bind(req.lease_until)
            .bind(i64::from(req.limit))
            .bind(&req.known)
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
        Ok(StepTx::Postgres(self.pool.begin().await?))
    }

    async fn checkpoint(
        &self,
        tx: Option<StepTx>,
        cp: Checkpoint,
    ) -> Result<Option<CheckpointAck>, Error> {
        let tx = match tx {
            Some(StepTx::Postgres(tx)) => Some(tx),
            Some(other) => {
                return Err(Error::Corrupt(format!(
                    "a PostgreSQL store got a foreign transaction {other:?}"
                )));
            }
            None => None,
        };
        match (tx, &cp.release) {
            // One statement, one round trip, shared with concurrent checkpoints.
            (None, None) => self.group_checkpoint(cp).await,
            (tx, release) => {
                let mut tx = match tx {
                    Some(tx) => tx,
                    None => self.pool.begin().await?,
                };
                if let Some(r) = release {
                    // Releases and queueings of one resource take turns (the lock comes
                    // before any row lock, so they cannot deadlock), and the second one's
                    // statements see the first one's commit (READ COMMITTED).
                    sqlx::query(RESOURCE_LOCK).bind(r).execute(&mut *tx).await?;
                }
                let ack = Self::checkpoint_on(&mut tx, &cp).await?;
                if ack.is_none() {
                    tx.rollback().await?;
                    return Ok(None);
                }
                if let Some(r) = release {
                    Self::wake_next_on(&mut *tx, r, cp.now).await?;
                }
                tx.commit().await?;
                Ok(ack)
            }
        }
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
        let mut tx = self.pool.begin().await?;
        let done = Self::operate_on(&mut tx, id, op, now).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn counts(&self) -> Result<Vec<(Status, u64)>, Error> {
        self.counts_sql().await
    }
}
