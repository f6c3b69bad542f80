//! RabbitMQ restarted (`rabbitmqctl stop_app` / `start_app`) while the relay
//! publishes and the consumer consumes: nothing is lost, nothing applied twice.
//!
//! Kept in its own test binary because it disturbs the shared broker; the
//! broker is started again even when the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use counterfoil_outbox::{
    AmqpConsumer, AmqpPublisher, Backoff, Destination, OutboxMessage, OutboxStore, QueueTopology,
    Relay,
};
use tokio::sync::mpsc;

fn rabbitmqctl(arg: &str) {
    let out = Command::new("rabbitmqctl")
        .arg(arg)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the broker application again on drop if it was left stopped.
struct BrokerGuard(Arc<AtomicBool>);

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        if self.0.load(Ordering::SeqCst) {
            let _ = Command::new("rabbitmqctl").arg("start_app").status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_during_publishing_loses_nothing() {
    let Some(url) = common::service_url("TEST_AMQP_URL") else {
        return;
    };
    let Some((db, store)) = common::outbox_db(12).await else {
        return;
    };
    let exchange = common::unique("ex");
    let topology = QueueTopology::new(common::unique("q")).bind(&exchange, "#");
    let _queues = common::TopologyGuard::new(&url, &topology);
    let (tx_seen, mut rx_seen) = mpsc::unbounded_channel();
    let consumer = AmqpConsumer::builder(
        &url,
        topology,
        common::pg_inbox_handler(db.pool.clone(), "agent", tx_seen),
    )
    .concurrency(8)
    .reconnect_backoff(Backoff::new(
        Duration::from_millis(100),
        Duration::from_millis(500),
    ))
    .build()
    .unwrap();
    consumer.declare().await.unwrap();
    let consumer_handle = consumer.spawn();
    let relay = Relay::builder(
        Arc::new(store.clone()),
        Arc::new(
            AmqpPublisher::builder(&url)
                .confirm_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        ),
    )
    .batch_size(50)
    .outage_backoff(Backoff::new(
        Duration::from_millis(50),
        Duration::from_millis(500),
    ))
    .build()
    .unwrap();
    let relay_handle = relay.spawn();

    let stopped = Arc::new(AtomicBool::new(false));
    let _guard = BrokerGuard(stopped.clone());
    let (txs, per_tx) = (80, 25);
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for t in 0..txs {
        pace.tick().await;
        let mut tx = db.pool.begin().await.unwrap();
        let msgs: Vec<_> = (0..per_tx)
            .map(|i| {
                OutboxMessage::new(
                    Destination::new(&exchange, "jobs"),
                    format!("{t}-{i}").into_bytes(),
                )
            })
            .collect();
        store.enqueue(&mut tx, &msgs).await.unwrap();
        relay.notifier().commit(tx).await.unwrap();
        if t == 20 {
            stopped.store(true, Ordering::SeqCst);
            tokio::task::spawn_blocking(|| rabbitmqctl("stop_app"))
                .await
                .unwrap();
        }
        if t == 30 {
            tokio::task::spawn_blocking(|| rabbitmqctl("start_app"))
                .await
                .unwrap();
            stopped.store(false, Ordering::SeqCst);
        }
    }
    let n = txs * per_tx;
    let mut new = HashSet::new();
    while new.len() < n {
        let s = tokio::time::timeout(Duration::from_secs(90), rx_seen.recv())
            .await
            .unwrap_or_else(|_| panic!("stalled at {} of {n}", new.len()))
            .unwrap();
        if !s.duplicate {
            assert!(new.insert(s.id));
        }
    }
    relay_handle.shutdown().await;
    consumer_handle.shutdown().await;
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(effects, n as i64);
    assert_eq!(store.backlog().await.unwrap().pending, 0);
    assert_eq!(
        store.backlog().await.unwrap().dead,
        0,
        "an outage must not dead-letter messages"
    );
    let stats = relay.stats();
    eprintln!("relay stats across the restart: {stats:?}");
    assert!(stats.failed > 0, "the restart happened while publishing");
    consumer.delete_topology(true).await.unwrap();
    db.cleanup().await;
}
