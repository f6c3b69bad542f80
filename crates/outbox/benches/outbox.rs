//! Outbox benchmarks against the real PostgreSQL and RabbitMQ, each with its
//! raw baseline in the same run. Run with
//! `TEST_POSTGRES_URL=... TEST_AMQP_URL=... cargo bench -p counterfoil-outbox --all-features --bench outbox`.
//!
//! 1. relay throughput to a quorum queue vs a raw lapin publisher with
//!    pipelined confirms to the same queue;
//! 2. business-transaction commits/s at 32 connections with and without an
//!    outbox row, and with a WAL outbox message instead of a row: a
//!    single-row insert, and (interleaved rounds) a payment's acceptance of
//!    three statements;
//! 3. commit -> broker-confirm latency at 2,000 msg/s (p50, p99);
//! 4. the rate of the full loop outbox -> RabbitMQ -> consumer -> inbox;
//! 5. the WAL outbox's relay throughput and commit -> confirm latency.
//!
//! The WAL outbox figures need `wal_level = logical`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use counterfoil_outbox::{
    AmqpConsumer, AmqpPublisher, Destination, HandlerError, InboxOutcome, IncomingMessage,
    LogicalRelay, MessageId, OutboxMessage, PgInbox, PgLogicalOutbox, PgOutboxStore, PublishError,
    Publisher, QueueTopology, Relay, handler_fn,
};
use criterion::Criterion;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use parking_lot::Mutex;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::runtime::Runtime;

const MSGS: usize = 5_000;
const PAYLOAD: &[u8] = &[b'x'; 256];

struct Env {
    rt: Runtime,
    pg_url: String,
    amqp_url: String,
    schema: String,
    pool: PgPool,
    store: PgOutboxStore,
    wal: PgLogicalOutbox,
    exchange: String,
    topology: QueueTopology,
}

/// What a business transaction carries besides its payment row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// Nothing: the baseline.
    Bare,
    /// An outbox row, inserted by `PgOutboxStore::enqueue`.
    Row,
    /// A WAL outbox message, sent with `BEGIN` by `PgLogicalOutbox::begin`.
    Wal,
}

fn setup() -> Option<Env> {
    let (Ok(pg_url), Ok(amqp_url)) = (
        std::env::var("TEST_POSTGRES_URL"),
        std::env::var("TEST_AMQP_URL"),
    ) else {
        eprintln!("skipping outbox benchmarks: TEST_POSTGRES_URL and TEST_AMQP_URL must be set");
        return None;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let schema = format!("outbox_bench_{}", uuid::Uuid::new_v4().simple());
    let (pool, store, wal, exchange, topology) = rt.block_on(async {
        let admin = PgPool::connect(&pg_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.unwrap();
        admin.close().await;
        let opts = PgConnectOptions::from_str(&pg_url).unwrap().options([("search_path", schema.as_str())]);
        let pool = PgPoolOptions::new().max_connections(40).connect_with(opts).await.unwrap();
        let store = PgOutboxStore::new(pool.clone());
        store.migrate().await.unwrap();
        let wal = PgLogicalOutbox::new(pool.clone()).name(&schema).unwrap();
        wal.setup().await.expect("the WAL outbox figures need wal_level = logical");
        for ddl in [
            "CREATE TABLE payments (id BIGSERIAL PRIMARY KEY, amount_minor BIGINT NOT NULL, currency TEXT NOT NULL)",
            "CREATE TABLE effects (message_id UUID PRIMARY KEY)",
            "CREATE TABLE printers (id TEXT PRIMARY KEY, restaurant TEXT NOT NULL)",
            "INSERT INTO printers VALUES ('p1', 'r1')",
            "CREATE TABLE events (id BIGSERIAL PRIMARY KEY, restaurant TEXT NOT NULL, kind TEXT NOT NULL, subject BIGINT NOT NULL, data TEXT NOT NULL)",
            "CREATE INDEX events_restaurant ON events (restaurant, id)",
        ] {
            sqlx::query(ddl).execute(&pool).await.unwrap();
        }
        let exchange = format!("bench_ex_{}", uuid::Uuid::new_v4().simple());
        let topology = QueueTopology::new(format!("bench_q_{}", uuid::Uuid::new_v4().simple())).bind(&exchange, "#");
        let noop = Arc::new(handler_fn(|_m: IncomingMessage| async { Ok(()) }));
        AmqpConsumer::builder(&amqp_url, topology.clone(), noop).build().unwrap().declare().await.unwrap();
        (pool, store, wal, exchange, topology)
    });
    Some(Env {
        rt,
        pg_url,
        amqp_url,
        schema,
        pool,
        store,
        wal,
        exchange,
        topology,
    })
}

impl Env {
    fn msg(&self) -> OutboxMessage {
        OutboxMessage::new(Destination::new(&self.exchange, "jobs"), PAYLOAD.to_vec())
            .correlation_id("bench")
            .traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    }

    async fn purge(&self) {
        let conn = Connection::connect(&self.amqp_url, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_purge(
            self.topology.queue.as_str().into(),
            QueuePurgeOptions::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "ok".into()).await;
    }

    async fn enqueue(&self, n: usize) {
        for chunk in 0..n.div_ceil(1_000) {
            let k = (n - chunk * 1_000).min(1_000);
            let msgs: Vec<_> = (0..k).map(|_| self.msg()).collect();
            let mut tx = self.pool.begin().await.unwrap();
            self.store.enqueue(&mut tx, &msgs).await.unwrap();
            tx.commit().await.unwrap();
        }
    }

    fn teardown(self) {
        self.rt.block_on(async {
            let noop = Arc::new(handler_fn(|_m: IncomingMessage| async { Ok(()) }));
            let _ = AmqpConsumer::builder(&self.amqp_url, self.topology.clone(), noop)
                .build()
                .unwrap()
                .delete_topology(true)
                .await;
            let _ = self.wal.drop_slot().await;
            self.pool.close().await;
            let admin = PgPool::connect(&self.pg_url).await.unwrap();
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA {} CASCADE",
                self.schema
            )))
            .execute(&admin)
            .await;
        });
    }
}

/// Total (messages or commits, time) per benchmark, for the ratios.
type Totals = Arc<Mutex<HashMap<&'static str, (u64, Duration)>>>;

fn record(t: &Totals, name: &'static str, n: u64, d: Duration) {
    let mut t = t.lock();
    let e = t.entry(name).or_default();
    e.0 += n;
    e.1 += d;
}

fn rate(t: &Totals, name: &str) -> f64 {
    let t = t.lock();
    t.get(name)
        .map_or(0.0, |(n, d)| *n as f64 / d.as_secs_f64())
}

async fn raw_lapin(env: &Env, n: usize, window: usize) -> Duration {
    let conn = Connection::connect(&env.amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let msgs: Vec<_> = (0..n).map(|_| env.msg()).collect();
    let start = Instant::now();
    let mut inflight: FuturesUnordered<lapin::PublisherConfirm> = FuturesUnordered::new();
    for m in &msgs {
        while inflight.len() >= window {
            assert!(inflight.next().await.unwrap().unwrap().is_ack());
        }
        // The same properties the relay sends.
        let mut headers = lapin::types::FieldTable::default();
        headers.insert(
            "traceparent".into(),
            lapin::types::AMQPValue::LongString(
                m.headers.traceparent.clone().unwrap_or_default().into(),
            ),
        );
        let props = BasicProperties::default()
            .with_message_id(m.id.to_string().into())
            .with_content_type("application/octet-stream".into())
            .with_correlation_id("bench".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        let c = ch
            .basic_publish(
                env.exchange.as_str().into(),
                "jobs".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &m.payload,
                props,
            )
            .await
            .unwrap();
        inflight.push(c);
    }
    while let Some(c) = inflight.next().await {
        assert!(c.unwrap().is_ack());
    }
    let d = start.elapsed();
    let _ = conn.close(200, "ok".into()).await;
    d
}

fn relay_throughput(c: &mut Criterion, env: &Env, totals: &Totals) {
    let mut g = c.benchmark_group("relay_to_quorum_queue");
    g.throughput(criterion::Throughput::Elements(MSGS as u64));
    g.bench_function("raw_lapin_pipelined_confirms", |b| {
        b.iter_custom(|iters| {
            env.rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    env.purge().await;
                    let d = raw_lapin(env, MSGS, 512).await;
                    record(totals, "raw", MSGS as u64, d);
                    total += d;
                }
                total
            })
        });
    });
    let publisher = Arc::new(
        AmqpPublisher::builder(&env.amqp_url)
            .window(512)
            .build()
            .unwrap(),
    );
    let relay = Relay::builder(Arc::new(env.store.clone()), publisher)
        .batch_size(500)
        .build()
        .unwrap();
    g.bench_function("outbox_relay", |b| {
        b.iter_custom(|iters| {
            env.rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    env.purge().await;
                    env.enqueue(MSGS).await;
                    let start = Instant::now();
                    let drained = futures::future::join_all((0..4).map(|_| relay.drain())).await;
                    let d = start.elapsed();
                    let n: u64 = drained.into_iter().map(Result::unwrap).sum();
                    assert_eq!(n, MSGS as u64);
                    record(totals, "relay", n, d);
                    total += d;
                }
                total
            })
        });
    });
    // The WAL outbox: messages written with `pg_logical_emit_message`, read
    // by one relay streaming from the replication slot. The relay runs
    // throughout, as in service; each iteration commits one transaction of
    // MSGS messages and times from that commit to the last confirm.
    let wal_relay = LogicalRelay::builder(
        env.wal.clone(),
        env.store.clone(),
        Arc::new(
            AmqpPublisher::builder(&env.amqp_url)
                .window(512)
                .build()
                .unwrap(),
        ),
    )
    .batch_changes(1_000)
    .build()
    .unwrap();
    let wal_handle = env.rt.block_on(async {
        let handle = wal_relay.spawn();
        // Connected and caught up: one message through.
        let tx = env.wal.begin(&[env.msg()]).await.unwrap();
        tx.commit().await.unwrap();
        while wal_relay.stats().published < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handle
    });
    g.bench_function("wal_outbox_relay", |b| {
        b.iter_custom(|iters| {
            env.rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    env.purge().await;
                    let msgs: Vec<_> = (0..MSGS).map(|_| env.msg()).collect();
                    let before = wal_relay.stats().published;
                    let mut tx = env.pool.begin().await.unwrap();
                    env.wal.enqueue(&mut tx, &msgs).await.unwrap();
                    tx.commit().await.unwrap();
                    let start = Instant::now();
                    wal_relay.notifier().notify();
                    while wal_relay.stats().published < before + MSGS as u64 {
                        tokio::time::sleep(Duration::from_micros(500)).await;
                    }
                    let d = start.elapsed();
                    record(totals, "wal_relay", MSGS as u64, d);
                    total += d;
                }
                total
            })
        });
    });
    env.rt.block_on(wal_handle.shutdown());
    g.finish();
}

/// The business transaction the outbox rides on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    /// One single-row insert: the outbox's share is as large as it gets.
    Insert,
    /// The reference server's acceptance of a payment, in small: check the
    /// printer, insert the payment, append its event.
    Payment,
}

async fn commits(
    env: &Env,
    work: Work,
    variant: Variant,
    conns: usize,
    per_conn: usize,
) -> Duration {
    let start = Instant::now();
    let tasks = (0..conns).map(|_| async {
        for _ in 0..per_conn {
            let mut tx = if variant == Variant::Wal {
                env.wal.begin(&[env.msg()]).await.unwrap()
            } else {
                env.pool.begin().await.unwrap()
            };
            if work == Work::Payment {
                sqlx::query("SELECT restaurant FROM printers WHERE id = $1")
                    .bind("p1")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
            }
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO payments (amount_minor, currency) VALUES ($1, 'EUR') RETURNING id",
            )
            .bind(1250i64)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            if work == Work::Payment {
                sqlx::query(
                    "INSERT INTO events (restaurant, kind, subject, data) VALUES ($1, $2, $3, $4)",
                )
                .bind("r1")
                .bind("payment.pending")
                .bind(id)
                .bind(r#"{"status":"pending","amount":1250,"currency":"EUR"}"#)
                .execute(&mut *tx)
                .await
                .unwrap();
            }
            if variant == Variant::Row {
                env.store.enqueue(&mut tx, &[env.msg()]).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
    });
    futures::future::join_all(tasks).await;
    start.elapsed()
}

/// Empties the tables and moves the WAL outbox's slot to the end, so the
/// next round starts alike.
async fn reset(env: &Env) {
    sqlx::query("TRUNCATE outbox_messages, payments, events")
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())")
        .bind(env.wal.slot_name())
        .execute(&env.pool)
        .await
        .unwrap();
}

const VARIANTS: [(&str, Variant); 3] = [
    ("without_outbox", Variant::Bare),
    ("with_outbox_row", Variant::Row),
    ("with_wal_message", Variant::Wal),
];

fn enqueue_overhead(c: &mut Criterion, env: &Env, totals: &Totals) {
    let (conns, per_conn) = (32, 60);
    let mut g = c.benchmark_group("business_commit_32_connections");
    g.throughput(criterion::Throughput::Elements((conns * per_conn) as u64));
    for (name, variant) in VARIANTS {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                env.rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let d = commits(env, Work::Insert, variant, conns, per_conn).await;
                        record(totals, name, (conns * per_conn) as u64, d);
                        total += d;
                    }
                    reset(env).await;
                    total
                })
            });
        });
    }
    g.finish();
}

/// Alternates the variants round by round, so background load on a shared
/// machine hits them alike; returns commits/s of each, as in [`VARIANTS`].
fn interleaved_commits(env: &Env, work: Work) -> [f64; 3] {
    let (conns, per_conn, rounds) = (32, 60, 8);
    env.rt.block_on(async {
        let mut d = [Duration::ZERO; 3];
        for _ in 0..rounds {
            for (i, (_, variant)) in VARIANTS.iter().enumerate() {
                d[i] += commits(env, work, *variant, conns, per_conn).await;
            }
            reset(env).await;
        }
        let n = (conns * per_conn * rounds) as f64;
        d.map(|d| n / d.as_secs_f64())
    })
}

/// Prints interleaved rounds' commits/s, as in [`VARIANTS`], with the ratios to the bare one.
fn print_rounds(what: &str, r: [f64; 3]) {
    let [bare, row, wal] = r;
    println!(
        "{what}: {bare:>9.0} /s without   {row:>9.0} /s with row (ratio {:.3}x)   {wal:>9.0} /s with WAL message (ratio {:.3}x)",
        row / bare,
        wal / bare
    );
}

/// Records, per message, the time from the producer's commit to the broker's confirm.
#[derive(Debug)]
struct Timed {
    inner: AmqpPublisher,
    committed: Arc<Mutex<HashMap<MessageId, Instant>>>,
    latencies: Arc<Mutex<Vec<Duration>>>,
}

#[async_trait]
impl Publisher for Timed {
    async fn publish(&self, batch: &[OutboxMessage]) -> Vec<Result<(), PublishError>> {
        let r = self.inner.publish(batch).await;
        let now = Instant::now();
        let committed = self.committed.lock();
        let mut l = self.latencies.lock();
        for (m, r) in batch.iter().zip(&r) {
            if r.is_ok()
                && let Some(t) = committed.get(&m.id)
            {
                l.push(now - *t);
            }
        }
        r
    }
}

/// Commit -> broker-confirm latency at 2,000 msg/s: 8 producers x 250
/// commits/s for 5 s, one message per commit, through the table relay
/// (`wal == false`) or the WAL outbox's stream relay. Returns p50 and p99
/// in ms, the sample count and the offered rate.
fn latency(env: &Env, wal: bool) -> (f64, f64, usize, f64) {
    env.rt.block_on(async {
        env.purge().await;
        let committed = Arc::new(Mutex::new(HashMap::new()));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let publisher = Arc::new(Timed {
            inner: AmqpPublisher::builder(&env.amqp_url).build().unwrap(),
            committed: committed.clone(),
            latencies: latencies.clone(),
        });
        type Published = Box<dyn Fn() -> u64>;
        let (handle, notifier, published): (_, _, Published) = if wal {
            let relay = LogicalRelay::builder(env.wal.clone(), env.store.clone(), publisher)
                .build()
                .unwrap();
            let handle = relay.spawn();
            // Steady state: the relay has connected and caught up with the
            // slot (the commits benchmark left it far behind its restart point).
            let tx = env.wal.begin(&[env.msg()]).await.unwrap();
            tx.commit().await.unwrap();
            while relay.stats().published < 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            latencies.lock().clear();
            let notifier = relay.notifier().clone();
            (
                handle,
                notifier,
                Box::new(move || relay.stats().published - 1),
            )
        } else {
            let relay = Relay::builder(Arc::new(env.store.clone()), publisher)
                .batch_size(256)
                .build()
                .unwrap();
            let handle = relay.spawn();
            let notifier = relay.notifier().clone();
            (handle, notifier, Box::new(move || relay.stats().published))
        };
        let (producers_n, per_sec, secs): (u64, u64, u64) = (8, 250, 5);
        let start = Instant::now();
        let producers = (0..producers_n).map(|_| {
            let (committed, notifier) = (committed.clone(), notifier.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(1000 / per_sec));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for _ in 0..(per_sec * secs) {
                    tick.tick().await;
                    let m = env.msg();
                    let id = m.id;
                    if wal {
                        let tx = env.wal.begin(&[m]).await.unwrap();
                        tx.commit().await.unwrap();
                    } else {
                        let mut tx = env.pool.begin().await.unwrap();
                        env.store.enqueue(&mut tx, &[m]).await.unwrap();
                        tx.commit().await.unwrap();
                    }
                    committed.lock().insert(id, Instant::now());
                    notifier.notify();
                }
            }
        });
        futures::future::join_all(producers).await;
        let total = producers_n * per_sec * secs;
        let offered = total as f64 / start.elapsed().as_secs_f64();
        while published() < total {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        handle.shutdown().await;
        let mut l = latencies.lock().clone();
        l.sort();
        let pct = |p: f64| l[((l.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0;
        (pct(0.50), pct(0.99), l.len(), offered)
    })
}

fn full_loop(env: &Env) -> f64 {
    env.rt.block_on(async {
        env.purge().await;
        let n = 10_000;
        let (tx_done, mut rx_done) = tokio::sync::mpsc::unbounded_channel();
        let inbox = PgInbox::new(env.pool.clone());
        let pool = env.pool.clone();
        let handler = handler_fn(move |m: IncomingMessage| {
            let (pool, inbox, done) = (pool.clone(), inbox.clone(), tx_done.clone());
            async move {
                let mut tx = pool.begin().await.map_err(HandlerError::retry)?;
                if inbox
                    .try_begin(&mut tx, "bench", m.id)
                    .await
                    .map_err(HandlerError::retry)?
                    == InboxOutcome::New
                {
                    sqlx::query("INSERT INTO effects (message_id) VALUES ($1)")
                        .bind(m.id.as_uuid())
                        .execute(&mut *tx)
                        .await
                        .map_err(HandlerError::retry)?;
                }
                tx.commit().await.map_err(HandlerError::retry)?;
                let _ = done.send(());
                Ok(())
            }
        });
        let consumer =
            AmqpConsumer::builder(&env.amqp_url, env.topology.clone(), Arc::new(handler))
                .concurrency(32)
                .prefetch(256)
                .build()
                .unwrap();
        let ch = consumer.spawn();
        let relay = Relay::builder(
            Arc::new(env.store.clone()),
            Arc::new(AmqpPublisher::builder(&env.amqp_url).build().unwrap()),
        )
        .batch_size(500)
        .build()
        .unwrap();
        env.enqueue(n).await;
        let start = Instant::now();
        let handle = relay.spawn();
        for _ in 0..n {
            rx_done.recv().await.unwrap();
        }
        let d = start.elapsed();
        handle.shutdown().await;
        ch.shutdown().await;
        n as f64 / d.as_secs_f64()
    })
}

fn main() {
    let Some(env) = setup() else { return };
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let totals: Totals = Arc::default();
    relay_throughput(&mut c, &env, &totals);
    enqueue_overhead(&mut c, &env, &totals);
    let il = interleaved_commits(&env, Work::Insert);
    let ilp = interleaved_commits(&env, Work::Payment);
    let (p50, p99, samples, offered) = latency(&env, false);
    let (wp50, wp99, wsamples, woffered) = latency(&env, true);
    let loop_rate = full_loop(&env);
    c.final_summary();

    let (raw, relay, wal_relay) = (
        rate(&totals, "raw"),
        rate(&totals, "relay"),
        rate(&totals, "wal_relay"),
    );
    let (without, with, wal) = (
        rate(&totals, "without_outbox"),
        rate(&totals, "with_outbox_row"),
        rate(&totals, "with_wal_message"),
    );
    println!("\n== outbox figures (this run) ==");
    println!(
        "relay -> quorum queue:      {relay:>9.0} msg/s   raw lapin pipelined confirms: {raw:>9.0} msg/s   ratio {:.2}x (target >= 0.80)",
        relay / raw
    );
    println!(
        "WAL relay -> quorum queue:  {wal_relay:>9.0} msg/s   raw lapin pipelined confirms: {raw:>9.0} msg/s   ratio {:.2}x (target >= 0.80)",
        wal_relay / raw
    );
    println!(
        "commits at 32 connections:  {with:>9.0} /s with outbox row   {without:>9.0} /s without   ratio {:.3}x (target >= 0.95)",
        with / without
    );
    println!(
        "commits at 32 connections:  {wal:>9.0} /s with WAL message   {without:>9.0} /s without   ratio {:.3}x (target >= 0.95)",
        wal / without
    );
    print_rounds("commits at 32 connections, interleaved rounds", il);
    print_rounds("the same, payment transaction (select, 2 inserts)", ilp);
    println!(
        "commit -> confirm latency:  p50 {p50:.2} ms  p99 {p99:.2} ms  ({samples} messages, offered {offered:.0} msg/s; target p50 < 10 ms, p99 < 50 ms)"
    );
    println!(
        "WAL commit -> confirm:      p50 {wp50:.2} ms  p99 {wp99:.2} ms  ({wsamples} messages, offered {woffered:.0} msg/s; target p50 < 10 ms, p99 < 50 ms)"
    );
    println!("full loop outbox -> RabbitMQ -> consumer -> inbox: {loop_rate:.0} msg/s");
    env.teardown();
}
