//! The consumer-side inbox: one row per `(consumer, message_id)`, written
//! first in the consumer's own transaction.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::clock::{Clock, SystemClock, duration_ms};
use crate::{Error, MessageId};

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

/// Default inbox retention: 7 days, longer than any broker redelivery or
/// dead-letter replay horizon we expect.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the inbox says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum InboxOutcome {
    /// First time: handle it, in the same transaction.
    New,
    /// Already handled (and committed) by this consumer: acknowledge and skip.
    Duplicate,
}

/// Inbox housekeeping every backend supports; recording a message is an
/// inherent method of each backend because it takes that backend's transaction.
#[async_trait]
pub trait InboxStore: Send + Sync + Debug {
    /// Deletes up to `limit` entries received before `before` (ms since the epoch).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    ///
    /// # Cancel safety
    ///
    /// Each call is one statement.
    async fn reap(&self, before: i64, limit: u32) -> Result<u64, Error>;

    /// Whether `consumer` has recorded `id`.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    async fn contains(&self, consumer: &str, id: MessageId) -> Result<bool, Error>;
}

fn _obj_safe(_: &dyn InboxStore) {}

/// An inbox in process memory, for tests and the in-memory demo.
#[derive(Debug, Clone)]
pub struct InMemoryInbox {
    seen: Arc<Mutex<HashMap<(String, MessageId), i64>>>,
    clock: Arc<dyn Clock>,
}

impl Default for InMemoryInbox {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryInbox {
    /// An empty inbox on the system clock.
    pub fn new() -> Self {
        Self {
            seen: Arc::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for receive times.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Records `id` for `consumer` (there is no transaction: the record is immediate).
    pub fn try_begin(&self, consumer: &str, id: MessageId) -> InboxOutcome {
        let mut seen = self.seen.lock();
        let key = (consumer.to_owned(), id);
        match seen.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => InboxOutcome::Duplicate,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(self.clock.now_ms());
                InboxOutcome::New
            }
        }
    }

    /// Forgets `id` for `consumer`, as a rollback would.
    pub fn forget(&self, consumer: &str, id: MessageId) {
        self.seen.lock().remove(&(consumer.to_owned(), id));
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.seen.lock().len()
    }

    /// Whether the inbox is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl InboxStore for InMemoryInbox {
    async fn reap(&self, before: i64, limit: u32) -> Result<u64, Error> {
        let mut seen = self.seen.lock();
        let doomed: Vec<(String, MessageId)> = seen
            .iter()
            .filter(|(_, t)| **t < before)
            .map(|(k, _)| k.clone())
            .take(limit as usize)
            .collect();
        for k in &doomed {
            seen.remove(k);
        }
        Ok(doomed.len() as u64)
    }

    async fn contains(&self, consumer: &str, id: MessageId) -> Result<bool, Error> {
        Ok(self.seen.lock().contains_key(&(consumer.to_owned(), id)))
    }
}

/// Deletes inbox entries older than the retention, in batches.
#[derive(Debug, Clone)]
pub struct InboxReaper {
    store: Arc<dyn InboxStore>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    batch: u32,
}

impl InboxReaper {
    /// A reaper with the default retention (7 days) and batches of 1000.
    pub fn new(store: Arc<dyn InboxStore>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            retention: DEFAULT_RETENTION,
            batch: 1_000,
        }
    }

    /// How long entries are kept. Default: 7 days.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Entries per delete statement. Default: 1000.
    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The clock. Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Deletes every expired entry, one batch at a time; returns how many.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: batches already deleted stay deleted.
    pub async fn run_once(&self) -> Result<u64, Error> {
        let before = self.clock.now_ms() - duration_ms(self.retention);
        let mut total = 0;
        loop {
            let n = self.store.reap(before, self.batch).await?;
            total += n;
            if n < u64::from(self.batch) {
                return Ok(total);
            }
        }
    }

    /// Runs [`InboxReaper::run_once`] every `every` until `cancel` fires.
    pub fn spawn(self, every: Duration, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.run_once().await {
                    warn!(error = %e, "inbox reaper failed");
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    #[tokio::test]
    async fn memory_inbox_dedups_and_reaps() {
        let clock = ManualClock::new(0);
        let inbox = InMemoryInbox::new().with_clock(Arc::new(clock.clone()));
        let a = MessageId::new();
        assert_eq!(inbox.try_begin("c1", a), InboxOutcome::New);
        assert_eq!(inbox.try_begin("c1", a), InboxOutcome::Duplicate);
        assert_eq!(inbox.try_begin("c2", a), InboxOutcome::New);
        clock.advance(Duration::from_secs(10));
        let b = MessageId::new();
        assert_eq!(inbox.try_begin("c1", b), InboxOutcome::New);
        let reaper = InboxReaper::new(Arc::new(inbox.clone()))
            .retention(Duration::from_secs(5))
            .batch(1)
            .clock(Arc::new(clock.clone()));
        assert_eq!(reaper.run_once().await.unwrap(), 2);
        assert!(!inbox.contains("c1", a).await.unwrap());
        assert!(inbox.contains("c1", b).await.unwrap());
        inbox.forget("c1", b);
        assert!(inbox.is_empty());
    }
}
