//! The SQLite backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::begin::Begin;
use crate::clock::{self, Clock};
use crate::error::Error;
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::lease::{BeginOptions, Lease, RecoveryPoint};
use crate::record::{self, Record};
use crate::response::StoredResponse;

/// An [`IdempotencyStore`](crate::IdempotencyStore) in SQLite (table `idem_records`).
///
/// Besides the trait, it can claim and complete keys inside the caller's
/// transaction ([`begin_in`](Self::begin_in), [`complete_in`](Self::complete_in)),
/// so the business rows and the idempotency record commit together.
#[derive(Debug, Clone)]
pub struct SqliteIdempotencyStore {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

const SELECT: &str = "SELECT fingerprint, lease_token, lease_until, phase, phase_state, completed, \
     response, expires_at FROM idem_records \
     WHERE tenant = ?1 AND principal = ?2 AND operation = ?3 AND client_key = ?4";

const UPSERT: &str = "INSERT INTO idem_records (tenant, principal, operation, client_key, \
     fingerprint, lease_token, lease_until, phase, phase_state, completed, response, created_at, expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, NULL, ?10, ?11) \
     ON CONFLICT (tenant, principal, operation, client_key) DO UPDATE SET \
     fingerprint = excluded.fingerprint, lease_token = excluded.lease_token, \
     lease_until = excluded.lease_until, phase = excluded.phase, phase_state = excluded.phase_state, \
     completed = 0, response = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at";

/// A claim of a key no record holds (the common case): nothing happens when
/// one does.
const INSERT_FRESH: &str = "INSERT INTO idem_records (tenant, principal, operation, client_key, \
     fingerprint, lease_token, lease_until, phase, phase_state, completed, response, created_at, expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL, 0, NULL, ?8, ?9) \
     ON CONFLICT (tenant, principal, operation, client_key) DO NOTHING";

/// A checkpoint, or with NULL phase and state a renewal (the recovery point is kept).
const EXTEND: &str = "UPDATE idem_records SET phase = COALESCE(?6, phase), \
     phase_state = COALESCE(?7, phase_state), lease_until = ?8, expires_at = MAX(expires_at, ?8) \
     WHERE tenant = ?1 AND principal = ?2 AND operation = ?3 AND client_key = ?4 \
     AND lease_token = ?5 AND completed = 0";

const COMPLETE: &str = "UPDATE idem_records SET completed = 1, response = ?6, phase = NULL, \
     phase_state = NULL, lease_until = 0, expires_at = ?7 \
     WHERE tenant = ?1 AND principal = ?2 AND operation = ?3 AND client_key = ?4 \
     AND lease_token = ?5 AND completed = 0";

const RELEASE_DELETE: &str = "DELETE FROM idem_records \
     WHERE tenant = ?1 AND principal = ?2 AND operation = ?3 AND client_key = ?4 \
     AND lease_token = ?5 AND completed = 0 AND phase IS NULL";

const RELEASE_EXPIRE: &str = "UPDATE idem_records SET lease_until = ?6 \
     WHERE tenant = ?1 AND principal = ?2 AND operation = ?3 AND client_key = ?4 \
     AND lease_token = ?5 AND completed = 0";

const REAP: &str = "DELETE FROM idem_records WHERE rowid IN \
     (SELECT rowid FROM idem_records WHERE expires_at <= ?1 LIMIT CAST(?2 AS INTEGER))";

fn row_to_record(row: &SqliteRow) -> Result<Record, Error> {
    let fp: Vec<u8> = row.try_get(0).map_err(Error::backend)?;
    let phase: Option<String> = row.try_get(3).map_err(Error::backend)?;
    let phase_state: Option<Vec<u8>> = row.try_get(4).map_err(Error::backend)?;
    let completed: bool = row.try_get(5).map_err(Error::backend)?;
    let response: Option<Vec<u8>> = row.try_get(6).map_err(Error::backend)?;
    let response = match (completed, response) {
        (true, Some(b)) => Some(StoredResponse::decode(&b)?),
        (true, None) => return Err(Error::Corrupt("completed record without response".into())),
        (false, _) => None,
    };
    Ok(Record {
        fingerprint: Fingerprint::from_slice(&fp)?,
        token: row.try_get(1).map_err(Error::backend)?,
        lease_until: row.try_get(2).map_err(Error::backend)?,
        recovery: phase.map(|phase| RecoveryPoint {
            phase,
            state: phase_state.unwrap_or_default(),
        }),
        response,
        expires_at: row.try_get(7).map_err(Error::backend)?,
    })
}

macro_rules! bind_key {
    ($q:expr, $k:expr) => {
        $q.bind($k.scope().tenant())
            .bind($k.scope().principal())
            .bind($k.scope().operation())
            .bind($k.key())
    };
}

impl SqliteIdempotencyStore {
    /// A store on `pool`, using the system clock. Run [`migrate`](Self::migrate) once first.
    ///
    /// Open the pool with WAL and a busy timeout (as
    /// `SqliteConnectOptions::busy_timeout` does), since claims from many
    /// tasks write at once.
    pub fn new(pool: SqlitePool) -> Self {
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
    pub fn get_ref(&self) -> &SqlitePool {
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
        crate::migrate::run_sqlite(&self.pool, self.clock.now_ms())
            .await
            .map_err(Error::backend)
    }

    /// [`begin`](crate::IdempotencyStore::begin) inside the caller's
    /// transaction: the claim commits or rolls back with it.
    ///
    /// Start the transaction with `pool.begin_with("BEGIN IMMEDIATE")`, so
    /// that it holds the write lock from its first statement and never fails
    /// to upgrade a read snapshot.
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
        tx: &mut Transaction<'_, Sqlite>,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        opts: &BeginOptions,
    ) -> Result<Begin, Error> {
        self.begin_on(tx, key, fp, opts).await
    }

    /// [`checkpoint`](crate::IdempotencyStore::checkpoint) inside the
    /// caller's transaction, e.g. with the rows of the phase it records.
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
        tx: &mut Transaction<'_, Sqlite>,
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
        tx: &mut Transaction<'_, Sqlite>,
        lease: &Lease,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.complete_on(tx, lease, response, ttl).await
    }

    /// Claims `key` in one statement when no record holds it, as
    /// [`record::begin`] would for an absent record; `None` when one does.
    async fn claim_fresh(
        &self,
        conn: &mut SqliteConnection,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        opts: &BeginOptions,
    ) -> Result<Option<Begin>, Error> {
        let now = self.clock.now_ms();
        let (Some(w), answer) = record::begin(None, key, fp, now, opts) else {
            return Ok(None);
        };
        let inserted = bind_key!(sqlx::query(INSERT_FRESH), key)
            .bind(&w.fingerprint.as_bytes()[..])
            .bind(w.token)
            .bind(w.lease_until)
            .bind(now)
            .bind(w.expires_at)
            .execute(&mut *conn)
            .await
            .map_err(Error::backend)?
            .rows_affected();
        Ok((inserted == 1).then_some(answer))
    }

    async fn begin_on(
        &self,
        conn: &mut SqliteConnection,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        opts: &BeginOptions,
    ) -> Result<Begin, Error> {
        if let Some(answer) = self.claim_fresh(conn, key, fp, opts).await? {
            return Ok(answer);
        }
        self.decide_on(conn, key, fp, opts).await
    }

    /// Reads the record and writes what the state machine decides.
    async fn decide_on(
        &self,
        conn: &mut SqliteConnection,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        opts: &BeginOptions,
    ) -> Result<Begin, Error> {
        let now = self.clock.now_ms();
        let row = bind_key!(sqlx::query(SELECT), key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(Error::backend)?;
        let existing = row.as_ref().map(row_to_record).transpose()?;
        let (write, answer) = record::begin(existing.as_ref(), key, fp, now, opts);
        if let Some(w) = write {
            let (phase, state) = match &w.recovery {
                Some(p) => (Some(p.phase.as_str()), Some(p.state.as_slice())),
                None => (None, None),
            };
            bind_key!(sqlx::query(UPSERT), key)
                .bind(&w.fingerprint.as_bytes()[..])
                .bind(w.token)
                .bind(w.lease_until)
                .bind(phase)
                .bind(state)
                .bind(now)
                .bind(w.expires_at)
                .execute(&mut *conn)
                .await
                .map_err(Error::backend)?;
        }
        Ok(answer)
    }

    async fn checkpoint_on(
        &self,
        conn: &mut SqliteConnection,
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
        conn: &mut SqliteConnection,
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
        conn: &mut SqliteConnection,
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
impl crate::store::IdempotencyStore for SqliteIdempotencyStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        opts: &BeginOptions,
    ) -> Result<Begin, Error> {
        // A fresh key (the common case) is one autocommit statement; any
        // other reads and decides under the write lock.
        {
            let mut conn = self.pool.acquire().await.map_err(Error::backend)?;
            if let Some(answer) = self.claim_fresh(&mut conn, key, fp, opts).await? {
                return Ok(answer);
            }
        }
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::backend)?;
        let answer = self.decide_on(&mut tx, key, fp, opts).await?;
        tx.commit().await.map_err(Error::backend)?;
        Ok(answer)
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
        let deleted = bind_key!(sqlx::query(RELEASE_DELETE), lease.key)
            .bind(lease.token)
            .execute(&self.pool)
            .await
            .map_err(Error::backend)?;
        if deleted.rows_affected() > 0 {
            return Ok(());
        }
        let expired = bind_key!(sqlx::query(RELEASE_EXPIRE), lease.key)
            .bind(lease.token)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(Error::backend)?;
        if expired.rows_affected() == 0 {
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
