//! The SQLite inbox.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::{InboxOutcome, InboxStore};
use crate::clock::{Clock, SystemClock};
use crate::{Error, MessageId};

/// The inbox in SQLite (table `inbox_messages`).
#[derive(Debug, Clone)]
pub struct SqliteInbox {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

impl SqliteInbox {
    /// An inbox on `pool`, using the system clock. Run
    /// [`SqliteOutboxStore::migrate`](crate::SqliteOutboxStore::migrate) once to create the table.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for receive times.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Records that `consumer` handles `id`, as the first write of the
    /// consumer's transaction `tx` (begin it with `BEGIN IMMEDIATE`).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the insert fails.
    ///
    /// # Cancel safety
    ///
    /// Nothing is committed here; the caller's transaction decides.
    pub async fn try_begin(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        consumer: &str,
        id: MessageId,
    ) -> Result<InboxOutcome, Error> {
        let res = sqlx::query(
            "INSERT INTO inbox_messages (consumer, message_id, received_at) VALUES (?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(id.as_uuid())
        .bind(self.clock.now_ms())
        .execute(&mut **tx)
        .await
        .map_err(Error::db)?;
        Ok(if res.rows_affected() == 1 {
            InboxOutcome::New
        } else {
            InboxOutcome::Duplicate
        })
    }
}

#[async_trait]
impl InboxStore for SqliteInbox {
    async fn reap(&self, before: i64, limit: u32) -> Result<u64, Error> {
        Ok(sqlx::query(
            "DELETE FROM inbox_messages WHERE rowid IN (
               SELECT rowid FROM inbox_messages WHERE received_at < ? LIMIT CAST(? AS INTEGER))",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(Error::db)?
        .rows_affected())
    }

    async fn contains(&self, consumer: &str, id: MessageId) -> Result<bool, Error> {
        Ok(
            sqlx::query("SELECT 1 FROM inbox_messages WHERE consumer = ? AND message_id = ?")
                .bind(consumer)
                .bind(id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(Error::db)?
                .is_some(),
        )
    }
}
