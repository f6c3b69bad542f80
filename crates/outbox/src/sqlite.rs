//! The SQLite outbox store.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};

use crate::clock::{Clock, SystemClock, duration_ms};
use crate::rows::{MESSAGE_COLUMNS, decode_dead_letter, decode_message};
use crate::store::{
    Backlog, ClaimMode, ClaimRequest, ClaimedBatch, ClaimedMessage, DeadLetter, Disposition,
    Failure, LeaseToken, OutboxStore,
};
use crate::{Error, MessageId, OutboxMessage};

/// Rows per `INSERT` statement (10 bound values each, under SQLite's limit).
const INSERT_CHUNK: usize = 500;

/// The outbox in SQLite (tables `outbox_messages`, `outbox_dead_letters`):
/// the embedded default and the on-site agent's local outbox.
///
/// Relay writes run under `BEGIN IMMEDIATE`, so relays in several processes
/// sharing one database file serialize instead of failing with `SQLITE_BUSY`
/// upgrades. Open the pool in WAL mode with a busy timeout.
#[derive(Debug, Clone)]
pub struct SqliteOutboxStore {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

impl SqliteOutboxStore {
    /// A store on `pool`, using the system clock.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for enqueue times.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The pool.
    pub fn get_ref(&self) -> &SqlitePool {
        &self.pool
    }

    /// Creates or upgrades the outbox and inbox tables. Safe to run from many processes at once.
    ///
    /// # Errors
    ///
    /// [`Error::Migration`] or [`Error::Backend`].
    ///
    /// # Cancel safety
    ///
    /// Each run is one transaction.
    pub async fn migrate(&self) -> Result<(), Error> {
        crate::migrate::run_sqlite(&self.pool).await
    }

    /// Adds `messages` to the outbox inside the caller's transaction, with
    /// multi-row `INSERT`s of up to 500 rows.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] for an invalid message, [`Error::Backend`]
    /// when the insert fails (e.g. a message id already stored).
    ///
    /// # Cancel safety
    ///
    /// Nothing is committed here; the caller's transaction decides.
    pub async fn enqueue(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        messages: &[OutboxMessage],
    ) -> Result<(), Error> {
        let now = self.clock.now_ms();
        for chunk in messages.chunks(INSERT_CHUNK) {
            let mut rows = Vec::with_capacity(chunk.len());
            for m in chunk {
                m.validate()?;
                rows.push((m, m.headers.to_json()?, m.resolve_available_at(now)));
            }
            let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO outbox_messages (id, exchange, routing_key, partition_key, headers, \
                 payload, content_type, created_at, available_at, attempts) ",
            );
            qb.push_values(rows, |mut b, (m, headers, avail)| {
                b.push_bind(m.id.as_uuid())
                    .push_bind(m.destination.exchange.clone())
                    .push_bind(m.destination.routing_key.clone())
                    .push_bind(m.partition_key.clone())
                    .push_bind(headers)
                    .push_bind(m.payload.clone())
                    .push_bind(m.content_type.clone())
                    .push_bind(now)
                    .push_bind(avail)
                    .push_bind(0i64);
            });
            qb.build().execute(&mut **tx).await.map_err(Error::db)?;
        }
        Ok(())
    }

    async fn immediate(&self) -> Result<Transaction<'static, Sqlite>, Error> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::db)
    }
}

fn json_list(seqs: &[i64]) -> String {
    let parts: Vec<String> = seqs.iter().map(i64::to_string).collect();
    format!("[{}]", parts.join(","))
}

#[async_trait]
impl OutboxStore for SqliteOutboxStore {
    async fn claim(&self, req: ClaimRequest) -> Result<ClaimedBatch, Error> {
        let lease = LeaseToken::generate();
        let until = req.now.saturating_add(duration_ms(req.lease));
        let head_only = match req.mode {
            ClaimMode::Ordered => {
                "AND (o.partition_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM outbox_messages e
                    WHERE e.partition_key = o.partition_key AND e.delivered_at IS NULL AND e.seq < o.seq))"
            }
            _ => "",
        };
        // `LIMIT CAST(? AS INTEGER)`: SQLite plans a bare LIMIT parameter
        // with its bound value, so each claim would prepare the statement
        // again. The same holds for every LIMIT in this file.
        let sql = format!(
            "UPDATE outbox_messages SET lease_token = ?, available_at = ?
             WHERE seq IN (SELECT o.seq FROM outbox_messages o
                           WHERE o.delivered_at IS NULL AND o.available_at <= ? {head_only}
                           ORDER BY o.available_at, o.seq LIMIT CAST(? AS INTEGER))
             RETURNING seq, {MESSAGE_COLUMNS}"
        );
        let mut tx = self.immediate().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease.0)
            .bind(until)
            .bind(req.now)
            .bind(i64::from(req.batch_size))
            .fetch_all(&mut *tx)
            .await
            .map_err(Error::db)?;
        tx.commit().await.map_err(Error::db)?;
        let mut messages = Vec::with_capacity(rows.len());
        for r in &rows {
            use sqlx::Row as _;
            let seq: i64 = r.try_get("seq").map_err(Error::db)?;
            let (message, attempts, created_at) = decode_message!(r, Some(req.now));
            messages.push(ClaimedMessage {
                seq,
                attempts,
                created_at,
                message,
            });
        }
        messages.sort_by_key(|m| m.seq);
        Ok(ClaimedBatch { lease, messages })
    }

    async fn ack(
        &self,
        lease: LeaseToken,
        seqs: &[i64],
        now: i64,
        retain: bool,
    ) -> Result<u64, Error> {
        let mut tx = self.immediate().await?;
        let res = if retain {
            sqlx::query(
                "UPDATE outbox_messages SET delivered_at = ?, lease_token = NULL
                 WHERE seq IN (SELECT value FROM json_each(?)) AND lease_token = ?",
            )
            .bind(now)
            .bind(json_list(seqs))
            .bind(lease.0)
            .execute(&mut *tx)
            .await
        } else {
            sqlx::query(
                "DELETE FROM outbox_messages
                 WHERE seq IN (SELECT value FROM json_each(?)) AND lease_token = ?",
            )
            .bind(json_list(seqs))
            .bind(lease.0)
            .execute(&mut *tx)
            .await
        }
        .map_err(Error::db)?;
        tx.commit().await.map_err(Error::db)?;
        Ok(res.rows_affected())
    }

    async fn fail(&self, lease: LeaseToken, failures: &[Failure], now: i64) -> Result<u64, Error> {
        let mut tx = self.immediate().await?;
        let mut n = 0;
        for f in failures {
            let res = match f.disposition {
                Disposition::RetryAt { at, count_attempt } => sqlx::query(
                    "UPDATE outbox_messages
                     SET available_at = ?, attempts = attempts + ?, last_error = ?, lease_token = NULL
                     WHERE seq = ? AND lease_token = ?",
                )
                .bind(at)
                .bind(i64::from(count_attempt))
                .bind(&f.error)
                .bind(f.seq)
                .bind(lease.0)
                .execute(&mut *tx)
                .await
                .map_err(Error::db)?,
                Disposition::Dead => {
                    let moved = sqlx::query(
                        "INSERT INTO outbox_dead_letters
                           (id, exchange, routing_key, partition_key, headers, payload, content_type,
                            created_at, attempts, last_error, dead_at)
                         SELECT id, exchange, routing_key, partition_key, headers, payload, content_type,
                                created_at, attempts + 1, ?, ?
                         FROM outbox_messages WHERE seq = ? AND lease_token = ?",
                    )
                    .bind(&f.error)
                    .bind(now)
                    .bind(f.seq)
                    .bind(lease.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::db)?;
                    sqlx::query("DELETE FROM outbox_messages WHERE seq = ? AND lease_token = ?")
                        .bind(f.seq)
                        .bind(lease.0)
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::db)?;
                    moved
                }
            };
            n += res.rows_affected();
        }
        tx.commit().await.map_err(Error::db)?;
        Ok(n)
    }

    async fn cleanup(&self, before: i64, limit: u32) -> Result<u64, Error> {
        Ok(sqlx::query(
            "DELETE FROM outbox_messages WHERE seq IN (
               SELECT seq FROM outbox_messages WHERE delivered_at < ? LIMIT CAST(? AS INTEGER))",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(Error::db)?
        .rows_affected())
    }

    async fn backlog(&self) -> Result<Backlog, Error> {
        use sqlx::Row as _;
        let r = sqlx::query(
            "SELECT (SELECT count(*) FROM outbox_messages WHERE delivered_at IS NULL) AS pending,
                    (SELECT min(created_at) FROM outbox_messages WHERE delivered_at IS NULL) AS oldest,
                    (SELECT count(*) FROM outbox_dead_letters) AS dead",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(Error::db)?;
        let pending: i64 = r.try_get("pending").map_err(Error::db)?;
        let dead: i64 = r.try_get("dead").map_err(Error::db)?;
        Ok(Backlog {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest_created_at: r.try_get("oldest").map_err(Error::db)?,
            dead: u64::try_from(dead).unwrap_or(0),
        })
    }

    async fn dead_letters(
        &self,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, Error> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, last_error, dead_at FROM outbox_dead_letters
             WHERE dead_seq > CASE WHEN ?1 IS NULL THEN 0
                   ELSE COALESCE((SELECT dead_seq FROM outbox_dead_letters WHERE id = ?1), 9223372036854775807) END
             ORDER BY dead_seq LIMIT CAST(?2 AS INTEGER)"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.map(|a| a.as_uuid()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(Error::db)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(decode_dead_letter!(r));
        }
        Ok(out)
    }

    async fn replay(&self, ids: &[MessageId], now: i64) -> Result<u64, Error> {
        let mut tx = self.immediate().await?;
        let mut n = 0;
        for id in ids {
            n += sqlx::query(
                "INSERT INTO outbox_messages
                   (id, exchange, routing_key, partition_key, headers, payload, content_type,
                    created_at, available_at, attempts)
                 SELECT id, exchange, routing_key, partition_key, headers, payload, content_type,
                        created_at, ?, 0
                 FROM outbox_dead_letters WHERE id = ?",
            )
            .bind(now)
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(Error::db)?
            .rows_affected();
            sqlx::query("DELETE FROM outbox_dead_letters WHERE id = ?")
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(Error::db)?;
        }
        tx.commit().await.map_err(Error::db)?;
        Ok(n)
    }

    async fn discard(&self, ids: &[MessageId]) -> Result<u64, Error> {
        let mut tx = self.immediate().await?;
        let mut n = 0;
        for id in ids {
            n += sqlx::query("DELETE FROM outbox_dead_letters WHERE id = ?")
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(Error::db)?
                .rows_affected();
        }
        tx.commit().await.map_err(Error::db)?;
        Ok(n)
    }
}
