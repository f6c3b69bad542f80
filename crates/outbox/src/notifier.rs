//! In-process wake-up of relays after a commit.

use std::sync::Arc;

use tokio::sync::Notify;

/// Wakes the relays of this process when the caller has committed outbox rows.
///
/// Call [`OutboxNotifier::notify`] right **after** the business transaction
/// commits (or use `commit`, which does both). Relays in other processes find
/// the rows by adaptive polling. Nothing is ever sent with SQL `NOTIFY`
/// inside the business transaction, which would serialize commits.
#[derive(Debug, Clone, Default)]
pub struct OutboxNotifier {
    notify: Arc<Notify>,
}

impl OutboxNotifier {
    /// A notifier with no relay attached yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every relay worker waiting for work.
    pub fn notify(&self) {
        self.notify.notify_waiters();
    }

    /// Commits `tx`, then wakes the relays.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) if the commit fails; relays are not woken.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a cancelled commit may or may not have happened.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
    pub async fn commit<DB: sqlx::Database>(
        &self,
        tx: sqlx::Transaction<'_, DB>,
    ) -> Result<(), crate::Error> {
        tx.commit().await.map_err(crate::Error::db)?;
        self.notify();
        Ok(())
    }

    pub(crate) fn inner(&self) -> &Notify {
        &self.notify
    }
}
