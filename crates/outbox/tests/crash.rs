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

#[test]
fn relay_child() {
    if std::env::var(CHILD).as_deref() != Ok("relay") {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .try_init();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool =
            common::PgTestDb::pool_for(&child_env("PG_URL"), &child_env("PG_SCHEMA"), 4).await;
        let store = PgOutboxStore::new(pool);
        let publisher = StallAfterConfirms {
            inner: AmqpPublisher::builder(child_env("AMQP_URL"))
                .build()
                .unwrap(),
            batches: AtomicU32::new(0),
            stall_after: 3,
        };
        let relay = Relay::builder(Arc::new(store), Arc::new(publisher))
            .batch_size(50)
            .workers(1)
            .lease(Duration::from_secs(2))
            .build()
            .unwrap();
        let _handle = relay.spawn();
        std::future::pending::<()>().await;
    });
}

#[tokio::test]
async fn relay_killed_mid_batch_loses_nothing_and_the_inbox_drops_duplicates() {
    let Some(url) = common::service_url("TEST_AMQP_URL") else {
        return;
    };
    let Some(db) = common::PgTestDb::new(8).await else {
        return;
    };
    let store = PgOutboxStore::new(db.pool.clone());
    store.migrate().await.unwrap();
    sqlx::query(common::EFFECTS_DDL)
        .execute(&db.pool)
        .await
        .unwrap();
    let exchange = common::unique("ex");
    let topology = QueueTopology::new(common::unique("q")).bind(&exchange, "#");
    let (tx_seen, mut rx_seen) = mpsc::unbounded_channel();
    let consumer = AmqpConsumer::builder(
        &url,
        topology,
        common::pg_inbox_handler(db.pool.clone(), "agent", tx_seen),
    )
    .concurrency(8)
    .build()
    .unwrap();
    consumer.declare().await.unwrap();

    let n = 600;
    let mut tx = db.pool.begin().await.unwrap();
    let msgs: Vec<_> = (0..n)
        .map(|i| {
            OutboxMessage::new(
                Destination::new(&exchange, "jobs"),
                format!("{i}").into_bytes(),
            )
        })
        .collect();
    store.enqueue(&mut tx, &msgs).await.unwrap();
    tx.commit().await.unwrap();

    let mut child = spawn_child(
        "relay_child",
        "relay",
        &[
            ("PG_URL", db.url()),
            ("PG_SCHEMA", &db.schema),
            ("AMQP_URL", &url),
        ],
    );
    let line = wait_for_line(&mut child, "STALLED").await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(line, "STALLED 50");
    // Two batches were acked; the third was confirmed by the broker but not acked.
    assert_eq!(store.backlog().await.unwrap().pending, (n - 100) as u64);

    // Restart: a new relay takes over once the dead relay's lease runs out.
    let cons = consumer.spawn();
    let relay = Relay::builder(
        Arc::new(store.clone()),
        Arc::new(AmqpPublisher::builder(&url).build().unwrap()),
    )
    .poll_interval(Duration::from_millis(25), Duration::from_millis(200))
    .build()
    .unwrap();
    let relay_handle = relay.spawn();
    let (mut new, mut dup) = (std::collections::HashSet::new(), 0);
    while new.len() < n || dup < 50 {
        let s = tokio::time::timeout(WAIT, rx_seen.recv())
            .await
            .expect("deliveries stalled")
            .unwrap();
        if s.duplicate {
            dup += 1;
        } else {
            assert!(new.insert(s.id), "a second effect for {}", s.id);
        }
    }
    relay_handle.shutdown().await;
    cons.shutdown().await;
    assert_eq!(dup, 50, "exactly the unacked batch was published twice");
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(effects, n as i64);
    assert_eq!(store.backlog().await.unwrap().pending, 0);
    consumer.delete_topology(true).await.unwrap();
    db.cleanup().await;
}

#[test]
fn wal_relay_child() {
    if std::env::var(CHILD).as_deref() != Ok("wal_relay") {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .try_init();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool =
            common::PgTestDb::pool_for(&child_env("PG_URL"), &child_env("PG_SCHEMA"), 4).await;
        let outbox = PgLogicalOutbox::new(pool.clone())
            .name(&child_env("SLOT"))
            .unwrap();
        let publisher = StallAfterConfirms {
            inner: AmqpPublisher::builder(child_env("AMQP_URL"))
                .build()
                .unwrap(),
            batches: AtomicU32::new(0),
            stall_after: 3,
        };
        // Batches of at most 100 messages: one transaction each.
        let relay = LogicalRelay::builder(outbox, PgOutboxStore::new(pool), Arc::new(publisher))
            .batch_changes(100)
            .build()
            .unwrap();
        let _handle = relay.spawn();
        std::future::pending::<()>().await;
    });
}

#[tokio::test]
async fn wal_relay_killed_between_confirm_and_advance_loses_nothing() {
    let Some(url) = common::service_url("TEST_AMQP_URL") else {
        return;
    };
    let Some(db) = common::PgTestDb::new(8).await else {
        return;
    };
    let store = PgOutboxStore::new(db.pool.clone());
    store.migrate().await.unwrap();
    sqlx::query(common::EFFECTS_DDL)
        .execute(&db.pool)
        .await
        .unwrap();
    let slot = common::unique("cfo_crash");
    let _guard = common::SlotGuard {
        url: db.url().to_owned(),
        name: slot.clone(),
        schema: None,
    };
    let outbox = PgLogicalOutbox::new(db.pool.clone()).name(&slot).unwrap();
    outbox.setup().await.unwrap();
    let exchange = common::unique("ex");
    let topology = QueueTopology::new(common::unique("q")).bind(&exchange, "#");
    let (tx_seen, mut rx_seen) = mpsc::unbounded_channel();
    let consumer = AmqpConsumer::builder(
        &url,
        topology,
        common::pg_inbox_handler(db.pool.clone(), "agent", tx_seen),
    )
    .concurrency(8)
    .build()
    .unwrap();
    consumer.declare().await.unwrap();

    // Six business transactions of 100 messages each.
    let n = 600;
    for t in 0..6 {
        let msgs: Vec<_> = (0..100)
            .map(|i| {
                OutboxMessage::new(
                    Destination::new(&exchange, "jobs"),
                    format!("{}", t * 100 + i).into_bytes(),
                )
            })
            .collect();
        let tx = outbox.begin(&msgs).await.unwrap();
        tx.commit().await.unwrap();
    }

    let mut child = spawn_child(
        "wal_relay_child",
        "wal_relay",
        &[
            ("PG_URL", db.url()),
            ("PG_SCHEMA", &db.schema),
            ("AMQP_URL", &url),
            ("SLOT", &slot),
        ],
    );
    let line = wait_for_line(&mut child, "STALLED").await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The third batch was confirmed by the broker, never to PostgreSQL.
    assert_eq!(line, "STALLED 100");

    // Restart: a new relay takes the slot once the dead one's connection is gone.
    let cons = consumer.spawn();
    let relay = LogicalRelay::builder(
        outbox.clone(),
        store.clone(),
        Arc::new(AmqpPublisher::builder(&url).build().unwrap()),
    )
    .standby_interval(Duration::from_millis(100))
    .build()
    .unwrap();
    let relay_handle = relay.spawn();
    let (mut new, mut dup) = (std::collections::HashSet::new(), 0);
    while new.len() < n || dup < 100 {
        let s = tokio::time::timeout(WAIT, rx_seen.recv())
            .await
            .expect("deliveries stalled")
            .unwrap();
        if s.duplicate {
            dup += 1;
        } else {
            assert!(new.insert(s.id), "a second effect for {}", s.id);
        }
    }
    relay_handle.shutdown().await;
    cons.shutdown().await;
    // The stalled round was confirmed by the broker but never to
    // PostgreSQL, so it is published again; earlier rounds may be too, if
    // the child was killed before its last status update reached the server.
    assert!(dup >= 100, "{dup}");
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(effects, n as i64);
    assert_eq!(
        outbox.lag_bytes().await.unwrap().map(|l| l < 1 << 20),
        Some(true)
    );
    consumer.delete_topology(true).await.unwrap();
    drop(_guard);
    db.cleanup().await;
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
    let Some(db) = common::PgTestDb::new(4).await else {
        return;
    };
    PgOutboxStore::new(db.pool.clone()).migrate().await.unwrap();
    sqlx::query(common::EFFECTS_DDL)
        .execute(&db.pool)
        .await
        .unwrap();
    let exchange = common::unique("ex");
    let queue = common::unique("q");
    let topology = QueueTopology::new(&queue).bind(&exchange, "#");
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
