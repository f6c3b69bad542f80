//! Model-based property test of the store state machine: random sequences of
//! enqueue, claim, ack, fail and clock moves, checked against a simple model,
//! on the in-memory and SQLite stores.
//!
//! `PROPTEST_CASES=2000 cargo test -p counterfoil-outbox --all-features --test model` for a long run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use counterfoil_outbox::conformance::{Enqueue, T0};
use counterfoil_outbox::{
    ClaimMode, ClaimRequest, Clock, Destination, Disposition, Failure, InMemoryOutboxStore,
    LeaseToken, ManualClock, MessageId, OutboxMessage, OutboxStore, SqliteOutboxStore,
};
use proptest::prelude::*;

const LEASE_MS: i64 = 10_000;

#[derive(Debug, Clone)]
enum Op {
    Enqueue(Option<u8>),
    Claim(u32),
    Ack(usize),
    Fail(usize, bool),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::option::of(0u8..3).prop_map(Op::Enqueue),
        3 => (1u32..4).prop_map(Op::Claim),
        2 => (0usize..4).prop_map(Op::Ack),
        1 => ((0usize..4), any::<bool>()).prop_map(|(i, d)| Op::Fail(i, d)),
        1 => (0u64..15_000).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Default)]
struct Model {
    /// Undelivered messages by seq: (id, key, holder, lease_until, available_at).
    pending: BTreeMap<i64, (MessageId, Option<u8>, Option<LeaseToken>, i64)>,
    delivered: usize,
    dead: usize,
    claims: Vec<(LeaseToken, Vec<i64>)>,
}

async fn run(
    ops: Vec<Op>,
    ordered: bool,
    store: Arc<dyn OutboxStore>,
    enq: Arc<dyn Enqueue>,
    clock: ManualClock,
) {
    let mode = if ordered {
        ClaimMode::Ordered
    } else {
        ClaimMode::Unordered
    };
    let mut m = Model::default();
    let mut ids: HashMap<MessageId, Option<u8>> = HashMap::new();
    let mut by_key: HashMap<u8, Vec<MessageId>> = HashMap::new();
    let mut done: std::collections::HashSet<MessageId> = std::collections::HashSet::new();
    for op in ops {
        let now = clock.now_ms();
        match op {
            Op::Enqueue(key) => {
                let mut msg = OutboxMessage::new(Destination::new("x", "k"), vec![1]);
                if let Some(k) = key {
                    msg = msg.partition_key(k.to_string());
                }
                ids.insert(msg.id, key);
                if let Some(k) = key {
                    by_key.entry(k).or_default().push(msg.id);
                }
                enq.enqueue(&[msg]).await.unwrap();
                // seqs are assigned by the store; learn them on claim.
            }
            Op::Claim(n) => {
                let b = store
                    .claim(ClaimRequest {
                        batch_size: n,
                        lease: Duration::from_millis(LEASE_MS as u64),
                        mode,
                        now,
                    })
                    .await
                    .unwrap();
                assert!(b.messages.len() <= n as usize);
                for c in &b.messages {
                    let key = ids[&c.message.id];
                    let entry = m
                        .pending
                        .entry(c.seq)
                        .or_insert((c.message.id, key, None, 0));
                    assert_eq!(entry.0, c.message.id, "seq reused");
                    assert!(
                        entry.2.is_none() || entry.3 < now,
                        "claimed while another lease is live"
                    );
                    entry.2 = Some(b.lease);
                    entry.3 = now + LEASE_MS;
                }
                if ordered {
                    for c in &b.messages {
                        let Some(k) = ids[&c.message.id] else {
                            continue;
                        };
                        // It is the oldest undelivered message of its key.
                        let head = by_key[&k].iter().find(|id| !done.contains(id));
                        assert_eq!(
                            head,
                            Some(&c.message.id),
                            "ordered claim skipped an older message of key {k}"
                        );
                        // No other message of the key is held under a live lease.
                        let other_live = m.pending.iter().any(|(s, (_, key, h, until))| {
                            *s != c.seq && *key == Some(k) && h.is_some() && *until >= now
                        });
                        assert!(!other_live, "two messages of key {k} in flight");
                    }
                }
                m.claims
                    .push((b.lease, b.messages.iter().map(|c| c.seq).collect()));
            }
            Op::Ack(i) if !m.claims.is_empty() => {
                let (lease, seqs) = m.claims.remove(i % m.claims.len());
                let held: Vec<i64> = seqs
                    .iter()
                    .copied()
                    .filter(|s| m.pending.get(s).is_some_and(|e| e.2 == Some(lease)))
                    .collect();
                let n = store.ack(lease, &seqs, now, false).await.unwrap();
                assert_eq!(
                    n as usize,
                    held.len(),
                    "ack must match exactly the rows still held"
                );
                for s in held {
                    if let Some(e) = m.pending.remove(&s) {
                        done.insert(e.0);
                    }
                    m.delivered += 1;
                }
            }
            Op::Fail(i, dead) if !m.claims.is_empty() => {
                let (lease, seqs) = m.claims.remove(i % m.claims.len());
                let disposition = if dead {
                    Disposition::Dead
                } else {
                    Disposition::RetryAt {
                        at: now + 1_000,
                        count_attempt: true,
                    }
                };
                let failures: Vec<_> = seqs
                    .iter()
                    .map(|s| Failure {
                        seq: *s,
                        error: "e".into(),
                        disposition: disposition.clone(),
                    })
                    .collect();
                let held: Vec<i64> = seqs
                    .iter()
                    .copied()
                    .filter(|s| m.pending.get(s).is_some_and(|e| e.2 == Some(lease)))
                    .collect();
                let n = store.fail(lease, &failures, now).await.unwrap();
                assert_eq!(n as usize, held.len());
                for s in held {
                    if dead {
                        if let Some(e) = m.pending.remove(&s) {
                            done.insert(e.0);
                        }
                        m.dead += 1;
                    } else if let Some(e) = m.pending.get_mut(&s) {
                        e.2 = None;
                    }
                }
            }
            Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            _ => {}
        }
    }
    // Conservation: nothing vanished.
    let b = store.backlog().await.unwrap();
    assert_eq!(b.pending as usize + m.delivered + m.dead, ids.len());
    assert_eq!(b.dead as usize, m.dead);
    // Everything left is eventually claimable and deliverable.
    clock.advance(Duration::from_secs(3600));
    let mut drained = 0;
    loop {
        let batch = store
            .claim(ClaimRequest {
                batch_size: 100,
                lease: Duration::from_secs(10),
                mode,
                now: clock.now_ms(),
            })
            .await
            .unwrap();
        if batch.messages.is_empty() {
            break;
        }
        let seqs: Vec<i64> = batch.messages.iter().map(|c| c.seq).collect();
        drained += store
            .ack(batch.lease, &seqs, clock.now_ms(), false)
            .await
            .unwrap() as usize;
    }
    assert_eq!(drained, b.pending as usize);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn in_memory_store_matches_the_model(ops in proptest::collection::vec(op(), 1..60), ordered in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let clock = ManualClock::new(T0);
            let store = InMemoryOutboxStore::new().with_clock(Arc::new(clock.clone()));
            run(ops, ordered, Arc::new(store.clone()), Arc::new(store), clock).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_store_matches_the_model(ops in proptest::collection::vec(op(), 1..40), ordered in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (pool, path) = common::sqlite_pool().await;
            let clock = ManualClock::new(T0);
            let store = SqliteOutboxStore::new(pool.clone()).with_clock(Arc::new(clock.clone()));
            store.migrate().await.unwrap();
            run(ops, ordered, Arc::new(store.clone()), Arc::new(store), clock).await;
            pool.close().await;
            common::remove_sqlite(&path);
        });
    }
}
