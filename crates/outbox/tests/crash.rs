//! Crash tests with real child processes killed by SIGKILL: a relay killed
//! between publish and ack, and a consumer killed between commit and ack.
//! Nothing is lost; the inbox turns every redelivery into a no-op.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use counterfoil_outbox::{
    AmqpConsumer, AmqpPublisher, Destination, HandlerError, InboxOutcome, IncomingMessage,
    LogicalRelay, OutboxMessage, OutboxStore, PgInbox, PgLogicalOutbox, PgOutboxStore,
    PublishError, Publisher, QueueTopology, Relay, handler_fn,
};
use tokio::sync::mpsc;

const CHILD: &str = "OUTBOX_CRASH_CHILD";
const WAIT: Duration = Duration::from_secs(60);

fn child_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set for child"))
}

fn spawn_child(test: &str, role: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(CHILD, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Blocks until the child prints a line starting with `marker`; returns the line.
async fn wait_for_line(child: &mut Child, marker: &'static str) -> String {
    let stdout = child.stdout.take().unwrap();
    tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || {
            for line in BufReader::new(stdout).lines() {
                // libtest may have printed "test name ... " on the same line.
                let line = line.unwrap();
                if let Some(at) = line.find(marker) {
                    return line[at..].to_owned();
                }
            }
            panic!("child exited before printing {marker}");
        }),
    )
    .await
    .expect("child too slow")
    .unwrap()
}

/// Publishes through the real broker, then, after `stall_after` batches,
/// hangs after the confirms and before returning, so the relay never acks.
#[derive(Debug)]
struct StallAfterConfirms {
    inner: AmqpPublisher,
    batches: AtomicU32,
    stall_after: u32,
}

#[async_trait]
impl Publisher for StallAfterConfirms {
    async fn publish(&self, batch: &[OutboxMessage]) -> Vec<Result<(), PublishError>> {
        let r = self.inner.publish(batch).await;
        if self.batches.fetch_add(1, Ordering::SeqCst) + 1 >= self.stall_after {
            assert!(r.iter().all(Result::is_ok));
            println!("STALLED {}", batch.len());
            std::future::pending::<()>().await;
        }
        r
    }
}

/// Runs a relay child: a tracing subscriber, a runtime, a pool on the
/// parent's schema and a publisher that stalls after its third batch; `start`
/// spawns the relay, which then runs until the parent kills the process.
fn run_stalling_relay(
    start: impl FnOnce(sqlx::PgPool, StallAfterConfirms) -> counterfoil_outbox::RelayHandle,
) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .try_init();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool =
            common::PgTestDb::pool_for(&child_env("PG_URL"), &child_env("PG_SCHEMA"), 4).await;
        let publisher = StallAfterConfirms {
            inner: AmqpPublisher::builder(child_env("AMQP_URL"))
                .build()
                .unwrap(),
            batches: AtomicU32::new(0),
            stall_after: 3,
        };
        let _handle = start(pool, publisher);
        std::future::pending::<()>().await;
    });
}

/// A test schema with the outbox tables and an effects table, and a
/// declared consumer whose handler records effects through the inbox.
struct CrashScene {
    url: String,
    db: common::PgTestDb,
    store: PgOutboxStore,
    exchange: String,
    consumer: AmqpConsumer,
    seen: mpsc::UnboundedReceiver<common::Seen>,
    _queues: common::TopologyGuard,
}

impl CrashScene {
    async fn new() -> Option<Self> {
        let url = common::service_url("TEST_AMQP_URL")?;
        let (db, store) = common::outbox_db(8).await?;
        let exchange = common::unique("ex");
        let topology = QueueTopology::new(common::unique("q")).bind(&exchange, "#");
        let queues = common::TopologyGuard::new(&url, &topology);
        let (tx_seen, seen) = mpsc::unbounded_channel();
        let consumer = AmqpConsumer::builder(
            &url,
            topology,
            common::pg_inbox_handler(db.pool.clone(), "agent", tx_seen),
        )
        .concurrency(8)
        .build()
        .unwrap();
        consumer.declare().await.unwrap();
        Some(Self {
            url,
            db,
            store,
            exchange,
            consumer,
            seen,
            _queues: queues,
        })
    }

    fn messages(&self, from: usize, n: usize) -> Vec<OutboxMessage> {
        (from..from + n)
            .map(|i| {
                OutboxMessage::new(
                    Destination::new(&self.exchange, "jobs"),
                    format!("{i}").into_bytes(),
                )
            })
            .collect()
    }

    /// Receives until `n` distinct effects and at least `dups` dropped
    /// duplicates were seen; returns the duplicates. Fails on a second
    /// effect of one message.
    async fn effects(&mut self, n: usize, dups: usize) -> usize {
        let (mut new, mut dup) = (std::collections::HashSet::new(), 0);
        while new.len() < n || dup < dups {
            let s = tokio::time::timeout(WAIT, self.seen.recv())
                .await
                .expect("deliveries stalled")
                .unwrap();
            if s.duplicate {
                dup += 1;
            } else {
                assert!(new.insert(s.id), "a second effect for {}", s.id);
            }
        }
        let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
        assert_eq!(effects, n as i64);
        dup
    }

    async fn cleanup(self) {
        self.consumer.delete_topology(true).await.unwrap();
        self.db.cleanup().await;
    }
}

#[test]
fn relay_child() {
    if std::env::var(CHILD).as_deref() != Ok("relay") {
        return;
    }
    run_stalling_relay(|pool, publisher| {
        Relay::builder(Arc::new(PgOutboxStore::new(pool)), Arc::new(publisher))
            .batch_size(50)
            .workers(1)
            .lease(Duration::from_secs(2))
            .build()
            .unwrap()
            .spawn()
    });
}

#[tokio::test]
async fn relay_killed_mid_batch_loses_nothing_and_the_inbox_drops_duplicates() {
    let Some(mut scene) = CrashScene::new().await else {
        return;
    };
    let n = 600;
    let mut tx = scene.db.pool.begin().await.unwrap();
    scene
        .store
        .enqueue(&mut tx, &scene.messages(0, n))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut child = spawn_child(
        "relay_child",
        "relay",
        &[
            ("PG_URL", scene.db.url()),
            ("PG_SCHEMA", &scene.db.schema),
            ("AMQP_URL", &scene.url),
        ],
    );
    let line = wait_for_line(&mut child, "STALLED").await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(line, "STALLED 50");
    // Two batches were acked; the third was confirmed by the broker but not acked.
    assert_eq!(
        scene.store.backlog().await.unwrap().pending,
        (n - 100) as u64
    );

    // Restart: a new relay takes over once the dead relay's lease runs out.
    let cons = scene.consumer.spawn();
    let relay = Relay::builder(
        Arc::new(scene.store.clone()),
        Arc::new(AmqpPublisher::builder(&scene.url).build().unwrap()),
    )
    .poll_interval(Duration::from_millis(25), Duration::from_millis(200))
    .build()
    .unwrap();
    let relay_handle = relay.spawn();
    let dup = scene.effects(n, 50).await;
    relay_handle.shutdown().await;
    cons.shutdown().await;
    assert_eq!(dup, 50, "exactly the unacked batch was published twice");
    assert_eq!(scene.store.backlog().await.unwrap().pending, 0);
    scene.cleanup().await;
}

#[test]
fn wal_relay_child() {
    if std::env::var(CHILD).as_deref() != Ok("wal_relay") {
        return;
    }
    run_stalling_relay(|pool, publisher| {
        let outbox = PgLogicalOutbox::new(pool.clone())
            .name(&child_env("SLOT"))
            .unwrap();
        // Batches of at most 100 messages.
        LogicalRelay::builder(outbox, PgOutboxStore::new(pool), Arc::new(publisher))
            .batch_changes(100)
            .build()
            .unwrap()
            .spawn()
    });
}

#[tokio::test]
async fn wal_relay_killed_between_confirm_and_advance_loses_nothing() {
    let Some(mut scene) = CrashScene::new().await else {
        return;
    };
    let slot = common::unique("cfo_crash");
    let guard = common::SlotGuard {
        url: scene.db.url().to_owned(),
        name: slot.clone(),
        schema: None,
    };
    let outbox = PgLogicalOutbox::new(scene.db.pool.clone())
        .name(&slot)
        .unwrap();
    outbox.setup().await.unwrap();
    // Three business transactions of 200 messages each: larger than the
    // child's batches, so it publishes parts of transactions, whose commits
    // it must not confirm before the rest is out.
    let n = 600;
    for t in 0..3 {
        let tx = outbox.begin(&scene.messages(t * 200, 200)).await.unwrap();
        tx.commit().await.unwrap();
    }

    let mut child = spawn_child(
        "wal_relay_child",
        "wal_relay",
        &[
            ("PG_URL", scene.db.url()),
            ("PG_SCHEMA", &scene.db.schema),
            ("AMQP_URL", &scene.url),
            ("SLOT", &slot),
        ],
    );
    let line = wait_for_line(&mut child, "STALLED").await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The third batch (what had arrived of the stream: a transaction or
    // part of one) was confirmed by the broker, never to PostgreSQL.
    let stalled: usize = line
        .strip_prefix("STALLED ")
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(stalled > 0);

    // Restart: a new relay takes the slot once the dead one's connection is gone.
    let cons = scene.consumer.spawn();
    let relay = LogicalRelay::builder(
        outbox.clone(),
        scene.store.clone(),
        Arc::new(AmqpPublisher::builder(&scene.url).build().unwrap()),
    )
    .standby_interval(Duration::from_millis(100))
    .build()
    .unwrap();
    let relay_handle = relay.spawn();
    let dup = scene.effects(n, stalled).await;
    relay_handle.shutdown().await;
    cons.shutdown().await;
    // The stalled batch was confirmed by the broker but never to
    // PostgreSQL, so it is published again (with the rest of its
    // transaction); earlier ones may be too, if the child was killed before
    // its last status update reached the server.
    assert!(dup >= stalled, "{dup} < {stalled}");
    assert_eq!(
        outbox.lag_bytes().await.unwrap().map(|l| l < 1 << 20),
        Some(true),
        "the slot confirmed what was published"
    );
    drop(guard);
    scene.cleanup().await;
}

#[test]
fn consumer_child() {
    if std::env::var(CHILD).as_deref() != Ok("consumer") {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .try_init();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool =
            common::PgTestDb::pool_for(&child_env("PG_URL"), &child_env("PG_SCHEMA"), 4).await;
        let inbox = PgInbox::new(pool.clone());
        let handler = handler_fn(move |m: IncomingMessage| {
            let (pool, inbox) = (pool.clone(), inbox.clone());
            async move {
                let mut tx = pool.begin().await.map_err(HandlerError::retry)?;
                assert_eq!(
                    inbox.try_begin(&mut tx, "agent", m.id).await.unwrap(),
                    InboxOutcome::New
                );
                sqlx::query("INSERT INTO effects (message_id, payload) VALUES ($1, $2)")
                    .bind(m.id.as_uuid())
                    .bind(&m.payload)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                println!("COMMITTED {}", m.id);
                // Killed here: committed, never acknowledged.
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        let topology = QueueTopology::new(child_env("QUEUE")).bind(child_env("EXCHANGE"), "#");
        let consumer = AmqpConsumer::builder(child_env("AMQP_URL"), topology, Arc::new(handler))
            .build()
            .unwrap();
        consumer
            .run(tokio_util::sync::CancellationToken::new())
            .await;
    });
}

#[tokio::test]
async fn consumer_killed_after_commit_before_ack_applies_the_effect_once() {
    let Some(url) = common::service_url("TEST_AMQP_URL") else {
        return;
    };
    let Some((db, _)) = common::outbox_db(4).await else {
        return;
    };
    let exchange = common::unique("ex");
    let queue = common::unique("q");
    let topology = QueueTopology::new(&queue).bind(&exchange, "#");
    let _queues = common::TopologyGuard::new(&url, &topology);
    let (tx_seen, mut rx_seen) = mpsc::unbounded_channel();
    let consumer = AmqpConsumer::builder(
        &url,
        topology,
        common::pg_inbox_handler(db.pool.clone(), "agent", tx_seen),
    )
    .build()
    .unwrap();
    consumer.declare().await.unwrap();
    let msg = OutboxMessage::new(
        Destination::new(&exchange, "receipt.printed"),
        b"receipt-1".to_vec(),
    );
    let publisher = AmqpPublisher::builder(&url).build().unwrap();
    assert_eq!(
        publisher.publish(std::slice::from_ref(&msg)).await,
        vec![Ok(())]
    );

    let mut child = spawn_child(
        "consumer_child",
        "consumer",
        &[
            ("PG_URL", db.url()),
            ("PG_SCHEMA", &db.schema),
            ("AMQP_URL", &url),
            ("QUEUE", &queue),
            ("EXCHANGE", &exchange),
        ],
    );
    let line = wait_for_line(&mut child, "COMMITTED").await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(line, format!("COMMITTED {}", msg.id));

    let handle = consumer.spawn();
    let seen = common::recv_n(&mut rx_seen, 1, WAIT).await;
    handle.shutdown().await;
    assert_eq!(seen[0].id, msg.id);
    assert!(
        seen[0].duplicate,
        "the redelivered message must be recognised by the inbox"
    );
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(effects, 1);
    consumer.delete_topology(true).await.unwrap();
    db.cleanup().await;
}
