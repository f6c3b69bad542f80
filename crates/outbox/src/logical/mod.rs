//! The write-ahead-log outbox: messages written with `pg_logical_emit_message`
//! inside the business transaction and read back through a logical
//! replication slot.

mod envelope;
mod pgoutput;
mod relay;

use std::sync::Arc;

use sqlx::postgres::PgConnection;
use sqlx::{PgPool, Postgres, Transaction};

use crate::clock::{Clock, SystemClock};
use crate::error::BuildError;
use crate::{Error, OutboxMessage};

pub use relay::{LogicalRelay, LogicalRelayBuilder};

/// A message leaving the stream for the outbox table or the dead letters.
#[derive(Debug, Clone)]
pub(crate) struct Diverted {
    pub(crate) message: OutboxMessage,
    pub(crate) created_at: i64,
    pub(crate) available_at: i64,
    pub(crate) attempts: u32,
    pub(crate) last_error: Option<String>,
}

impl From<envelope::Decoded> for Diverted {
    fn from(d: envelope::Decoded) -> Self {
        Self {
            available_at: d.available_at(),
            created_at: d.created_at,
            message: d.message,
            attempts: 0,
            last_error: None,
        }
    }
}

impl Diverted {
    /// Stream content that does not decode, kept as a dead letter with a
    /// fresh id so that nothing written is silently dropped.
    pub(crate) fn corrupt(content: &[u8], now: i64, error: String) -> Self {
        Self {
            message: OutboxMessage::new(crate::Destination::new("", ""), content.to_vec()),
            created_at: now,
            available_at: now,
            attempts: 0,
            last_error: Some(error),
        }
    }
}

/// Default name of the replication slot, the publication and the message prefix.
const DEFAULT_NAME: &str = "counterfoil_outbox";

/// The outbox written to PostgreSQL's write-ahead log instead of a table.
///
/// [`PgOutboxStore::enqueue`](crate::PgOutboxStore::enqueue) inserts a row:
/// one more statement, heap tuple and three index entries per message in the
/// business transaction. Here a message is one WAL record written by
/// `pg_logical_emit_message(true, …)`; it is decoded only if the transaction
/// commits, in commit order, and [`LogicalRelay`] reads it through a logical
/// replication slot, publishes it and then advances the slot. With
/// [`PgLogicalOutbox::begin`] the messages even ride in the same round trip
/// as `BEGIN`, so the business transaction pays no extra round trip at all.
///
/// Messages that cannot be published at once (delayed ones, failed
/// publishes, messages behind a pending one of the same partition key in
/// ordered mode) are moved into the ordinary outbox table, where the
/// table relay retries, dead-letters and orders them as usual; the stream is
/// never blocked by one message.
///
/// Needs `wal_level = logical` and a replication slot, which
/// [`PgLogicalOutbox::setup`] creates. **Create the slot before any producer
/// writes**: messages written while no slot exists are never decoded. A slot
/// that no relay reads keeps its WAL on disk; bound it with
/// `max_slot_wal_keep_size` and watch `outbox_stream_lag_bytes`.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), counterfoil_outbox::Error> {
/// use counterfoil_outbox::{Destination, OutboxMessage, PgLogicalOutbox};
///
/// let outbox = PgLogicalOutbox::new(pool.clone());
/// outbox.setup().await?; // once, before producers start
/// let msg = OutboxMessage::new(Destination::new("payments", "captured"), b"{}".to_vec());
/// // BEGIN and the message in one round trip.
/// let mut tx = outbox.begin(&[msg]).await?;
/// sqlx::query("UPDATE payments SET status = 'captured' WHERE id = 42")
///     .execute(&mut *tx)
///     .await
///     .map_err(|e| counterfoil_outbox::Error::Backend(e.into()))?;
/// tx.commit().await.map_err(|e| counterfoil_outbox::Error::Backend(e.into()))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgLogicalOutbox {
    pool: PgPool,
    slot: Arc<str>,
    prefix: Arc<str>,
    clock: Arc<dyn Clock>,
}

fn check_name(what: &'static str, name: &str) -> Result<(), BuildError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(BuildError::invalid(
            what,
            "1 to 63 characters, lowercase letters, digits and underscores",
        ))
    }
}

impl PgLogicalOutbox {
    /// The outbox on `pool`, with the slot, publication and message prefix
    /// all named `counterfoil_outbox`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            slot: DEFAULT_NAME.into(),
            prefix: DEFAULT_NAME.into(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `name` for the replication slot, the publication and the message
    /// prefix, so several outboxes can share one database.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] unless `name` is 1 to 63 lowercase letters,
    /// digits and underscores (PostgreSQL's rule for slot names).
    pub fn name(mut self, name: &str) -> Result<Self, BuildError> {
        check_name("name", name)?;
        self.slot = name.into();
        self.prefix = name.into();
        Ok(self)
    }

    /// Uses `clock` for enqueue times (and so for delays).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The pool.
    pub fn get_ref(&self) -> &PgPool {
        &self.pool
    }

    /// The slot, publication and prefix name.
    pub fn slot_name(&self) -> &str {
        &self.slot
    }

    /// Checks `wal_level` and creates the publication and the replication
    /// slot if they do not exist. Safe to run from many processes at once.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when `wal_level` is not `logical` (set it and
    /// restart PostgreSQL), when the role may not create replication slots,
    /// or when the database fails.
    pub async fn setup(&self) -> Result<(), Error> {
        let level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
            .fetch_one(&self.pool)
            .await
            .map_err(Error::db)?;
        if level != "logical" {
            return Err(Error::Backend(
                format!(
                    "wal_level is {level}; the WAL outbox needs wal_level = logical \
                     (ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)"
                )
                .into(),
            ));
        }
        let mut tx = self.pool.begin().await.map_err(Error::db)?;
        // Serialize concurrent set-ups of the same name.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('counterfoil_outbox_setup:' || $1))")
            .bind(&*self.slot)
            .execute(&mut *tx)
            .await
            .map_err(Error::db)?;
        let has_pub: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
                .bind(&*self.slot)
                .fetch_one(&mut *tx)
                .await
                .map_err(Error::db)?;
        if !has_pub {
            // An empty publication: the relay wants only messages, no row changes.
            // The name is checked by `check_name`, so it needs no quoting.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE PUBLICATION {}",
                self.slot
            )))
            .execute(&mut *tx)
            .await
            .map_err(Error::db)?;
        }
        tx.commit().await.map_err(Error::db)?;
        // A slot cannot be created in a transaction that has written.
        let created = sqlx::query(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
        )
        .bind(&*self.slot)
        .execute(&self.pool)
        .await;
        match created {
            Ok(_) => Ok(()),
            // Another process created it between the check and the call.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42710") => Ok(()),
            Err(e) => Err(Error::db(e)),
        }
    }

    /// Drops the slot and the publication. Undelivered messages in the
    /// stream are lost; run it only when retiring the outbox.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails or a relay holds the slot.
    pub async fn drop_slot(&self) -> Result<(), Error> {
        sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&*self.slot)
        .execute(&self.pool)
        .await
        .map_err(Error::db)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP PUBLICATION IF EXISTS {}",
            self.slot
        )))
        .execute(&self.pool)
        .await
        .map_err(Error::db)?;
        Ok(())
    }

    /// Begins a transaction on the pool with `messages` already written, all
    /// in one round trip (`BEGIN; SELECT pg_logical_emit_message(…); …` as
    /// one simple query). They are delivered if and only if the transaction
    /// commits; call [`OutboxNotifier::notify`](crate::OutboxNotifier::notify)
    /// after the commit to wake a relay in this process.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] for an invalid message, [`Error::Backend`]
    /// when the database fails.
    pub async fn begin(
        &self,
        messages: &[OutboxMessage],
    ) -> Result<Transaction<'static, Postgres>, Error> {
        let sql = self.begin_sql(messages)?;
        self.pool
            .begin_with(sqlx::AssertSqlSafe(sql))
            .await
            .map_err(Error::db)
    }

    /// As [`PgLogicalOutbox::begin`], on a connection the caller holds.
    ///
    /// # Errors
    ///
    /// As for [`PgLogicalOutbox::begin`]; also [`Error::Backend`] when `conn`
    /// is already in a transaction.
    pub async fn begin_on<'c>(
        &self,
        conn: &'c mut PgConnection,
        messages: &[OutboxMessage],
    ) -> Result<Transaction<'c, Postgres>, Error> {
        use sqlx::Connection as _;
        let sql = self.begin_sql(messages)?;
        conn.begin_with(sqlx::AssertSqlSafe(sql))
            .await
            .map_err(Error::db)
    }

    fn begin_sql(&self, messages: &[OutboxMessage]) -> Result<String, Error> {
        let now = self.clock.now_ms();
        let mut sql = Vec::with_capacity(16 + messages.len() * 1_024);
        sql.extend_from_slice(b"BEGIN");
        for m in messages {
            let bytes = envelope::encode(m, now)?;
            // The prefix is checked by `check_name` and the content is hex
            // digits, so the literal needs no escaping.
            sql.extend_from_slice(b"; SELECT pg_logical_emit_message(true, '");
            sql.extend_from_slice(self.prefix.as_bytes());
            sql.extend_from_slice(b"', '\\x");
            let at = sql.len();
            sql.resize(at + bytes.len() * 2, 0);
            hex::encode_to_slice(&bytes, &mut sql[at..])
                .map_err(|e| Error::InvalidMessage(format!("hex: {e}")))?;
            sql.extend_from_slice(b"'::bytea)");
        }
        String::from_utf8(sql).map_err(|e| Error::InvalidMessage(format!("statement: {e}")))
    }

    /// Writes `messages` inside a transaction already open on `conn`, in one
    /// statement (one more round trip). Use [`PgLogicalOutbox::begin`] when
    /// the messages are known before the business work starts.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] for an invalid message, [`Error::Backend`]
    /// when the statement fails.
    ///
    /// # Cancel safety
    ///
    /// Nothing is committed here; the caller's transaction decides.
    pub async fn enqueue(
        &self,
        conn: &mut PgConnection,
        messages: &[OutboxMessage],
    ) -> Result<(), Error> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let contents = messages
            .iter()
            .map(|m| envelope::encode(m, now))
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query("SELECT pg_logical_emit_message(true, $1, c) FROM UNNEST($2::bytea[]) AS u(c)")
            .bind(&*self.prefix)
            .bind(contents)
            .execute(conn)
            .await
            .map_err(Error::db)?;
        Ok(())
    }

    /// Bytes of WAL the slot has not confirmed yet: messages not yet
    /// published, plus any other WAL written since. `None` when the slot
    /// does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    pub async fn lag_bytes(&self) -> Result<Option<u64>, Error> {
        let lag: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
             FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&*self.slot)
        .fetch_optional(&self.pool)
        .await
        .map_err(Error::db)?;
        Ok(lag.map(|l| l.map_or(0, |l| u64::try_from(l).unwrap_or(0))))
    }
}
