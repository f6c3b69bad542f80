//! The PostgreSQL outbox store.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::clock::{Clock, SystemClock, duration_ms};
use crate::rows::{MESSAGE_COLUMNS, decode_dead_letter, decode_message};
use crate::store::{
    Backlog, ClaimMode, ClaimRequest, ClaimedBatch, ClaimedMessage, DeadLetter, Disposition,
    Failure, LeaseToken, OutboxStore,
};
use crate::{Error, MessageId, OutboxMessage};

/// The outbox in PostgreSQL (tables `outbox_messages`, `outbox_dead_letters`).
///
/// Relays claim with `FOR UPDATE SKIP LOCKED`, so any number of them can
/// share the tables. Relay bookkeeping (claim, ack, failures, cleanup) runs
/// as single statements on a small second pool, opened lazily with the same
/// connect options plus `synchronous_commit = off`: no fsync wait and one
/// round trip each. A bookkeeping write lost in a database crash only means a
/// message is published again, which the inbox absorbs; enqueue always rides
/// the caller's fully durable commit, and dead-letter replay and discard use
/// the caller's pool.
#[derive(Debug, Clone)]
pub struct PgOutboxStore {
    pool: PgPool,
    relay_pool: PgPool,
    clock: Arc<dyn Clock>,
}

fn relay_pool(pool: &PgPool, max: u32) -> PgPool {
    let opts = (*pool.connect_options())
        .clone()
        .options([("synchronous_commit", "off")]);
    PgPoolOptions::new()
        .max_connections(max.max(1))
        .min_connections(0)
        .idle_timeout(std::time::Duration::from_secs(30))
        .connect_lazy_with(opts)
}

impl PgOutboxStore {
    /// A store on `pool`, using the system clock. Relay bookkeeping uses up to
    /// 4 extra connections; see [`PgOutboxStore::relay_connections`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime: the bookkeeping pool spawns its idle reaper.
    pub fn new(pool: PgPool) -> Self {
        Self {
            relay_pool: relay_pool(&pool, 4),
            pool,
            clock: Arc::new(SystemClock),
        }
    }

    /// Sets how many connections relay bookkeeping may open (default 4; at
    /// least the relay's workers plus one).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as [`PgOutboxStore::new`].
    pub fn relay_connections(mut self, max: u32) -> Self {
        self.relay_pool = relay_pool(&self.pool, max);
        self
    }

    /// Uses `clock` for enqueue times.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The pool.
    pub fn get_ref(&self) -> &PgPool {
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
        crate::migrate::run_postgres(&self.pool).await
    }

    /// Adds `messages` to the outbox inside the caller's transaction, in one
    /// `INSERT` (a single-row one for a single message). They become visible
    /// to relays when `tx` commits; call
    /// [`OutboxNotifier::notify`](crate::OutboxNotifier::notify) then.
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
        tx: &mut Transaction<'_, Postgres>,
        messages: &[OutboxMessage],
    ) -> Result<(), Error> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        if let [m] = messages {
            // The common case: one message per business transaction. A plain
            // `VALUES` row binds scalars, skipping the arrays and the
            // `UNNEST` function scan of the batch statement.
            m.validate()?;
            sqlx::query(
                "INSERT INTO outbox_messages
                   (id, exchange, routing_key, partition_key, headers, payload, content_type, available_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(m.id.as_uuid())
            .bind(m.destination.exchange.as_str())
            .bind(m.destination.routing_key.as_str())
            .bind(m.partition_key.as_deref())
            .bind(m.headers.to_json()?)
            .bind(m.payload.as_slice())
            .bind(m.content_type.as_str())
            .bind(m.resolve_available_at(now))
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(Error::db)?;
            return Ok(());
        }
        let n = messages.len();
        let mut ids = Vec::with_capacity(n);
        let mut exchanges = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut pkeys = Vec::with_capacity(n);
        let mut headers = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut cts = Vec::with_capacity(n);
        let mut avail = Vec::with_capacity(n);
        for m in messages {
            m.validate()?;
            ids.push(m.id.as_uuid());
            exchanges.push(m.destination.exchange.as_str());
            keys.push(m.destination.routing_key.as_str());
            pkeys.push(m.partition_key.as_deref());
            headers.push(m.headers.to_json()?);
            payloads.push(m.payload.as_slice());
            cts.push(m.content_type.as_str());
            avail.push(m.resolve_available_at(now));
        }
        sqlx::query(
            "INSERT INTO outbox_messages
               (id, exchange, routing_key, partition_key, headers, payload, content_type, available_at, created_at)
             SELECT *, $9::bigint FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                   $6::bytea[], $7::text[], $8::bigint[])",
        )
        .bind(ids)
        .bind(exchanges)
        .bind(keys)
        .bind(pkeys)
        .bind(headers)
        .bind(payloads)
        .bind(cts)
        .bind(avail)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(Error::db)?;
        Ok(())
    }

    async fn relay_tx(&self) -> Result<Transaction<'static, Postgres>, Error> {
        self.relay_pool.begin().await.map_err(Error::db)
    }

    /// Moves messages read from the WAL stream into the table (to be retried
    /// or delivered later) and into the dead-letter table, in one durable
    /// transaction on the main pool. Ids already present are skipped, so a
    /// relay that dies before advancing its slot can divert the same
    /// messages again.
    pub(crate) async fn divert(
        &self,
        rows: &[crate::logical::Diverted],
        dead: &[crate::logical::Diverted],
        now: i64,
    ) -> Result<(), Error> {
        fn columns(rows: &[crate::logical::Diverted]) -> Result<Columns<'_>, Error> {
            let mut c = Columns::default();
            for d in rows {
                let m = &d.message;
                c.ids.push(m.id.as_uuid());
                c.exchanges.push(m.destination.exchange.as_str());
                c.keys.push(m.destination.routing_key.as_str());
                c.pkeys.push(m.partition_key.as_deref());
                c.headers.push(m.headers.to_json()?);
                c.payloads.push(m.payload.as_slice());
                c.cts.push(m.content_type.as_str());
                c.created.push(d.created_at);
                c.avail.push(d.available_at);
                c.attempts
                    .push(i32::try_from(d.attempts).unwrap_or(i32::MAX));
                c.errors.push(d.last_error.as_deref());
            }
            Ok(c)
        }
        let mut tx = self.pool.begin().await.map_err(Error::db)?;
        if !rows.is_empty() {
            let c = columns(rows)?;
            sqlx::query(
                "INSERT INTO outbox_messages
                   (id, exchange, routing_key, partition_key, headers, payload, content_type,
                    created_at, available_at, attempts, last_error)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                      $6::bytea[], $7::text[], $8::bigint[], $9::bigint[],
                                      $10::int[], $11::text[])
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(c.ids)
            .bind(c.exchanges)
            .bind(c.keys)
            .bind(c.pkeys)
            .bind(c.headers)
            .bind(c.payloads)
            .bind(c.cts)
            .bind(c.created)
            .bind(c.avail)
            .bind(c.attempts)
            .bind(c.errors)
            .execute(&mut *tx)
            .await
            .map_err(Error::db)?;
        }
        if !dead.is_empty() {
            let c = columns(dead)?;
            sqlx::query(
                "INSERT INTO outbox_dead_letters
                   (id, exchange, routing_key, partition_key, headers, payload, content_type,
                    created_at, attempts, last_error, dead_at)
                 SELECT id, ex, rk, pk, h, p, ct, cr, att, COALESCE(err, ''), $10
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::bytea[], $7::text[], $8::bigint[], $9::int[], $11::text[])
                      AS u(id, ex, rk, pk, h, p, ct, cr, att, err)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(c.ids)
            .bind(c.exchanges)
            .bind(c.keys)
            .bind(c.pkeys)
            .bind(c.headers)
            .bind(c.payloads)
            .bind(c.cts)
            .bind(c.created)
            .bind(c.attempts)
            .bind(now)
            .bind(c.errors)
            .execute(&mut *tx)
            .await
            .map_err(Error::db)?;
        }
        tx.commit().await.map_err(Error::db)
    }

    /// Which of `keys` have undelivered rows in the table.
    pub(crate) async fn pending_keys(
        &self,
        keys: Vec<String>,
    ) -> Result<std::collections::HashSet<String>, Error> {
        if keys.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT partition_key FROM outbox_messages
             WHERE delivered_at IS NULL AND partition_key = ANY($1)",
        )
        .bind(keys)
        .fetch_all(&self.relay_pool)
        .await
        .map_err(Error::db)?;
        Ok(found.into_iter().collect())
    }
}

#[derive(Default)]
struct Columns<'a> {
    ids: Vec<Uuid>,
    exchanges: Vec<&'a str>,
    keys: Vec<&'a str>,
    pkeys: Vec<Option<&'a str>>,
    headers: Vec<String>,
    payloads: Vec<&'a [u8]>,
    cts: Vec<&'a str>,
    created: Vec<i64>,
    avail: Vec<i64>,
    attempts: Vec<i32>,
    errors: Vec<Option<&'a str>>,
}

fn uuids(ids: &[MessageId]) -> Vec<Uuid> {
    ids.iter().map(MessageId::as_uuid).collect()
}

#[async_trait]
impl OutboxStore for PgOutboxStore {
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
        let sql = format!(
            "UPDATE outbox_messages m SET lease_token = $2, available_at = $3
             FROM (SELECT o.seq FROM outbox_messages o
                   WHERE o.delivered_at IS NULL AND o.available_at <= $1 {head_only}
                   ORDER BY o.available_at, o.seq LIMIT $4
                   FOR UPDATE OF o SKIP LOCKED) p
             WHERE m.seq = p.seq
             RETURNING m.seq, m.available_at AS lease_until, {cols}",
            cols = MESSAGE_COLUMNS
                .split(", ")
                .map(|c| format!("m.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(req.now)
            .bind(lease.0)
            .bind(until)
            .bind(i64::from(req.batch_size))
            .fetch_all(&self.relay_pool)
            .await
            .map_err(Error::db)?;
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
        let res = if retain {
            sqlx::query(
                "UPDATE outbox_messages SET delivered_at = $3, lease_token = NULL
                 WHERE seq = ANY($1) AND lease_token = $2",
            )
            .bind(seqs)
            .bind(lease.0)
            .bind(now)
            .execute(&self.relay_pool)
            .await
        } else {
            sqlx::query("DELETE FROM outbox_messages WHERE seq = ANY($1) AND lease_token = $2")
                .bind(seqs)
                .bind(lease.0)
                .execute(&self.relay_pool)
                .await
        }
        .map_err(Error::db)?;
        Ok(res.rows_affected())
    }

    async fn fail(&self, lease: LeaseToken, failures: &[Failure], now: i64) -> Result<u64, Error> {
        let (mut rs, mut ra, mut rinc, mut rerr) = (vec![], vec![], vec![], vec![]);
        let (mut ds, mut derr) = (vec![], vec![]);
        for f in failures {
            match f.disposition {
                Disposition::RetryAt { at, count_attempt } => {
                    rs.push(f.seq);
                    ra.push(at);
                    rinc.push(i32::from(count_attempt));
                    rerr.push(f.error.as_str());
                }
                Disposition::Dead => {
                    ds.push(f.seq);
                    derr.push(f.error.as_str());
                }
            }
        }
        let mut tx = self.relay_tx().await?;
        let mut n = 0;
        if !rs.is_empty() {
            n += sqlx::query(
                "UPDATE outbox_messages m
                 SET available_at = f.at, attempts = m.attempts + f.inc, last_error = f.err, lease_token = NULL
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::int[], $4::text[]) AS f(seq, at, inc, err)
                 WHERE m.seq = f.seq AND m.lease_token = $5",
            )
            .bind(rs)
            .bind(ra)
            .bind(rinc)
            .bind(rerr)
            .bind(lease.0)
            .execute(&mut *tx)
            .await
            .map_err(Error::db)?
            .rows_affected();
        }
        if !ds.is_empty() {
            n += sqlx::query(
                "WITH moved AS (
                   DELETE FROM outbox_messages m
                   USING UNNEST($1::bigint[], $2::text[]) AS f(seq, err)
                   WHERE m.seq = f.seq AND m.lease_token = $3
                   RETURNING m.*, f.err)
                 INSERT INTO outbox_dead_letters
                   (id, exchange, routing_key, partition_key, headers, payload, content_type,
                    created_at, attempts, last_error, dead_at)
                 SELECT id, exchange, routing_key, partition_key, headers, payload, content_type,
                        created_at, attempts + 1, err, $4
                 FROM moved ORDER BY seq",
            )
            .bind(ds)
            .bind(derr)
            .bind(lease.0)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(Error::db)?
            .rows_affected();
        }
        tx.commit().await.map_err(Error::db)?;
        Ok(n)
    }

    async fn cleanup(&self, before: i64, limit: u32) -> Result<u64, Error> {
        Ok(sqlx::query(
            "DELETE FROM outbox_messages WHERE seq IN (
               SELECT seq FROM outbox_messages WHERE delivered_at < $1 LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.relay_pool)
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
             WHERE dead_seq > CASE WHEN $1::uuid IS NULL THEN 0
                   ELSE COALESCE((SELECT dead_seq FROM outbox_dead_letters WHERE id = $1), 9223372036854775807) END
             ORDER BY dead_seq LIMIT $2"
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
        Ok(sqlx::query(
            "WITH moved AS (DELETE FROM outbox_dead_letters WHERE id = ANY($1) RETURNING *)
             INSERT INTO outbox_messages
               (id, exchange, routing_key, partition_key, headers, payload, content_type,
                created_at, available_at, attempts)
             SELECT id, exchange, routing_key, partition_key, headers, payload, content_type,
                    created_at, $2, 0
             FROM moved ORDER BY dead_seq",
        )
        .bind(uuids(ids))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(Error::db)?
        .rows_affected())
    }

    async fn discard(&self, ids: &[MessageId]) -> Result<u64, Error> {
        Ok(
            sqlx::query("DELETE FROM outbox_dead_letters WHERE id = ANY($1)")
                .bind(uuids(ids))
                .execute(&self.pool)
                .await
                .map_err(Error::db)?
                .rows_affected(),
        )
    }
}
