//! The events tail: one task per `serve` process reads new rows of the
//! events log and broadcasts them to every WebSocket and `Prefer: wait`
//! request, so N clients cost one query per tick, not N.
//!
//! On PostgreSQL, ids are handed out before commit, so a transaction that
//! commits late can make an id appear after higher ones were read. The
//! tail remembers such gaps for a few seconds and re-reads them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, Durability};
use crate::store::events::{self, Event};

/// How long a missing id is waited for.
const GAP_WAIT: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(50);

/// Starts the tail; subscribe with [`broadcast::Sender::subscribe`].
///
/// Events are sent once their commits are on disk (`durable`): a client
/// never sees a state a power failure could take back.
pub(crate) async fn start(
    db: Db,
    durable: Durability,
    stop: CancellationToken,
) -> Result<broadcast::Sender<Arc<Event>>, sqlx::Error> {
    let (tx, _) = broadcast::channel(4096);
    let mut last = events::last_id(&db).await?;
    let out = tx.clone();
    tokio::spawn(async move {
        let mut gaps: BTreeMap<i64, Instant> = BTreeMap::new();
        while !stop.is_cancelled() {
            match events::after(&db, None, last, 1000).await {
                Ok(batch) if !batch.is_empty() && durable.barrier().await.is_err() => {
                    tracing::warn!("events held back: the database cannot make them durable");
                }
                Ok(batch) => {
                    for e in batch {
                        for missing in (last + 1)..e.id {
                            if gaps.len() < 10_000 {
                                gaps.insert(missing, Instant::now());
                            }
                        }
                        last = last.max(e.id);
                        let _ = out.send(Arc::new(e));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "events tail read failed"),
            }
            gaps.retain(|_, at| at.elapsed() < GAP_WAIT);
            if !gaps.is_empty() {
                let ids: Vec<i64> = gaps.keys().copied().collect();
                if let Ok(found) = events::by_ids(&db, None, &ids).await {
                    for e in found {
                        gaps.remove(&e.id);
                        let _ = out.send(Arc::new(e));
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    });
    Ok(tx)
}
