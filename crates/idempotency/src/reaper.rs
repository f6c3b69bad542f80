//! The batched reaper of expired records.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::store::IdempotencyStore;

/// Deletes expired records in batches until fewer than `batch` are found;
/// returns how many were deleted.
///
/// # Errors
///
/// The store's error; records deleted before it stay deleted.
///
/// # Cancel safety
///
/// Safe: each batch is atomic.
pub async fn reap_all(store: &dyn IdempotencyStore, batch: u32) -> Result<u64, Error> {
    let mut total = 0;
    loop {
        let n = store.reap_expired(batch).await?;
        total += n;
        if n < u64::from(batch) || batch == 0 {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Runs [`reap_all`] every `every` until the returned task is aborted.
///
/// Errors are logged and retried at the next tick.
pub fn spawn_reaper(
    store: Arc<dyn IdempotencyStore>,
    every: Duration,
    batch: u32,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match reap_all(&*store, batch).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(reaped = n, "reaped expired idempotency records"),
                Err(e) => tracing::warn!(error = %e, "idempotency reaper failed"),
            }
        }
    })
}
