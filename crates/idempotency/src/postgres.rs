//! The PostgreSQL backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};

use crate::begin::Begin;
use crate::clock::{self, Clock};
use crate::error::Error;
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::lease::{BeginOptions, Lease, RecoveryPoint};
use crate::record::{self, Record};
use crate::response::StoredResponse;

/// An [`IdempotencyStore`](crate::IdempotencyStore) in PostgreSQL (table `idem_records`).
///
/// `begin` is one statement: it reads the record, inserts a new claim, or
/// takes over an expired lease, and returns a stored response for replay,
/// all in one round trip; replay and in-flight answers write nothing.
/// [`begin_in`](Self::begin_in), [`checkpoint_in`](Self::checkpoint_in) and
/// [`complete_in`](Self::complete_in) do the same inside the caller's
/// transaction (READ COMMITTED, the default).
#[derive(Debug, Clone)]
pub struct PgIdempotencyStore {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

/// $1-$4 key, $5 fingerprint, $6 now, $7 lease_until, $8 expires_at, $9 token floor.
///
/// `cur` is the record as of the statement's snapshot; `ins` claims an
/// absent key; `upd` takes over an expired record or an in-flight record
/// whose lease ran out (re-checked on the newest row version, so of many
/// concurrent takers only one wins). Rows that are not taken are not locked.
const BEGIN: &str = "WITH cur AS (
    SELECT fingerprint, lease_token, lease_until, phase, phase_state, completed, response, expires_at
    FROM idem_records
    WHERE tenant = $1 AND principal = $2 AND operation = $3 AND client_key = $4
), ins AS (
    INSERT INTO idem_records (tenant, principal, operation, client_key, fingerprint, lease_token,
        lease_until, phase, phase_state, completed, response, created_at, expires_at)
    SELECT $1, $2, $3, $4, $5, $9, $7, NULL, NULL, FALSE, NULL, $6, $8
    WHERE NOT EXISTS (SELECT 1 FROM cur)
    ON CONFLICT DO NOTHING
    RETURNING lease_token, phase, phase_state
), upd AS (
    UPDATE idem_records r SET
        fingerprint = $5,
        lease_token = GREATEST(r.lease_token + 1, $9),
        lease_until = $7,
        phase = CASE WHEN r.expires_at <= $6 THEN NULL ELSE r.phase END,
        phase_state = CASE WHEN r.expires_at <= $6 THEN NULL ELSE r.phase_state END,
        completed = FALSE,
        response = NULL,
        created_at = CASE WHEN r.expires_at <= $6 THEN $6 ELSE r.created_at END,
        expires_at = GREATEST(r.expires_at, $8)
    WHERE r.tenant = $1 AND r.principal = $2 AND r.operation = $3 AND r.client_key = $4
      AND EXISTS (SELECT 1 FROM cur)
      AND (r.expires_at <= $6 OR (NOT r.completed AND r.lease_until <= $6 AND r.fingerprint = $5))
    RETURNING lease_token, phase, phase_state
)
SELECT 'i' AS src, lease_token, phase, phase_state, NULL::bytea AS fingerprint,
       NULL::bigint AS lease_until, NULL::boolean AS completed, NULL::bytea AS response,
       NULL::bigint AS expires_at FROM ins
UNION ALL
SELECT 'u', lease_token, phase, phase_state, NULL, NULL, NULL, NULL, NULL FROM upd
UNION ALL
SELECT 'c', lease_token, phase, phase_state, fingerprint, lease_until, completed, response, expires_at
FROM cur";

/// A checkpoint, or with NULL phase and state a renewal (the recovery point is kept).
const EXTEND: &str = "UPDATE idem_records SET phase = COALESCE($6, phase), \
     phase_state = COALESCE($7, phase_state), lease_until = $8, expires_at = GREATEST(expires_at, $8) \
     WHERE tenant = $1 AND principal = $2 AND operation = $3 AND client_key = $4 \
     AND lease_token = $5 AND NOT completed";

const COMPLETE: &str = "UPDATE idem_records SET completed = TRUE, response = $6, phase = NULL, \
     phase_state = NULL, lease_until = 0, expires_at = $7 \
     WHERE tenant = $1 AND principal = $2 AND operation = $3 AND client_key = $4 \
     AND lease_token = $5 AND NOT completed";

const RELEASE: &str = "WITH del AS (
    DELETE FROM idem_records
    WHERE tenant = $1 AND principal = $2 AND operation = $3 AND client_key = $4
      AND lease_token = $5 AND NOT completed AND phase IS NULL
    RETURNING 1
), upd AS (
    UPDATE idem_records SET lease_until = $6
    WHERE tenant = $1 AND principal = $2 AND operation = $3 AND client_key = $4
      AND lease_token = $5 AND NOT completed AND phase IS NOT NULL
    RETURNING 1
)
SELECT (SELECT count(*) FROM del) + (SELECT count(*) FROM upd)";

const REAP: &str = "DELETE FROM idem_records
WHERE (tenant, principal, operation, client_key) IN (
    SELECT tenant, principal, operation, client_key FROM idem_records
    WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED
) AND expires_at <= $1";

macro_rules! bind_key {
    ($q:expr, $k:expr) => {
        $q.bind($k.scope().tenant())
            .bind($k.scope().principal())
            .bind($k.scope().operation())
            .bind($k.key())
    };
}

fn get<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(
    row: &'r PgRow,
    i: usize,
) -> Result<T, Error> {
    row.try_get(i).map_err(Error::backend)
}

fn recovery(row: &PgRow) -> Result<Option<RecoveryPoint>, Error> {
    let phase: Option<String> = get(row, 2)?;
    let state: Option<Vec<u8>> = get(row, 3)?;
    Ok(phase.map(|phase| RecoveryPoint {
        phase,
        state: state.unwrap_or_default(),
    }))
}

fn current(row: &PgRow) -> Result<Record, Error> {
    let fp: Vec<u8> = get(row, 4)?;
    let completed: bool = get(row, 6)?;
    let response: Option<Vec<u8>> = get(row, 7)?;
    let response = match (completed, response) {
        (true, Some(b)) => Some(StoredResponse::decode(&b)?),
        (true, None) => return Err(Error::Corrupt("completed record without response".into())),
        (false, _) => None,
    };
    Ok(Record {
        fingerprint: Fingerprint::from_slice(&fp)?,
        token: get(row, 1)?,
        lease_until: get(row, 5)?,
        recovery: recovery(row)?,
        response,
        expires_at: get(row, 8)?,
    })
}

/// How often `begin` re-reads after losing a race for the same key before
/// answering "in flight".
const RACE_RETRIES: usize = 4;

impl PgIdempotencyStore {
    /// A store on `pool`, using the system clock. Run [`migrate`](Self::migrate) once first.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            clock: clock::system(),
        }
    }

    /// Uses `clock` for leases and expiry.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The pool.
    pub fn get_ref(&self) -> &PgPool {
        &self.pool
    }

    /// Creates or upgrades the `idem_` tables; returns how many migrations ran.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    ///
    /// # Cancel safety
    ///
    /// Safe: each run is one transaction.
    pub async fn migrate(&self) -> Result<u32, Error> {
        crate::migrate::run_postgres(&self.pool, self.clock.now_ms())
            .await
            .map_err(Error::backend)
    }

    /// [`begin`](crate::IdempotencyStore::begin) inside the caller's
    /// transaction: the claim commits or rolls back with it. Until it
    /// commits, concurrent claims of the same key wait on the row.
    ///
    /// # Errors
    ///
    /// As [`begin`](crate::IdempotencyStore::begin).
    ///
    /// # Cancel safety
    ///
    /// If cancelled, the transaction may hold the claim; dropping it rolls back.
    pub async fn begin_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        opts: &BeginOptions,
    ) -> Result<Begin, Error> {
        self.begin_on(tx, key, fp, opts).await
    }

    /// [`checkpoint`](crate::IdempotencyStore::checkpoint) inside the
    /// caller's transaction, e.g. with the rows of the phase it records
    /// (Stripe's atomic phases).
    ///
    /// # Errors
    ///
    /// As [`checkpoint`](crate::IdempotencyStore::checkpoint).
    ///
    /// # Cancel safety
    ///
    /// Written only if the transaction commits.
    pub async fn checkpoint_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        lease: &mut Lease,
        point: &RecoveryPoint,
    ) -> Result<(), Error> {
        self.checkpoint_on(tx, lease, point).await
    }

    /// [`complete`](crate::IdempotencyStore::complete) inside the caller's
    /// transaction: the stored response commits with the business rows.
    ///
    /// # Errors
    ///
    /// As [`complete`](crate::IdempotencyStore::complete); on
    /// [`Error::LeaseLost`] roll the transaction back.
    ///
    /// # Cancel safety
    ///
    /// Written only if the transaction commits.
    pub async fn complete_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        lease: &Lease,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.complete_on(tx, lease, response, ttl).await
    }

    async fn begin_on(
        &self,
        conn: &mut PgConnection,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        opts: &BeginOptions,
    ) -> Result<Begin, Error> {
        let mut last_seen: Option<i64> = None;
        for _ in 0..RACE_RETRIES {
            let now = self.clock.now_ms();
            let lease_until = now.saturating_add(clock::ms(opts.lease));
            let expires_at = now.saturating_add(clock::ms(opts.ttl)).max(lease_until);
            let rows = bind_key!(sqlx::query(BEGIN), key)
                .bind(&fp.as_bytes()[..])
                .bind(now)
                .bind(lease_until)
                .bind(expires_at)
                .bind(now.max(1))
                .fetch_all(&mut *conn)
                .await
                .map_err(Error::backend)?;
            let mut cur = None;
            let mut claimed = None;
            for row in &rows {
                let src: String = get(row, 0)?;
                match src.as_str() {
                    "c" => cur = Some(current(row)?),
                    _ => claimed = Some((get::<i64>(row, 1)?, recovery(row)?)),
                }
            }
            if let Some((token, recovery)) = claimed {
                let taken_over = cur.as_ref().is_some_and(|c| c.expires_at > now);
                return Ok(Begin::Execute(Lease {
                    key: std::sync::Arc::new(key.clone()),
                    token,
                    expires_at_ms: lease_until,
                    duration: opts.lease,
                    recovery: if taken_over { recovery } else { None },
                    taken_over,
                }));
            }
            let Some(cur) = cur else {
                // A concurrent claim inserted the row after our snapshot: read again.
                continue;
            };
            match record::begin(Some(&cur), key, fp, now, opts).1 {
                // A concurrent taker won the row we could have taken: read again.
                Begin::Execute(_) => last_seen = Some(cur.lease_until),
                other => return Ok(other),
            }
        }
        let now = self.clock.now_ms();
        Ok(Begin::InFlight {
            retry_after: record::retry_after(last_seen.unwrap_or(now).max(now + 1), now),
        })
    }

    async fn checkpoint_on(
        &self,
        conn: &mut PgConnection,
        lease: &mut Lease,
        point: &RecoveryPoint,
    ) -> Result<(), Error> {
        self.extend_on(conn, lease, Some(point)).await?;
        lease.recovery = Some(point.clone());
        Ok(())
    }

    /// Extends the lease and, with `point`, records it: one fenced `UPDATE`.
    async fn extend_on(
        &self,
        conn: &mut PgConnection,
        lease: &mut Lease,
        point: Option<&RecoveryPoint>,
    ) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let until = now.saturating_add(clock::ms(lease.duration));
        let done = bind_key!(sqlx::query(EXTEND), lease.key)
            .bind(lease.token)
            .bind(point.map(|p| p.phase.as_str()))
            .bind(point.map(|p| p.state.as_slice()))
            .bind(until)
            .execute(conn)
            .await
            .map_err(Error::backend)?;
        if done.rows_affected() == 0 {
            return Err(Error::LeaseLost);
        }
        lease.expires_at_ms = until;
        Ok(())
    }

    async fn complete_on(
        &self,
        conn: &mut PgConnection,
        lease: &Lease,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let done = bind_key!(sqlx::query(COMPLETE), lease.key)
            .bind(lease.token)
            .bind(response.encode())
            .bind(now.saturating_add(clock::ms(ttl)))
            .execute(conn)
            .await
            .map_err(Error::backend)?;
        if done.rows_affected() == 0 {
            return Err(Error::LeaseLost);
        }
        Ok(())
    }
}

#[async_trait]
impl crate::store::IdempotencyStore for PgIdempotencyStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        opts: &BeginOptions,
    ) -> Result<Begin, Error> {
        let mut conn = self.pool.acquire().await.map_err(Error::backend)?;
        self.begin_on(&mut conn, key, fp, opts).await
    }

    async fn checkpoint(&self, lease: &mut Lease, point: &RecoveryPoint) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await.map_err(Error::backend)?;
        self.checkpoint_on(&mut conn, lease, point).await
    }

    async fn renew(&self, lease: &mut Lease) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await.map_err(Error::backend)?;
        self.extend_on(&mut conn, lease, None).await
    }

    async fn complete(
        &self,
        lease: &Lease,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await.map_err(Error::backend)?;
        self.complete_on(&mut conn, lease, response, ttl).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let n: i64 = bind_key!(sqlx::query_scalar(RELEASE), lease.key)
            .bind(lease.token)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(Error::backend)?;
        if n == 0 {
            return Err(Error::LeaseLost);
        }
        Ok(())
    }

    async fn reap_expired(&self, batch: u32) -> Result<u64, Error> {
        let now = self.clock.now_ms();
        let done = sqlx::query(REAP)
            .bind(now)
            .bind(i64::from(batch))
            .execute(&self.pool)
            .await
            .map_err(Error::backend)?;
        Ok(done.rows_affected())
    }
}
