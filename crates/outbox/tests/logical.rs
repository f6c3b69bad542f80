//! The WAL outbox against a real PostgreSQL with `wal_level = logical`:
//! commit and rollback, takeover between relays, a relay that dies before
//! advancing, broker outages, failed, delayed, refused and corrupt messages,
//! and per-key order.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::PgTestDb;
use counterfoil_outbox::{
    Backoff, Binding, ClaimMode, Destination, InProcessBus, IncomingMessage, LogicalRelay,
    ManualClock, OutboxMessage, OutboxStore, PgLogicalOutbox, PgOutboxStore, PublishError,
    Publisher, handler_fn,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);

/// What the scripted publisher answers for one message.
type Script = dyn Fn(&OutboxMessage) -> Result<(), PublishError> + Send + Sync;

/// Records what it publishes; answers per message as the script says.
struct Recording {
    seen: Mutex<Vec<String>>,
    script: Mutex<Arc<Script>>,
    /// When set, `publish` records the batch, then waits forever (a relay
    /// that dies between publish and advance).
    hang: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recording")
    }
}

impl Recording {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(Vec::new()),
            script: Mutex::new(Arc::new(|_| Ok(()))),
            hang: false.into(),
        })
    }

    fn script(
        &self,
        f: impl Fn(&OutboxMessage) -> Result<(), PublishError> + Send + Sync + 'static,
    ) {
        *self.script.lock() = Arc::new(f);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock())
    }
}

#[async_trait]
impl Publisher for Recording {
    async fn publish(&self, batch: &[OutboxMessage]) -> Vec<Result<(), PublishError>> {
        let script = self.script.lock().clone();
        let out: Vec<_> = batch.iter().map(|m| script(m)).collect();
        {
            let mut seen = self.seen.lock();
            for (m, r) in batch.iter().zip(&out) {
                if r.is_ok() {
                    seen.push(String::from_utf8_lossy(&m.payload).into_owned());
                }
            }
        }
        if self.hang.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        out
    }
}

fn msg(body: &str) -> OutboxMessage {
    OutboxMessage::new(
        Destination::new("payments", "captured"),
        body.as_bytes().to_vec(),
    )
}

/// A test schema with the outbox tables, and a WAL outbox with its own slot;
/// the slot, publication and schema are dropped with it, even after a failed
/// assertion.
struct Fixture {
    pool: sqlx::PgPool,
    outbox: PgLogicalOutbox,
    table: PgOutboxStore,
    clock: ManualClock,
    _guard: common::SlotGuard,
}

impl Fixture {
    async fn new() -> Option<Self> {
        let db = PgTestDb::new(8).await?;
        let clock = ManualClock::new(1_000_000_000);
        let table = PgOutboxStore::new(db.pool.clone()).with_clock(Arc::new(clock.clone()));
        table.migrate().await.unwrap();
        let name = common::unique("cfo_test");
        let outbox = PgLogicalOutbox::new(db.pool.clone())
            .name(&name)
            .unwrap()
            .with_clock(Arc::new(clock.clone()));
        outbox
            .setup()
            .await
            .expect("the WAL outbox needs wal_level = logical on the test server");
        sqlx::query("CREATE TABLE business (id BIGSERIAL PRIMARY KEY, note TEXT NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        Some(Self {
            pool: db.pool.clone(),
            _guard: common::SlotGuard {
                url: db.url().to_owned(),
                name,
                schema: Some(db.schema.clone()),
            },
            outbox,
            table,
            clock,
        })
    }

    fn relay(&self, publisher: Arc<dyn Publisher>) -> counterfoil_outbox::LogicalRelayBuilder {
        LogicalRelay::builder(self.outbox.clone(), self.table.clone(), publisher)
            .backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).without_jitter())
    }

    /// One business transaction carrying `messages` in its `BEGIN` round trip.
    async fn commit(&self, messages: &[OutboxMessage]) {
        let mut tx = self.outbox.begin(messages).await.unwrap();
        sqlx::query("INSERT INTO business (note) VALUES ('x')")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }
}

#[tokio::test]
async fn committed_messages_are_published_in_commit_order_and_rolled_back_ones_never() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let publisher = Recording::new();
    let relay = f.relay(publisher.clone()).build().unwrap();
    let mut conn = relay.acquire().await.unwrap().expect("free slot");

    f.commit(&[msg("a1"), msg("a2")]).await;
    let tx = f.outbox.begin(&[msg("rolled-back")]).await.unwrap();
    tx.rollback().await.unwrap();
    // Written later in an open transaction, with one more statement.
    let mut tx = f.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO business (note) VALUES ('y')")
        .execute(&mut *tx)
        .await
        .unwrap();
    f.outbox
        .enqueue(&mut tx, &[msg("b1"), msg("b2"), msg("b3")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A message dropped with its transaction.
    {
        let _tx = f.outbox.begin(&[msg("dropped")]).await.unwrap();
    }

    let r = relay.run_once(&mut conn).await.unwrap();
    assert_eq!((r.claimed, r.published), (5, 5));
    assert_eq!(publisher.take(), ["a1", "a2", "b1", "b2", "b3"]);
    // The slot moved past them.
    let r = relay.run_once(&mut conn).await.unwrap();
    assert_eq!(r.claimed, 0);
    assert!(publisher.take().is_empty());
    assert_eq!(relay.stats().published, 5);
}

#[tokio::test]
async fn a_relay_cut_off_before_advancing_leaves_its_round_to_the_next() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let first = Recording::new();
    first.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let relay_a = f.relay(first.clone()).build().unwrap();
    let mut conn_a = relay_a.acquire().await.unwrap().expect("free slot");
    f.commit(&[msg("m1"), msg("m2")]).await;
    f.commit(&[msg("m3")]).await;
    // Relay A publishes, then dies before it advances the slot.
    let round =
        tokio::time::timeout(Duration::from_millis(500), relay_a.run_once(&mut conn_a)).await;
    assert!(round.is_err(), "the round hangs after publishing");
    assert_eq!(first.take(), ["m1", "m2", "m3"]);
    drop(conn_a);

    // Relay B takes the slot once A's connection is gone, and publishes the
    // same round again: duplicates, nothing lost.
    let second = Recording::new();
    let relay_b = f.relay(second.clone()).build().unwrap();
    let mut conn_b = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(c) = relay_b.acquire().await.unwrap() {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let r = relay_b.run_once(&mut conn_b).await.unwrap();
    assert_eq!(r.published, 3);
    assert_eq!(second.take(), ["m1", "m2", "m3"]);
}

#[tokio::test]
async fn only_one_relay_reads_the_slot_until_its_connection_ends() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let relay = f.relay(Recording::new()).build().unwrap();
    let held = relay.acquire().await.unwrap().expect("free slot");
    assert!(
        relay.acquire().await.unwrap().is_none(),
        "the lock is taken"
    );
    use sqlx::Connection as _;
    held.close().await.unwrap();
    // The server releases the lock when the closed connection's backend
    // exits, a moment after the client has gone.
    tokio::time::timeout(WAIT, async {
        while relay.acquire().await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("free again");
}

#[tokio::test]
async fn an_outage_keeps_the_slot_where_it_is() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let publisher = Recording::new();
    let relay = f.relay(publisher.clone()).build().unwrap();
    let mut conn = relay.acquire().await.unwrap().unwrap();
    f.commit(&[msg("m1"), msg("m2")]).await;
    publisher.script(|m| {
        if m.payload == b"m2" {
            Err(PublishError::Unavailable("connection reset".into()))
        } else {
            Ok(())
        }
    });
    let r = relay.run_once(&mut conn).await.unwrap();
    assert_eq!((r.outages, r.published), (1, 0));
    assert_eq!(publisher.take(), ["m1"]);
    publisher.script(|_| Ok(()));
    let r = relay.run_once(&mut conn).await.unwrap();
    assert_eq!(r.published, 2);
    assert_eq!(publisher.take(), ["m1", "m2"], "read again, m1 twice");
    let backlog = f.table.backlog().await.unwrap();
    assert_eq!(backlog.pending, 0, "nothing was diverted for an outage");
}

#[tokio::test]
async fn failed_delayed_refused_and_corrupt_messages_leave_the_stream() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let publisher = Recording::new();
    publisher.script(|m| match m.payload.as_slice() {
        b"flaky" => Err(PublishError::Unroutable("no queue bound".into())),
        b"refused" => Err(PublishError::Rejected("malformed".into())),
        _ => Ok(()),
    });
    let relay = f.relay(publisher.clone()).max_attempts(3).build().unwrap();
    let mut conn = relay.acquire().await.unwrap().unwrap();
    f.commit(&[
        msg("ok"),
        msg("flaky"),
        msg("later").delay(Duration::from_secs(30)),
        msg("refused"),
    ])
    .await;
    // Content with the outbox's prefix that is not an envelope.
    sqlx::query("SELECT pg_logical_emit_message(true, $1, '\\x00ff'::bytea)")
        .bind(f.outbox.slot_name())
        .execute(f.pool())
        .await
        .unwrap();
    f.commit(&[msg("after")]).await;

    let r = relay.run_once(&mut conn).await.unwrap();
    assert_eq!(
        (r.claimed, r.published, r.retried, r.dead_lettered),
        (6, 2, 1, 2),
        "{r:?}"
    );
    assert_eq!(publisher.take(), ["ok", "after"]);
    let dead = f.table.dead_letters(None, 10).await.unwrap();
    let dead: Vec<_> = dead
        .iter()
        .map(|d| (d.message.payload.clone(), d.last_error.clone()))
        .collect();
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter()
            .any(|(p, e)| p == b"refused" && e.contains("malformed"))
    );
    assert!(
        dead.iter()
            .any(|(p, e)| p == &[0, 0xff] && e.contains("stream message")),
        "{dead:?}"
    );
    assert_eq!(
        f.table.backlog().await.unwrap().pending,
        2,
        "flaky and later"
    );

    // The table relay takes over: the failed one after its backoff, the
    // delayed one when due.
    publisher.script(|_| Ok(()));
    let table = relay.table_relay();
    assert_eq!(table.run_once().await.unwrap().claimed, 0, "backing off");
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(table.run_once().await.unwrap().published, 1);
    assert_eq!(publisher.take(), ["flaky"]);
    f.clock.advance(Duration::from_secs(30));
    assert_eq!(table.run_once().await.unwrap().published, 1);
    assert_eq!(publisher.take(), ["later"]);
    assert_eq!(f.table.backlog().await.unwrap().pending, 0);
}

#[tokio::test]
async fn ordered_mode_keeps_each_key_in_order_through_failures_and_delays() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let publisher = Recording::new();
    publisher.script(|m| {
        if m.payload == b"a2" {
            Err(PublishError::Nacked)
        } else {
            Ok(())
        }
    });
    let relay = f
        .relay(publisher.clone())
        .mode(ClaimMode::Ordered)
        .build()
        .unwrap();
    let mut conn = relay.acquire().await.unwrap().unwrap();
    f.commit(&[
        msg("a1").partition_key("A"),
        msg("b1").partition_key("B"),
        msg("a2").partition_key("A"),
        msg("c1").partition_key("C").delay(Duration::from_secs(5)),
        msg("a3").partition_key("A"),
        msg("b2").partition_key("B"),
        msg("c2").partition_key("C"),
        msg("free"),
    ])
    .await;
    let r = relay.run_once(&mut conn).await.unwrap();
    assert_eq!(r.published, 4, "{r:?}");
    // a1, b1, free in the first wave; b2 in the second; a3 is held behind
    // the failed a2 and c2 behind the delayed c1.
    let seen = publisher.take();
    assert_eq!(
        seen.iter().map(String::as_str).collect::<HashSet<_>>(),
        HashSet::from(["a1", "b1", "free", "b2"])
    );
    let pos = |x: &str| seen.iter().position(|s| s == x).unwrap();
    assert!(pos("b1") < pos("b2"));

    // A later message of key A joins the queue behind a2 and a3.
    f.commit(&[msg("a4").partition_key("A"), msg("b3").partition_key("B")])
        .await;
    let r = relay.run_once(&mut conn).await.unwrap();
    assert_eq!(r.published, 1);
    assert_eq!(publisher.take(), ["b3"]);

    publisher.script(|_| Ok(()));
    f.clock.advance(Duration::from_secs(5));
    let table = relay.table_relay();
    let mut order = Vec::new();
    for _ in 0..10 {
        table.run_once().await.unwrap();
        order.extend(publisher.take());
    }
    let of = |k: char| -> Vec<&str> {
        order
            .iter()
            .map(String::as_str)
            .filter(|s| s.starts_with(k))
            .collect()
    };
    assert_eq!(of('a'), ["a2", "a3", "a4"]);
    assert_eq!(of('c'), ["c1", "c2"]);
    assert_eq!(f.table.backlog().await.unwrap().pending, 0);
}

#[tokio::test]
async fn spawned_relay_delivers_every_committed_message_once_woken() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let (bus, mut rx) = recording_bus();
    let relay = f
        .relay(bus)
        .poll_interval(Duration::from_millis(5), Duration::from_secs(30))
        .build()
        .unwrap();
    let handle = relay.spawn();
    let mut expected = HashSet::new();
    for i in 0..50 {
        let body = format!("m{i}");
        expected.insert(body.clone());
        f.commit(&[msg(&body)]).await;
        relay.notifier().notify();
    }
    let mut got = HashSet::new();
    while got.len() < expected.len() {
        let m = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(got.insert(m), "delivered twice");
    }
    assert_eq!(got, expected);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_large_transaction_goes_out_in_overlapping_batches_and_is_confirmed_once_whole() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let (bus, mut rx) = recording_bus();
    let relay = f.relay(bus.clone()).batch_changes(10).build().unwrap();
    let handle = relay.spawn();
    let bodies: Vec<String> = (0..95).map(|i| format!("big-{i}")).collect();
    let msgs: Vec<_> = bodies.iter().map(|b| msg(b)).collect();
    f.commit(&msgs).await;
    let commit_lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(f.pool())
        .await
        .unwrap();
    relay.notifier().notify();
    let got = receive(&mut rx, bodies.len()).await;
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), bodies.len(), "delivered twice: {got:?}");
    assert_eq!(unique, bodies.iter().collect());

    // The commit is confirmed once every batch of it is delivered.
    tokio::time::timeout(WAIT, async {
        loop {
            let confirmed: bool = sqlx::query_scalar(
                "SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = $2",
            )
            .bind(&commit_lsn)
            .bind(f.outbox.slot_name())
            .fetch_one(f.pool())
            .await
            .unwrap();
            if confirmed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the transaction's commit is confirmed");
    handle.shutdown().await;

    // So a relay started after publishes only what came since.
    let handle = f.relay(bus).build().unwrap().spawn();
    f.commit(&[msg("after")]).await;
    assert_eq!(receive(&mut rx, 1).await, ["after"]);
    handle.shutdown().await;
}

#[tokio::test]
async fn setup_is_idempotent_and_bad_names_are_refused() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let again = [f.outbox.clone(), f.outbox.clone(), f.outbox.clone()];
    for r in futures::future::join_all(again.iter().map(|o| o.setup())).await {
        r.unwrap();
    }
    assert!(f.outbox.lag_bytes().await.unwrap().is_some());
    for bad in ["", "Upper", "semi;colon", "quote'", &"x".repeat(64)] {
        assert!(
            PgLogicalOutbox::new(f.pool().clone()).name(bad).is_err(),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn a_standby_relay_takes_over_the_stream_when_the_first_stops() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let (bus, mut rx) = recording_bus();
    let build = || {
        f.relay(bus.clone())
            .standby_interval(Duration::from_millis(50))
            .build()
            .unwrap()
    };
    let first = build().spawn();
    f.commit(&[msg("before-1"), msg("before-2")]).await;
    assert_eq!(receive(&mut rx, 2).await, ["before-1", "before-2"]);

    // A second relay stands by while the first streams.
    let second = build().spawn();
    first.shutdown().await;
    f.commit(&[msg("after")]).await;
    // The first relay may not have confirmed its last batch before it
    // stopped: then the second publishes it again before the new message.
    let mut got = receive(&mut rx, 1).await;
    while got.last().map(String::as_str) != Some("after") {
        assert!(got.len() < 4, "{got:?}");
        got.extend(receive(&mut rx, 1).await);
    }
    second.shutdown().await;
}

async fn receive(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(
            tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    got
}

/// An in-process bus whose one subscriber reports each payload.
fn recording_bus() -> (Arc<InProcessBus>, mpsc::UnboundedReceiver<String>) {
    let bus = InProcessBus::new();
    let (tx, rx) = mpsc::unbounded_channel();
    bus.subscribe(
        "c",
        [Binding::new("payments", "#")],
        Arc::new(handler_fn(move |m: IncomingMessage| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(String::from_utf8(m.payload).unwrap());
                Ok(())
            }
        })),
    );
    (Arc::new(bus), rx)
}
