//! Against the real RabbitMQ and PostgreSQL: relays, publisher confirms,
//! returned messages, the consumer helper and the inbox.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use counterfoil_outbox::{
    AmqpConsumer, AmqpPublisher, Backoff, ClaimMode, Destination, HandlerError, IncomingMessage,
    ManualClock, OutboxMessage, OutboxStore, PgOutboxStore, PublishError, Publisher, QueueTopology,
    Relay, handler_fn,
};
use lapin::options::BasicGetOptions;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);

async fn dlq_messages(url: &str, dlq: &str, expected: usize) -> Vec<Vec<u8>> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < expected {
        assert!(
            Instant::now() < deadline,
            "dead-letter queue got {} of {expected}",
            out.len()
        );
        match ch
            .basic_get(dlq.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => out.push(m.delivery.data.clone()),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let _ = conn.close(200, "bye".into()).await;
    out
}

/// Two relays in ordered mode publish to one quorum queue; a single
/// consumer with the inbox sees every key in enqueue order, each once.
#[tokio::test]
async fn two_relays_keep_per_key_order_through_rabbitmq() {
    let Some(url) = common::service_url("TEST_AMQP_URL") else {
        return;
    };
    let Some((db, store)) = common::outbox_db(12).await else {
        return;
    };
    let exchange = common::unique("ex");
    let topology = QueueTopology::new(common::unique("q")).bind(&exchange, "jobs.#");
    let _queues = common::TopologyGuard::new(&url, &topology);
    let (tx_seen, mut rx_seen) = mpsc::unbounded_channel();
    let consumer = AmqpConsumer::builder(
        &url,
        topology.clone(),
        common::pg_inbox_handler(db.pool.clone(), "agent", tx_seen),
    )
    .build()
    .unwrap();
    consumer.declare().await.unwrap();
    let ch = consumer.spawn();

    let relays: Vec<_> = (0..2)
        .map(|_| {
            let publisher = AmqpPublisher::builder(&url).build().unwrap();
            Relay::builder(Arc::new(store.clone()), Arc::new(publisher))
                .mode(ClaimMode::Ordered)
                .batch_size(16)
                .workers(2)
                .build()
                .unwrap()
        })
        .collect();
    let handles: Vec<_> = relays.iter().map(Relay::spawn).collect();

    let (keys, per_key) = (5, 40);
    for round in 0..per_key {
        let mut tx = db.pool.begin().await.unwrap();
        let msgs: Vec<_> = (0..keys)
            .map(|k| {
                OutboxMessage::new(
                    Destination::new(&exchange, format!("jobs.printer{k}")),
                    round.to_string().into_bytes(),
                )
                .partition_key(format!("printer-{k}"))
                .correlation_id(format!("pay-{round}"))
            })
            .collect();
        store.enqueue(&mut tx, &msgs).await.unwrap();
        tx.commit().await.unwrap();
        relays[round % 2].notifier().notify();
    }
    // A delayed message, enqueued last, arrives no earlier than its delay.
    let enqueued = Instant::now();
    let mut tx = db.pool.begin().await.unwrap();
    store
        .enqueue(
            &mut tx,
            &[
                OutboxMessage::new(Destination::new(&exchange, "jobs.later"), b"later".to_vec())
                    .delay(Duration::from_millis(300)),
            ],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let seen = common::recv_n(&mut rx_seen, keys * per_key + 1, WAIT).await;
    let arrived_late = seen.iter().any(|s| s.payload == b"later");
    assert!(arrived_late);
    assert!(enqueued.elapsed() >= Duration::from_millis(300));
    let mut order: HashMap<String, Vec<usize>> = HashMap::new();
    for s in seen
        .iter()
        .filter(|s| !s.duplicate && s.partition_key.is_some())
    {
        let idx = String::from_utf8(s.payload.clone())
            .unwrap()
            .parse()
            .unwrap();
        order
            .entry(s.partition_key.clone().unwrap())
            .or_default()
            .push(idx);
    }
    assert_eq!(order.len(), keys);
    for (k, v) in &order {
        assert_eq!(*v, (0..per_key).collect::<Vec<_>>(), "order of {k}");
    }
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(effects, (keys * per_key + 1) as i64);
    for h in handles {
        h.shutdown().await;
    }
    ch.shutdown().await;
    assert_eq!(store.backlog().await.unwrap().pending, 0);
    consumer.delete_topology(true).await.unwrap();
    db.cleanup().await;
}

/// `mandatory` publishes: a message no queue is bound for, and one for an
/// exchange that does not exist, fail, retry with backoff and end as dead
/// letters; a good message in the same batch is confirmed.
#[tokio::test]
async fn unroutable_messages_are_retried_then_dead_lettered() {
    let Some(url) = common::service_url("TEST_AMQP_URL") else {
        return;
    };
    let Some(db) = common::PgTestDb::new(4).await else {
        return;
    };
    let clock = ManualClock::new(1_800_000_000_000);
    let store = PgOutboxStore::new(db.pool.clone()).with_clock(Arc::new(clock.clone()));
    store.migrate().await.unwrap();
    let exchange = common::unique("ex");
    let topology = QueueTopology::new(common::unique("q")).bind(&exchange, "jobs.#");
    let _queues = common::TopologyGuard::new(&url, &topology);
    let consumer = AmqpConsumer::builder(
        &url,
        topology,
        Arc::new(handler_fn(|_m: IncomingMessage| async { Ok(()) })),
    )
    .build()
    .unwrap();
    consumer.declare().await.unwrap();
    let publisher = Arc::new(AmqpPublisher::builder(&url).build().unwrap());
    let relay = Relay::builder(Arc::new(store.clone()), publisher.clone())
        .clock(Arc::new(clock.clone()))
        .max_attempts(2)
        .backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).without_jitter())
        .build()
        .unwrap();
    let no_route = OutboxMessage::new(Destination::new(&exchange, "nobody.home"), b"x".to_vec());
    let no_exchange = OutboxMessage::new(
        Destination::new(common::unique("missing"), "jobs.a"),
        b"y".to_vec(),
    );
    let good = OutboxMessage::new(Destination::new(&exchange, "jobs.a"), b"z".to_vec());
    let mut tx = db.pool.begin().await.unwrap();
    store
        .enqueue(&mut tx, &[no_route.clone(), no_exchange.clone(), good])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let r = relay.run_once().await.unwrap();
    assert_eq!((r.claimed, r.published, r.retried), (3, 1, 2));
    assert_eq!(relay.run_once().await.unwrap().claimed, 0, "backing off");
    clock.advance(Duration::from_secs(1));
    let r = relay.run_once().await.unwrap();
    assert_eq!((r.claimed, r.dead_lettered), (2, 2));
    let dead = store.dead_letters(None, 10).await.unwrap();
    let by_id: HashMap<_, _> = dead.iter().map(|d| (d.message.id, d)).collect();
    assert!(
        by_id[&no_route.id].last_error.contains("NO_ROUTE"),
        "{}",
        by_id[&no_route.id].last_error
    );
    assert!(by_id[&no_exchange.id].last_error.contains("does not exist"));
    assert_eq!(by_id[&no_route.id].attempts, 2);
    // The publisher's channel survived: direct publishes still confirm.
    let ok = OutboxMessage::new(Destination::new(&exchange, "jobs.b"), b"ok".to_vec());
    assert_eq!(publisher.publish(&[ok]).await, vec![Ok(())]);
    let bad = OutboxMessage::new(Destination::new(&exchange, "none"), b"no".to_vec());
    assert!(matches!(
        publisher.publish(&[bad]).await[0],
        Err(PublishError::Unroutable(_))
    ));
    consumer.delete_topology(true).await.unwrap();
    db.cleanup().await;
}

/// A message the handler can never process is retried up to the queue's
/// delivery limit and dead-lettered by the broker; a rejected one goes at
/// once; neither holds up the others.
#[tokio::test]
async fn consumer_poison_message_goes_to_the_dead_letter_queue() {
    let Some(url) = common::service_url("TEST_AMQP_URL") else {
        return;
    };
    let exchange = common::unique("ex");
    let topology = QueueTopology::new(common::unique("q"))
        .bind(&exchange, "#")
        .delivery_limit(2);
    let _queues = common::TopologyGuard::new(&url, &topology);
    let dlq = topology.dead_letter_queue();
    let (tx_ok, mut rx_ok) = mpsc::unbounded_channel();
    let handler = handler_fn(move |m: IncomingMessage| {
        let ok = tx_ok.clone();
        async move {
            match m.payload.as_slice() {
                b"poison" => Err(HandlerError::retry("cannot print")),
                b"garbage" => Err(HandlerError::reject("not a print job")),
                _ => {
                    let _ = ok.send(m.delivery_count);
                    Ok(())
                }
            }
        }
    });
    let consumer = AmqpConsumer::builder(&url, topology, Arc::new(handler))
        .concurrency(4)
        .retry_backoff(Backoff::new(
            Duration::from_millis(5),
            Duration::from_millis(20),
        ))
        .build()
        .unwrap();
    consumer.declare().await.unwrap();
    let handle = consumer.spawn();
    let publisher = AmqpPublisher::builder(&url).build().unwrap();
    let mut batch = vec![
        OutboxMessage::new(Destination::new(&exchange, "a"), b"poison".to_vec()),
        OutboxMessage::new(Destination::new(&exchange, "a"), b"garbage".to_vec()),
    ];
    batch.extend((0..20).map(|i| {
        OutboxMessage::new(
            Destination::new(&exchange, "a"),
            format!("ok-{i}").into_bytes(),
        )
    }));
    assert!(publisher.publish(&batch).await.iter().all(Result::is_ok));
    let counts = common::recv_n(&mut rx_ok, 20, WAIT).await;
    assert!(counts.iter().all(|c| *c == 1));
    let mut dead = dlq_messages(&url, &dlq, 2).await;
    dead.sort();
    assert_eq!(dead, vec![b"garbage".to_vec(), b"poison".to_vec()]);
    handle.shutdown().await;
    consumer.delete_topology(true).await.unwrap();
}

/// A broker that accepts the connection and then says nothing (a half-dead
/// peer, a frozen link) holds neither a consumer nor a publisher: each gives
/// up on the exchange within its bound and tries again.
#[tokio::test]
async fn a_silent_broker_holds_neither_the_consumer_nor_the_publisher() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = tx.send(());
        }
    });
    let url = format!("amqp://guest:guest@{addr}/%2f");
    let handler = handler_fn(|_m: IncomingMessage| async { Ok(()) });
    let consumer = AmqpConsumer::builder(&url, QueueTopology::new("silent"), Arc::new(handler))
        .reconnect_backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(10),
        ))
        .build()
        .unwrap();
    let handle = consumer.spawn();
    // The first connection, then a second once the first was given up.
    common::recv_n(&mut rx, 2, Duration::from_secs(30)).await;
    handle.shutdown().await;

    let publisher = AmqpPublisher::builder(&url).build().unwrap();
    let message = OutboxMessage::new(Destination::new("x", "y"), b"p".to_vec());
    let r = tokio::time::timeout(Duration::from_secs(30), publisher.publish(&[message]))
        .await
        .expect("the publisher gives up on a silent broker");
    assert!(matches!(&r[0], Err(e) if e.is_outage()), "{r:?}");
}

#[tokio::test]
async fn publisher_reports_an_unreachable_broker_as_an_outage() {
    let publisher = AmqpPublisher::builder("amqp://guest:guest@127.0.0.1:1/%2f")
        .build()
        .unwrap();
    let r = publisher
        .publish(&[OutboxMessage::new(
            Destination::new("x", "y"),
            b"p".to_vec(),
        )])
        .await;
    assert!(matches!(&r[0], Err(e) if e.is_outage()), "{r:?}");
    assert!(
        AmqpPublisher::builder("amqp://x")
            .window(0)
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn publisher_can_declare_its_exchanges() {
    let Some(url) = common::service_url("TEST_AMQP_URL") else {
        return;
    };
    let exchange = common::unique("ex");
    let publisher = AmqpPublisher::builder(&url).build().unwrap();
    let msg = OutboxMessage::new(Destination::new(&exchange, "a"), b"p".to_vec());
    // Missing exchange: unroutable, detected without breaking the channel.
    assert!(matches!(
        publisher.publish(std::slice::from_ref(&msg)).await[0],
        Err(PublishError::Unroutable(_))
    ));
    publisher.declare_exchanges(&[&exchange]).await.unwrap();
    publisher.declare_exchanges(&[&exchange]).await.unwrap();
    // Exists now, but nothing is bound: still unroutable (returned by the broker).
    match &publisher.publish(std::slice::from_ref(&msg)).await[0] {
        Err(PublishError::Unroutable(why)) => assert!(why.contains("NO_ROUTE"), "{why}"),
        other => panic!("{other:?}"),
    }
    let topology = QueueTopology::new(common::unique("q")).bind(&exchange, "#");
    let _queues = common::TopologyGuard::new(&url, &topology);
    let consumer = AmqpConsumer::builder(
        &url,
        topology,
        Arc::new(handler_fn(|_m: IncomingMessage| async { Ok(()) })),
    )
    .build()
    .unwrap();
    consumer.declare().await.unwrap();
    assert_eq!(
        publisher.publish(std::slice::from_ref(&msg)).await,
        vec![Ok(())]
    );
    consumer.delete_topology(true).await.unwrap();
}
