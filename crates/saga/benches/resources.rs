//! "N sagas sharing K resources": sagas whose first step holds one of K resources (a printer)
//! and whose second step is a no-op, driven by worker loops set up as the reference server
//! sets them (100 ms poll, 250 ms `resource_poll`), against a raw one-row-commit baseline on
//! the same pool. Before in-process wake-ups and the resource hand-off, a saga queued on a
//! busy resource waited for `resource_poll`, so throughput was bounded by about
//! K / `resource_poll`.
//!
//! Run with `TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p
//! counterfoil-saga --all-features --bench resources`. Without the URL only SQLite runs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use counterfoil_saga::{
    Definition, Engine, Kind, PgSagaStore, SagaStore, SqliteSagaStore, Step, StepCx, StepError,
    StepOutcome, WorkerConfig,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use tokio::runtime::Runtime;
use uuid::Uuid;

const PG_CONNECTIONS: u32 = 16;
const SQLITE_CONNECTIONS: u32 = 4;
/// Sagas per measured run.
const N: u64 = 300;

/// `(index, resources)`: the saga prints on `printer-{index % resources}`.
type State = (u64, u64);

struct Print;

#[async_trait]
impl Step<State> for Print {
    fn name(&self) -> &str {
        "print"
    }
    fn kind(&self) -> Kind {
        Kind::Retriable
    }
    fn idempotent(&self) -> bool {
        true
    }
    fn resource(&self, s: &State) -> Option<String> {
        Some(format!("printer-{}", s.0 % s.1.max(1)))
    }
    async fn run(&self, _cx: &mut StepCx<'_, State>) -> Result<StepOutcome, StepError> {
        Ok(StepOutcome::Done)
    }
}

struct Finish(Arc<AtomicU64>);

#[async_trait]
impl Step<State> for Finish {
    fn name(&self) -> &str {
        "finish"
    }
    fn kind(&self) -> Kind {
        Kind::Retriable
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, _cx: &mut StepCx<'_, State>) -> Result<StepOutcome, StepError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(StepOutcome::Done)
    }
}

struct Setup {
    engine: Engine,
    def: Definition<State>,
    done: Arc<AtomicU64>,
    next: AtomicU64,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn setup(store: Arc<dyn SagaStore>, workers: usize) -> Arc<Setup> {
    let done = Arc::new(AtomicU64::new(0));
    let def = Definition::builder("shared", 1)
        .step(Print)
        .step(Finish(done.clone()))
        .build()
        .unwrap();
    let engine = Engine::builder(store)
        .register(def.clone())
        .resource_poll(Duration::from_millis(250))
        .build()
        .await
        .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    for _ in 0..workers {
        let e = engine.clone();
        let mut rx = rx.clone();
        tokio::spawn(async move {
            let cfg = WorkerConfig::default().concurrency(64).batch(64);
            let shutdown = async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            e.run(cfg, shutdown).await.unwrap();
        });
    }
    Arc::new(Setup {
        engine,
        def,
        done,
        next: AtomicU64::new(0),
        stop,
    })
}

/// Starts `n` sagas over `k` resources from 8 tasks and waits until all completed.
async fn run_sagas(s: &Arc<Setup>, n: u64, k: u64) -> Duration {
    let target = s.done.load(Ordering::Relaxed) + n;
    let t = Instant::now();
    let mut hs = Vec::new();
    let starters = 8;
    for j in 0..starters {
        let s = s.clone();
        let share = n / starters + u64::from(j < n % starters);
        hs.push(tokio::spawn(async move {
            for _ in 0..share {
                let i = s.next.fetch_add(1, Ordering::Relaxed);
                s.engine
                    .start(&s.def, &format!("s-{i}"), &(i, k))
                    .await
                    .unwrap();
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    while s.done.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    t.elapsed()
}

#[derive(Clone)]
enum Raw {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

async fn raw_commits(raw: &Raw, n: u64, conns: u64) -> Duration {
    let t = Instant::now();
    let mut hs = Vec::new();
    for j in 0..conns {
        let raw = raw.clone();
        let share = n / conns + u64::from(j < n % conns);
        hs.push(tokio::spawn(async move {
            for i in 0..share {
                match &raw {
                    Raw::Pg(p) => {
                        sqlx::query("INSERT INTO bench_raw (id, n) VALUES ($1, $2)")
                            .bind(Uuid::new_v4().to_string())
                            .bind(i as i64)
                            .execute(p)
                            .await
                            .unwrap();
                    }
                    Raw::Sqlite(p) => {
                        sqlx::query("INSERT INTO bench_raw (id, n) VALUES ($1, $2)")
                            .bind(Uuid::new_v4().to_string())
                            .bind(i as i64)
                            .execute(p)
                            .await
                            .unwrap();
                    }
                }
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    t.elapsed()
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn bench_backend(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    store: Arc<dyn SagaStore>,
    raw: Raw,
    conns: u32,
) {
    let s = rt.block_on(setup(store, 2));
    let raw_d = rt.block_on(raw_commits(&raw, N, u64::from(conns)));
    let raw_rate = per_sec(N, raw_d);
    println!("{name}: raw one-row commits at {conns} connections: {raw_rate:.0}/s");
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(criterion::SamplingMode::Flat)
        .throughput(Throughput::Elements(100));
    for k in [8_u64, 32] {
        let d = rt.block_on(run_sagas(&s, N, k));
        let rate = per_sec(N, d);
        let bound = k as f64 / 0.25;
        println!(
            "{name}: {N} sagas over {k} resources: {rate:.0} sagas/s = {:.2}x raw commits/s \
             (a {k}-resource poll-only bound is {bound:.0}/s)",
            rate / raw_rate
        );
        let sc = s.clone();
        g.bench_function(format!("{k}_resources_100_sagas"), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let sc = sc.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += run_sagas(&sc, 100, k).await;
                    }
                    total
                }
            });
        });
    }
    g.finish();
    let _ = s.stop.send(true);
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    if let Ok(url) = std::env::var("TEST_POSTGRES_URL") {
        let schema = format!("saga_res_bench_{}", Uuid::new_v4().simple());
        let pool = rt.block_on(async {
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&admin)
                .await
                .unwrap();
            let opts = PgConnectOptions::from_str(&url)
                .unwrap()
                .options([("search_path", schema.as_str())]);
            let pool = PgPoolOptions::new()
                .max_connections(PG_CONNECTIONS)
                .connect_with(opts)
                .await
                .unwrap();
            sqlx::query("CREATE TABLE bench_raw (id TEXT PRIMARY KEY, n BIGINT NOT NULL)")
                .execute(&pool)
                .await
                .unwrap();
            pool
        });
        bench_backend(
            c,
            &rt,
            "resources_postgres",
            Arc::new(PgSagaStore::new(pool.clone())),
            Raw::Pg(pool.clone()),
            PG_CONNECTIONS,
        );
        rt.block_on(async {
            pool.close().await;
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&admin)
                .await
                .unwrap();
        });
    } else {
        eprintln!("TEST_POSTGRES_URL not set: skipping the PostgreSQL benchmark");
    }

    let path = std::env::temp_dir().join(format!("saga-res-bench-{}.db", Uuid::new_v4().simple()));
    let pool = rt.block_on(async {
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_CONNECTIONS)
            .connect_with(opts)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE bench_raw (id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    });
    bench_backend(
        c,
        &rt,
        "resources_sqlite",
        Arc::new(SqliteSagaStore::new(pool.clone())),
        Raw::Sqlite(pool),
        SQLITE_CONNECTIONS,
    );
    let _ = std::fs::remove_file(&path);
}

criterion_group!(resources, benches);
criterion_main!(resources);
