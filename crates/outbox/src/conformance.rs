//! The backend conformance suite, run unchanged against every [`OutboxStore`].
//!
//! Enabled by the `test-util` feature. A backend passes when every function
//! here succeeds on a fresh, empty store:
//!
//! ```no_run
//! # async fn f() {
//! use counterfoil_outbox::conformance::{self, Harness};
//! use counterfoil_outbox::{InMemoryOutboxStore, ManualClock};
//! use std::sync::Arc;
//!
//! conformance::run_all(|clock: ManualClock| async move {
//!     let store = InMemoryOutboxStore::new().with_clock(Arc::new(clock));
//!     Harness::new(Arc::new(store.clone()), Arc::new(store))
//! })
//! .await;
//! # }
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Clock;
use crate::store::{ClaimMode, ClaimRequest, Disposition, Failure, OutboxStore};
use crate::{Destination, Error, InMemoryOutboxStore, ManualClock, OutboxMessage};

/// Start time of the suite's manual clock.
pub const T0: i64 = 1_700_000_000_000;

/// Commits messages to a store the way that backend's producers do.
#[async_trait]
pub trait Enqueue: Send + Sync {
    /// Enqueues and commits `messages`.
    ///
    /// # Errors
    ///
    /// Whatever the backend's enqueue returns.
    async fn enqueue(&self, messages: &[OutboxMessage]) -> Result<(), Error>;
}

#[async_trait]
impl Enqueue for InMemoryOutboxStore {
    async fn enqueue(&self, messages: &[OutboxMessage]) -> Result<(), Error> {
        InMemoryOutboxStore::enqueue(self, messages)
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl Enqueue for crate::PgOutboxStore {
    async fn enqueue(&self, messages: &[OutboxMessage]) -> Result<(), Error> {
        let mut tx = self.get_ref().begin().await.map_err(Error::db)?;
        crate::PgOutboxStore::enqueue(self, &mut tx, messages).await?;
        tx.commit().await.map_err(Error::db)
    }
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl Enqueue for crate::SqliteOutboxStore {
    async fn enqueue(&self, messages: &[OutboxMessage]) -> Result<(), Error> {
        let mut tx = self
            .get_ref()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::db)?;
        crate::SqliteOutboxStore::enqueue(self, &mut tx, messages).await?;
        tx.commit().await.map_err(Error::db)
    }
}

/// A store under test and how to enqueue into it.
#[derive(Clone)]
pub struct Harness {
    /// The store.
    pub store: Arc<dyn OutboxStore>,
    /// Its producer side.
    pub enqueue: Arc<dyn Enqueue>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A harness.
    pub fn new(store: Arc<dyn OutboxStore>, enqueue: Arc<dyn Enqueue>) -> Self {
        Self { store, enqueue }
    }
}

fn msg(key: Option<&str>, body: &str) -> OutboxMessage {
    let m = OutboxMessage::new(Destination::new("ex", "rk"), body.as_bytes().to_vec())
        .correlation_id("corr")
        .traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .header("h", "v");
    match key {
        Some(k) => m.partition_key(k),
        None => m,
    }
}

fn req(clock: &ManualClock, n: u32, mode: ClaimMode) -> ClaimRequest {
    ClaimRequest {
        batch_size: n,
        lease: Duration::from_secs(30),
        mode,
        now: clock.now_ms(),
    }
}

/// Runs every case, each on a fresh store made by `make` with its own clock at [`T0`].
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = Harness>,
{
    let c = ManualClock::new(T0);
    enqueue_claim_ack_round_trip(make(c.clone()).await, c).await;
    let c = ManualClock::new(T0);
    leases_exclude_and_expire(make(c.clone()).await, c).await;
    let c = ManualClock::new(T0);
    acks_are_fenced_by_the_lease(make(c.clone()).await, c).await;
    let c = ManualClock::new(T0);
    retry_backoff_and_dead_letters(make(c.clone()).await, c).await;
    let c = ManualClock::new(T0);
    ordered_mode_hands_out_one_per_key(make(c.clone()).await, c).await;
    let c = ManualClock::new(T0);
    delayed_messages_wait(make(c.clone()).await, c).await;
    let c = ManualClock::new(T0);
    retention_and_cleanup(make(c.clone()).await, c).await;
    let c = ManualClock::new(T0);
    duplicate_ids_are_refused(make(c.clone()).await, c).await;
}

/// Everything a message carries survives the store; acked rows are gone.
pub async fn enqueue_claim_ack_round_trip(h: Harness, clock: ManualClock) {
    let sent: Vec<_> = (0..5).map(|i| msg(None, &format!("m{i}"))).collect();
    h.enqueue.enqueue(&sent).await.unwrap();
    let b = h.store.backlog().await.unwrap();
    assert_eq!(b.pending, 5);
    assert_eq!(b.oldest_created_at, Some(T0));
    let batch = h
        .store
        .claim(req(&clock, 3, ClaimMode::Unordered))
        .await
        .unwrap();
    assert_eq!(batch.messages.len(), 3);
    for (c, s) in batch.messages.iter().zip(&sent) {
        assert_eq!(c.message.id, s.id);
        assert_eq!(c.message.payload, s.payload);
        assert_eq!(c.message.headers, s.headers);
        assert_eq!(c.message.destination, s.destination);
        assert_eq!(c.message.content_type, s.content_type);
        assert_eq!(c.attempts, 0);
        assert_eq!(c.created_at, T0);
    }
    let seqs: Vec<i64> = batch.messages.iter().map(|m| m.seq).collect();
    assert_eq!(h.store.ack(batch.lease, &seqs, T0, false).await.unwrap(), 3);
    let rest = h
        .store
        .claim(req(&clock, 10, ClaimMode::Unordered))
        .await
        .unwrap();
    assert_eq!(rest.messages.len(), 2);
    assert_eq!(rest.messages[0].message.id, sent[3].id);
    let b = h.store.backlog().await.unwrap();
    assert_eq!(b.pending, 2);
}

/// A leased message is invisible to other claims until the lease runs out.
pub async fn leases_exclude_and_expire(h: Harness, clock: ManualClock) {
    h.enqueue
        .enqueue(&[msg(None, "a"), msg(None, "b")])
        .await
        .unwrap();
    let first = h
        .store
        .claim(req(&clock, 1, ClaimMode::Unordered))
        .await
        .unwrap();
    let second = h
        .store
        .claim(req(&clock, 5, ClaimMode::Unordered))
        .await
        .unwrap();
    assert_eq!(first.messages.len(), 1);
    assert_eq!(second.messages.len(), 1);
    assert_ne!(first.messages[0].seq, second.messages[0].seq);
    assert!(
        h.store
            .claim(req(&clock, 5, ClaimMode::Unordered))
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    clock.advance(Duration::from_secs(31));
    let again = h
        .store
        .claim(req(&clock, 5, ClaimMode::Unordered))
        .await
        .unwrap();
    assert_eq!(
        again.messages.len(),
        2,
        "expired leases are claimable again"
    );
}

/// A relay whose lease expired cannot ack or fail rows someone else now holds.
pub async fn acks_are_fenced_by_the_lease(h: Harness, clock: ManualClock) {
    h.enqueue.enqueue(&[msg(None, "a")]).await.unwrap();
    let stale = h
        .store
        .claim(req(&clock, 1, ClaimMode::Unordered))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(31));
    let fresh = h
        .store
        .claim(req(&clock, 1, ClaimMode::Unordered))
        .await
        .unwrap();
    let seq = fresh.messages[0].seq;
    assert_eq!(
        h.store.ack(stale.lease, &[seq], T0, false).await.unwrap(),
        0
    );
    let f = Failure {
        seq,
        error: "x".into(),
        disposition: Disposition::Dead,
    };
    assert_eq!(h.store.fail(stale.lease, &[f], T0).await.unwrap(), 0);
    assert_eq!(h.store.backlog().await.unwrap().dead, 0);
    assert_eq!(
        h.store.ack(fresh.lease, &[seq], T0, false).await.unwrap(),
        1
    );
    assert_eq!(h.store.backlog().await.unwrap().pending, 0);
}

/// Failures count attempts and delay the message; dead letters can be listed, replayed, discarded.
pub async fn retry_backoff_and_dead_letters(h: Harness, clock: ManualClock) {
    let a = msg(None, "a");
    let b = msg(None, "b");
    h.enqueue.enqueue(&[a.clone(), b.clone()]).await.unwrap();
    let batch = h
        .store
        .claim(req(&clock, 2, ClaimMode::Unordered))
        .await
        .unwrap();
    let now = clock.now_ms();
    let fails = vec![
        Failure {
            seq: batch.messages[0].seq,
            error: "nope".into(),
            disposition: Disposition::RetryAt {
                at: now + 1_000,
                count_attempt: true,
            },
        },
        Failure {
            seq: batch.messages[1].seq,
            error: "outage".into(),
            disposition: Disposition::RetryAt {
                at: now + 1_000,
                count_attempt: false,
            },
        },
    ];
    assert_eq!(h.store.fail(batch.lease, &fails, now).await.unwrap(), 2);
    assert!(
        h.store
            .claim(req(&clock, 5, ClaimMode::Unordered))
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    clock.advance(Duration::from_millis(1_000));
    let batch = h
        .store
        .claim(req(&clock, 5, ClaimMode::Unordered))
        .await
        .unwrap();
    assert_eq!(batch.messages.len(), 2);
    assert_eq!(batch.messages[0].attempts, 1);
    assert_eq!(batch.messages[1].attempts, 0);
    let dead = Failure {
        seq: batch.messages[0].seq,
        error: "poison".into(),
        disposition: Disposition::Dead,
    };
    assert_eq!(
        h.store
            .fail(batch.lease, &[dead], clock.now_ms())
            .await
            .unwrap(),
        1
    );
    let listed = h.store.dead_letters(None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].message.id, a.id);
    assert_eq!(listed[0].message.payload, a.payload);
    assert_eq!(listed[0].attempts, 2);
    assert_eq!(listed[0].last_error, "poison");
    assert_eq!(listed[0].dead_at, clock.now_ms());
    assert!(
        h.store
            .dead_letters(Some(a.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.store.backlog().await.unwrap().dead, 1);

    assert_eq!(h.store.replay(&[a.id], clock.now_ms()).await.unwrap(), 1);
    assert_eq!(h.store.backlog().await.unwrap().dead, 0);
    // b is still leased; the replayed a is claimable with zero attempts.
    let again = h
        .store
        .claim(req(&clock, 5, ClaimMode::Unordered))
        .await
        .unwrap();
    assert_eq!(again.messages.len(), 1);
    assert_eq!(again.messages[0].message.id, a.id);
    assert_eq!(again.messages[0].attempts, 0);
    let dead = Failure {
        seq: again.messages[0].seq,
        error: "poison again".into(),
        disposition: Disposition::Dead,
    };
    h.store
        .fail(again.lease, &[dead], clock.now_ms())
        .await
        .unwrap();
    assert_eq!(h.store.discard(&[a.id]).await.unwrap(), 1);
    assert!(h.store.dead_letters(None, 10).await.unwrap().is_empty());
    assert_eq!(h.store.discard(&[a.id]).await.unwrap(), 0);
}

/// In ordered mode only the oldest undelivered message of a key is claimable.
pub async fn ordered_mode_hands_out_one_per_key(h: Harness, clock: ManualClock) {
    let k1: Vec<_> = (0..3)
        .map(|i| msg(Some("k1"), &format!("k1-{i}")))
        .collect();
    let k2: Vec<_> = (0..2)
        .map(|i| msg(Some("k2"), &format!("k2-{i}")))
        .collect();
    let free = msg(None, "free");
    let mut all = vec![k1[0].clone(), k2[0].clone(), k1[1].clone(), free.clone()];
    all.extend([k1[2].clone(), k2[1].clone()]);
    h.enqueue.enqueue(&all).await.unwrap();

    let b1 = h
        .store
        .claim(req(&clock, 10, ClaimMode::Ordered))
        .await
        .unwrap();
    let ids: Vec<_> = b1.messages.iter().map(|m| m.message.id).collect();
    assert_eq!(ids, vec![k1[0].id, k2[0].id, free.id]);
    assert!(
        h.store
            .claim(req(&clock, 10, ClaimMode::Ordered))
            .await
            .unwrap()
            .messages
            .is_empty()
    );

    // k1's head fails: k1 waits for its retry, k2 moves on.
    let now = clock.now_ms();
    let k1_head = b1.messages[0].seq;
    h.store
        .fail(
            b1.lease,
            &[Failure {
                seq: k1_head,
                error: "e".into(),
                disposition: Disposition::RetryAt {
                    at: now + 500,
                    count_attempt: true,
                },
            }],
            now,
        )
        .await
        .unwrap();
    h.store
        .ack(
            b1.lease,
            &[b1.messages[1].seq, b1.messages[2].seq],
            now,
            false,
        )
        .await
        .unwrap();
    let b2 = h
        .store
        .claim(req(&clock, 10, ClaimMode::Ordered))
        .await
        .unwrap();
    let ids: Vec<_> = b2.messages.iter().map(|m| m.message.id).collect();
    assert_eq!(ids, vec![k2[1].id]);
    h.store
        .ack(b2.lease, &[b2.messages[0].seq], now, false)
        .await
        .unwrap();
    clock.advance(Duration::from_millis(500));
    for expected in &k1 {
        let b = h
            .store
            .claim(req(&clock, 10, ClaimMode::Ordered))
            .await
            .unwrap();
        assert_eq!(b.messages.len(), 1);
        assert_eq!(b.messages[0].message.id, expected.id);
        h.store
            .ack(b.lease, &[b.messages[0].seq], clock.now_ms(), true)
            .await
            .unwrap();
    }
    assert_eq!(h.store.backlog().await.unwrap().pending, 0);
}

/// Messages with a delay or a future `available_at` are not claimed early.
pub async fn delayed_messages_wait(h: Harness, clock: ManualClock) {
    let later = msg(None, "later").delay(Duration::from_secs(60));
    let at = msg(None, "at").available_at(T0 + 10_000);
    let now = msg(None, "now");
    h.enqueue
        .enqueue(&[later.clone(), at.clone(), now.clone()])
        .await
        .unwrap();
    let b = h
        .store
        .claim(req(&clock, 10, ClaimMode::Unordered))
        .await
        .unwrap();
    assert_eq!(
        b.messages.iter().map(|m| m.message.id).collect::<Vec<_>>(),
        vec![now.id]
    );
    h.store
        .ack(b.lease, &[b.messages[0].seq], clock.now_ms(), false)
        .await
        .unwrap();
    clock.advance(Duration::from_millis(9_999));
    assert!(
        h.store
            .claim(req(&clock, 10, ClaimMode::Unordered))
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    clock.advance(Duration::from_millis(1));
    let b = h
        .store
        .claim(req(&clock, 10, ClaimMode::Unordered))
        .await
        .unwrap();
    assert_eq!(
        b.messages.iter().map(|m| m.message.id).collect::<Vec<_>>(),
        vec![at.id]
    );
    h.store
        .ack(b.lease, &[b.messages[0].seq], clock.now_ms(), false)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(50));
    let b = h
        .store
        .claim(req(&clock, 10, ClaimMode::Unordered))
        .await
        .unwrap();
    assert_eq!(
        b.messages.iter().map(|m| m.message.id).collect::<Vec<_>>(),
        vec![later.id]
    );
}

/// Retained delivered rows are not pending and are deleted in batches.
pub async fn retention_and_cleanup(h: Harness, clock: ManualClock) {
    let msgs: Vec<_> = (0..5).map(|i| msg(None, &format!("{i}"))).collect();
    h.enqueue.enqueue(&msgs).await.unwrap();
    let b = h
        .store
        .claim(req(&clock, 10, ClaimMode::Unordered))
        .await
        .unwrap();
    let seqs: Vec<i64> = b.messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        h.store
            .ack(b.lease, &seqs, clock.now_ms(), true)
            .await
            .unwrap(),
        5
    );
    assert_eq!(h.store.backlog().await.unwrap().pending, 0);
    assert!(
        h.store
            .claim(req(&clock, 10, ClaimMode::Unordered))
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    assert_eq!(
        h.store.cleanup(clock.now_ms(), 10).await.unwrap(),
        0,
        "not older than the cut-off"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(h.store.cleanup(clock.now_ms(), 2).await.unwrap(), 2);
    assert_eq!(h.store.cleanup(clock.now_ms(), 10).await.unwrap(), 3);
    assert_eq!(h.store.cleanup(clock.now_ms(), 10).await.unwrap(), 0);
}

/// A message id can be stored only once; a failed enqueue stores nothing.
pub async fn duplicate_ids_are_refused(h: Harness, _clock: ManualClock) {
    let a = msg(None, "a");
    h.enqueue.enqueue(std::slice::from_ref(&a)).await.unwrap();
    let b = msg(None, "b");
    assert!(h.enqueue.enqueue(&[b, a]).await.is_err());
    assert_eq!(h.store.backlog().await.unwrap().pending, 1);
}
