//! The relay end to end over the in-process bus, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use counterfoil_outbox::{
    Backoff, Binding, ClaimMode, Destination, HandlerError, InMemoryInbox, InMemoryOutboxStore,
    InProcessBus, InboxOutcome, IncomingMessage, ManualClock, OutboxMessage, OutboxStore, PgInbox,
    PgOutboxStore, Relay, Retention, SqliteInbox, SqliteOutboxStore, handler_fn,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);

fn job(i: usize) -> OutboxMessage {
    OutboxMessage::new(
        Destination::new("print", "site1.jobs"),
        format!("job-{i}").into_bytes(),
    )
}

async fn recv_n<T>(rx: &mut mpsc::UnboundedReceiver<T>, n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let next = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("timed out waiting for deliveries");
        out.push(next.expect("channel closed"));
    }
    out
}

#[tokio::test]
async fn sqlite_outbox_to_bus_to_sqlite_inbox_delivers_each_effect_once() {
    let (pool, path) = common::sqlite_pool().await;
    let store = SqliteOutboxStore::new(pool.clone());
    store.migrate().await.unwrap();
    sqlx::query("CREATE TABLE payments (id INTEGER PRIMARY KEY, amount_minor INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE printed (message_id BLOB PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();

    let bus = InProcessBus::new();
    let inbox = SqliteInbox::new(pool.clone());
    let (tx_done, mut rx_done) = mpsc::unbounded_channel();
    let hp = pool.clone();
    bus.subscribe(
        "agent",
        [Binding::new("print", "*.jobs")],
        Arc::new(handler_fn(move |m: IncomingMessage| {
            let (pool, inbox, done) = (hp.clone(), inbox.clone(), tx_done.clone());
            async move {
                let mut tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(HandlerError::retry)?;
                if inbox
                    .try_begin(&mut tx, "agent", m.id)
                    .await
                    .map_err(HandlerError::retry)?
                    == InboxOutcome::Duplicate
                {
                    return Ok(());
                }
                sqlx::query("INSERT INTO printed (message_id) VALUES (?)")
                    .bind(m.id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(HandlerError::retry)?;
                tx.commit().await.map_err(HandlerError::retry)?;
                let _ = done.send(m.id);
                Ok(())
            }
        })),
    );
    let relay = Relay::builder(Arc::new(store.clone()), Arc::new(bus))
        .batch_size(32)
        .build()
        .unwrap();
    let handle = relay.spawn();

    // Business transactions: a payment row and its print jobs commit together.
    let n = 200;
    for chunk in 0..(n / 10) {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("INSERT INTO payments (id, amount_minor) VALUES (?, ?)")
            .bind(chunk as i64)
            .bind(1250i64)
            .execute(&mut *tx)
            .await
            .unwrap();
        let msgs: Vec<_> = (0..10).map(|i| job(chunk * 10 + i)).collect();
        store.enqueue(&mut tx, &msgs).await.unwrap();
        relay.notifier().commit(tx).await.unwrap();
    }
    // A rolled-back transaction publishes nothing.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    store.enqueue(&mut tx, &[job(9999)]).await.unwrap();
    tx.rollback().await.unwrap();

    let got = recv_n(&mut rx_done, n).await;
    handle.shutdown().await;
    let distinct: std::collections::HashSet<_> = got.iter().collect();
    assert_eq!(distinct.len(), n);
    let printed: i64 = sqlx::query_scalar("SELECT count(*) FROM printed")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(printed, n as i64);
    assert_eq!(store.backlog().await.unwrap().pending, 0);
    assert_eq!(relay.stats().published, n as u64);
    pool.close().await;
    common::remove_sqlite(&path);
}

/// A handler that fails one message forever: the others flow, the poison one
/// is dead-lettered after `max_attempts`, then replayed and discarded.
#[tokio::test]
async fn poison_message_does_not_block_others_and_can_be_replayed() {
    let store = InMemoryOutboxStore::new();
    let bus = InProcessBus::new();
    let (tx_done, mut rx_done) = mpsc::unbounded_channel();
    let attempts = Arc::new(AtomicU64::new(0));
    let a2 = attempts.clone();
    let heal = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h2 = heal.clone();
    bus.subscribe(
        "c",
        [Binding::new("print", "#")],
        Arc::new(handler_fn(move |m: IncomingMessage| {
            let (done, attempts, heal) = (tx_done.clone(), a2.clone(), h2.clone());
            async move {
                if m.payload == b"poison" && !heal.load(Ordering::SeqCst) {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    return Err(HandlerError::retry("printer rejects this job"));
                }
                let _ = done.send(String::from_utf8(m.payload).unwrap());
                Ok(())
            }
        })),
    );
    let relay = Relay::builder(Arc::new(store.clone()), Arc::new(bus))
        .mode(ClaimMode::Ordered)
        .max_attempts(3)
        .backoff(Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(5),
        ))
        .build()
        .unwrap();
    let handle = relay.spawn();
    let mut msgs = vec![
        OutboxMessage::new(Destination::new("print", "a"), b"poison".to_vec()).partition_key("p1"),
    ];
    msgs.extend((0..20).map(|i| job(i).partition_key(format!("p{}", i % 3 + 2))));
    store.enqueue(&msgs).unwrap();
    relay.notifier().notify();
    let got = recv_n(&mut rx_done, 20).await;
    assert_eq!(got.len(), 20);
    // The poison message ends in the dead-letter table after exactly 3 attempts.
    let dead = tokio::time::timeout(WAIT, async {
        loop {
            let d = store.dead_letters(None, 10).await.unwrap();
            if !d.is_empty() {
                return d;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert_eq!(dead[0].message.payload, b"poison");
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert!(dead[0].last_error.contains("printer rejects"));

    // Fixed: replay delivers it.
    heal.store(true, Ordering::SeqCst);
    assert_eq!(
        store
            .replay(
                &[dead[0].message.id],
                counterfoil_outbox::Clock::now_ms(&counterfoil_outbox::SystemClock)
            )
            .await
            .unwrap(),
        1
    );
    relay.notifier().notify();
    let got = recv_n(&mut rx_done, 1).await;
    assert_eq!(got, vec!["poison".to_owned()]);
    handle.shutdown().await;
    assert_eq!(store.backlog().await.unwrap(), Default::default());
}

#[tokio::test]
async fn rejected_message_is_dead_lettered_at_once() {
    let store = InMemoryOutboxStore::new();
    let bus = InProcessBus::new();
    bus.subscribe(
        "c",
        [Binding::new("print", "#")],
        Arc::new(handler_fn(|_m: IncomingMessage| async {
            Err(HandlerError::reject("malformed"))
        })),
    );
    let relay = Relay::builder(Arc::new(store.clone()), Arc::new(bus))
        .max_attempts(10)
        .build()
        .unwrap();
    store.enqueue(&[job(1)]).unwrap();
    let r = relay.run_once().await.unwrap();
    assert_eq!((r.claimed, r.dead_lettered), (1, 1));
    let dead = store.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead[0].attempts, 1);
}

#[tokio::test]
async fn unroutable_on_the_bus_counts_as_failure() {
    let clock = ManualClock::new(1_000_000);
    let store = InMemoryOutboxStore::new().with_clock(Arc::new(clock.clone()));
    let relay = Relay::builder(Arc::new(store.clone()), Arc::new(InProcessBus::new()))
        .max_attempts(2)
        .backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).without_jitter())
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    store.enqueue(&[job(1)]).unwrap();
    assert_eq!(relay.run_once().await.unwrap().retried, 1);
    assert_eq!(relay.run_once().await.unwrap().claimed, 0, "backing off");
    clock.advance(Duration::from_secs(1));
    assert_eq!(relay.run_once().await.unwrap().dead_lettered, 1);
    let dead = store.dead_letters(None, 10).await.unwrap();
    assert!(
        dead[0].last_error.starts_with("unroutable"),
        "{}",
        dead[0].last_error
    );
}

#[tokio::test]
async fn delayed_messages_are_published_when_due() {
    let clock = ManualClock::new(5_000_000);
    let store = InMemoryOutboxStore::new().with_clock(Arc::new(clock.clone()));
    let bus = InProcessBus::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    bus.subscribe(
        "c",
        [Binding::new("print", "#")],
        Arc::new(handler_fn(move |m: IncomingMessage| {
            let seen = s2.clone();
            async move {
                seen.lock().push(String::from_utf8(m.payload).unwrap());
                Ok(())
            }
        })),
    );
    let relay = Relay::builder(Arc::new(store.clone()), Arc::new(bus))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    store
        .enqueue(&[
            job(1).delay(Duration::from_secs(30)),
            job(2),
            job(3).available_at(5_000_000 + 10_000),
        ])
        .unwrap();
    assert_eq!(relay.drain().await.unwrap(), 1);
    assert_eq!(*seen.lock(), vec!["job-2"]);
    clock.advance(Duration::from_secs(10));
    assert_eq!(relay.drain().await.unwrap(), 1);
    clock.advance(Duration::from_secs(19));
    assert_eq!(relay.drain().await.unwrap(), 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(relay.drain().await.unwrap(), 1);
    assert_eq!(*seen.lock(), vec!["job-2", "job-3", "job-1"]);
}

#[tokio::test]
async fn retained_rows_are_cleaned_in_batches() {
    let clock = ManualClock::new(1_000_000);
    let store = InMemoryOutboxStore::new().with_clock(Arc::new(clock.clone()));
    let bus = InProcessBus::new();
    bus.subscribe(
        "c",
        [Binding::new("print", "#")],
        Arc::new(handler_fn(|_m: IncomingMessage| async { Ok(()) })),
    );
    let relay = Relay::builder(Arc::new(store.clone()), Arc::new(bus))
        .retention(Retention::Keep(Duration::from_secs(60)))
        .cleanup_batch(3)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    store
        .enqueue(&(0..10).map(job).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(relay.drain().await.unwrap(), 10);
    assert_eq!(store.len(), 10);
    assert_eq!(relay.housekeeping().await.unwrap(), 0);
    clock.advance(Duration::from_secs(61));
    assert_eq!(relay.housekeeping().await.unwrap(), 10);
    assert!(store.is_empty());
}

/// Polling is set to a minute: only the in-process notifier can make this fast.
#[tokio::test]
async fn notifier_wakes_an_idle_relay() {
    let store = InMemoryOutboxStore::new();
    let bus = InProcessBus::new();
    let (tx_done, mut rx_done) = mpsc::unbounded_channel();
    bus.subscribe(
        "c",
        [Binding::new("print", "#")],
        Arc::new(handler_fn(move |m: IncomingMessage| {
            let done = tx_done.clone();
            async move {
                let _ = done.send(m.id);
                Ok(())
            }
        })),
    );
    let relay = Relay::builder(Arc::new(store.clone()), Arc::new(bus))
        .poll_interval(Duration::from_secs(60), Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = relay.spawn();
    // Let the workers go idle first.
    tokio::task::yield_now().await;
    for i in 0..3 {
        store.enqueue(&[job(i)]).unwrap();
        relay.notifier().notify();
        tokio::time::timeout(Duration::from_secs(5), rx_done.recv())
            .await
            .expect("woken by notifier")
            .unwrap();
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn builder_rejects_nonsense() {
    let s = Arc::new(InMemoryOutboxStore::new());
    let p = Arc::new(InProcessBus::new());
    assert!(
        Relay::builder(s.clone(), p.clone())
            .batch_size(0)
            .build()
            .is_err()
    );
    assert!(
        Relay::builder(s.clone(), p.clone())
            .max_attempts(0)
            .build()
            .is_err()
    );
    assert!(
        Relay::builder(s.clone(), p.clone())
            .workers(0)
            .build()
            .is_err()
    );
    assert!(
        Relay::builder(s.clone(), p.clone())
            .lease(Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(
        Relay::builder(s, p)
            .poll_interval(Duration::from_secs(2), Duration::from_secs(1))
            .build()
            .is_err()
    );
}

/// Two relays in ordered mode on PostgreSQL: per key, messages arrive in
/// enqueue order and never two at a time.
#[tokio::test]
async fn postgres_two_ordered_relays_keep_per_key_order() {
    let Some(db) = common::PgTestDb::new(10).await else {
        return;
    };
    let store = PgOutboxStore::new(db.pool.clone());
    store.migrate().await.unwrap();
    let bus = InProcessBus::new();
    let in_flight: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
    let order: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
    let violations = Arc::new(AtomicU64::new(0));
    let (tx_done, mut rx_done) = mpsc::unbounded_channel();
    let (f, o, v) = (in_flight.clone(), order.clone(), violations.clone());
    let inbox = InMemoryInbox::new();
    bus.subscribe(
        "c",
        [Binding::new("print", "#")],
        Arc::new(handler_fn(move |m: IncomingMessage| {
            let (f, o, v, done, inbox) = (
                f.clone(),
                o.clone(),
                v.clone(),
                tx_done.clone(),
                inbox.clone(),
            );
            async move {
                let key = m.partition_key.clone().unwrap();
                if f.lock().insert(key.clone(), true).unwrap_or(false) {
                    v.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
                if inbox.try_begin("c", m.id) == InboxOutcome::New {
                    let idx: usize = String::from_utf8(m.payload).unwrap().parse().unwrap();
                    o.lock().entry(key.clone()).or_default().push(idx);
                    let _ = done.send(());
                }
                f.lock().insert(key, false);
                Ok(())
            }
        })),
    );
    let bus = Arc::new(bus);
    let relays: Vec<_> = (0..2)
        .map(|_| {
            Relay::builder(Arc::new(store.clone()), bus.clone())
                .mode(ClaimMode::Ordered)
                .batch_size(8)
                .workers(2)
                .build()
                .unwrap()
        })
        .collect();
    let handles: Vec<_> = relays.iter().map(Relay::spawn).collect();
    let keys = 6;
    let per_key = 30;
    for round in 0..per_key {
        let mut tx = db.pool.begin().await.unwrap();
        let msgs: Vec<_> = (0..keys)
            .map(|k| {
                OutboxMessage::new(
                    Destination::new("print", "jobs"),
                    round.to_string().into_bytes(),
                )
                .partition_key(format!("printer-{k}"))
            })
            .collect();
        store.enqueue(&mut tx, &msgs).await.unwrap();
        tx.commit().await.unwrap();
        for r in &relays {
            r.notifier().notify();
        }
    }
    recv_n(&mut rx_done, keys * per_key).await;
    for h in handles {
        h.shutdown().await;
    }
    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "two messages of one key were in flight at once"
    );
    {
        let order = order.lock();
        assert_eq!(order.len(), keys);
        for (k, seen) in order.iter() {
            assert_eq!(*seen, (0..per_key).collect::<Vec<_>>(), "order of {k}");
        }
    }
    let stats: Vec<_> = relays.iter().map(Relay::stats).collect();
    assert!(
        stats.iter().all(|s| s.published > 0),
        "both relays did work: {stats:?}"
    );
    db.cleanup().await;
}

/// The PostgreSQL inbox under concurrency: eight copies of one message, one effect.
#[tokio::test]
async fn postgres_inbox_admits_one_of_concurrent_duplicates() {
    let Some(db) = common::PgTestDb::new(10).await else {
        return;
    };
    let store = PgOutboxStore::new(db.pool.clone());
    store.migrate().await.unwrap();
    sqlx::query("CREATE TABLE effects (n INTEGER NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    let inbox = PgInbox::new(db.pool.clone());
    let id = counterfoil_outbox::MessageId::new();
    let tasks = (0..8).map(|_| {
        let (pool, inbox) = (db.pool.clone(), inbox.clone());
        async move {
            let mut tx = pool.begin().await.unwrap();
            let o = inbox.try_begin(&mut tx, "saga", id).await.unwrap();
            if o == InboxOutcome::New {
                sqlx::query("INSERT INTO effects (n) VALUES (1)")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
            o
        }
    });
    let outcomes = futures::future::join_all(tasks).await;
    assert_eq!(
        outcomes.iter().filter(|o| **o == InboxOutcome::New).count(),
        1
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Another consumer is independent.
    let mut tx = db.pool.begin().await.unwrap();
    assert_eq!(
        inbox.try_begin(&mut tx, "other", id).await.unwrap(),
        InboxOutcome::New
    );
    // A rollback forgets.
    tx.rollback().await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    assert_eq!(
        inbox.try_begin(&mut tx, "other", id).await.unwrap(),
        InboxOutcome::New
    );
    tx.commit().await.unwrap();
    // Reaper: everything is younger than the retention, then nothing is.
    use counterfoil_outbox::{InboxReaper, InboxStore};
    let reaper = InboxReaper::new(Arc::new(inbox.clone())).batch(1);
    assert_eq!(reaper.run_once().await.unwrap(), 0);
    let reaper = reaper
        .retention(Duration::ZERO)
        .clock(Arc::new(ManualClock::new(i64::MAX / 2)));
    assert_eq!(reaper.run_once().await.unwrap(), 2);
    assert!(!inbox.contains("saga", id).await.unwrap());
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_inbox_dedups_and_reaps() {
    let (pool, path) = common::sqlite_pool().await;
    SqliteOutboxStore::new(pool.clone())
        .migrate()
        .await
        .unwrap();
    let inbox = SqliteInbox::new(pool.clone());
    let id = counterfoil_outbox::MessageId::new();
    for expected in [InboxOutcome::New, InboxOutcome::Duplicate] {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        assert_eq!(
            inbox.try_begin(&mut tx, "agent", id).await.unwrap(),
            expected
        );
        tx.commit().await.unwrap();
    }
    use counterfoil_outbox::{InboxReaper, InboxStore};
    assert!(inbox.contains("agent", id).await.unwrap());
    let reaper = InboxReaper::new(Arc::new(inbox.clone()))
        .retention(Duration::from_secs(1))
        .clock(Arc::new(ManualClock::new(i64::MAX / 2)));
    assert_eq!(reaper.run_once().await.unwrap(), 1);
    assert!(!inbox.contains("agent", id).await.unwrap());
    pool.close().await;
    common::remove_sqlite(&path);
}
