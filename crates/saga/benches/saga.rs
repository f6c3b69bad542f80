//! Throughput and step-transition latency of three-step no-op sagas on local PostgreSQL and
//! embedded SQLite, against a raw one-row-commit baseline on the same pool.
//!
//! Run with `TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p
//! counterfoil-saga --all-features --bench saga`. Without the URL only SQLite runs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use counterfoil_saga::{
    CountingStore, Definition, Engine, Kind, PgSagaStore, SagaStore, SqliteSagaStore, Step, StepCx,
    StepError, StepOutcome, WorkerConfig,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parking_lot::Mutex;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use tokio::runtime::Runtime;
use uuid::Uuid;

/// Connections in the pool, for the saga engine and for the raw baseline alike.
const PG_CONNECTIONS: u32 = 16;
const SQLITE_CONNECTIONS: u32 = 4;

struct Noop(&'static str, Arc<AtomicU64>);

#[async_trait]
impl Step<u64> for Noop {
    fn name(&self) -> &str {
        self.0
    }
    fn kind(&self) -> Kind {
        Kind::Retriable
    }
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, _cx: &mut StepCx<'_, u64>) -> Result<StepOutcome, StepError> {
        if self.0 == "third" {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
        Ok(StepOutcome::Done)
    }
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

struct Setup {
    engine: Engine,
    def: Definition<u64>,
    done: Arc<AtomicU64>,
    timed: Arc<CountingStore>,
    next: AtomicU64,
    stop: tokio::sync::watch::Sender<bool>,
    prefix: &'static str,
}

async fn setup(store: Arc<dyn SagaStore>, workers: usize, direct: bool) -> Arc<Setup> {
    let done = Arc::new(AtomicU64::new(0));
    let def = Definition::builder("bench", 1)
        .step(Noop("first", done.clone()))
        .step(Noop("second", done.clone()))
        .step(Noop("third", done.clone()))
        .build()
        .unwrap();
    let timed = Arc::new(CountingStore::new(store));
    let engine = Engine::builder(timed.clone())
        .register(def.clone())
        .execute_on_start(direct)
        .build()
        .await
        .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    for _ in 0..workers {
        let e = engine.clone();
        let mut rx = rx.clone();
        tokio::spawn(async move {
            let cfg = WorkerConfig::default()
                .concurrency(64)
                .batch(64)
                .poll(Duration::from_millis(1));
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
        timed,
        next: AtomicU64::new(0),
        stop,
        prefix: if direct { "direct" } else { "claimed" },
    })
}

/// Starts `n` sagas from `starters` tasks and waits until all completed.
async fn run_sagas(s: &Arc<Setup>, n: u64, starters: u64) -> Duration {
    let target = s.done.load(Ordering::Relaxed) + n;
    let t = Instant::now();
    let mut hs = Vec::new();
    for k in 0..starters {
        let s = s.clone();
        let share = n / starters + u64::from(k < n % starters);
        hs.push(tokio::spawn(async move {
            for _ in 0..share {
                let i = s.next.fetch_add(1, Ordering::Relaxed);
                s.engine
                    .start(&s.def, &format!("{}-{i}", s.prefix), &i)
                    .await
                    .unwrap();
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    while s.done.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    t.elapsed()
}

#[derive(Clone)]
enum Raw {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

/// `n` one-row autocommit inserts from `conns` concurrent tasks; records each latency.
async fn raw_commits(raw: &Raw, n: u64, conns: u64, lat: &Arc<Mutex<Vec<Duration>>>) -> Duration {
    let t = Instant::now();
    let mut hs = Vec::new();
    for k in 0..conns {
        let raw = raw.clone();
        let lat = lat.clone();
        let share = n / conns + u64::from(k < n % conns);
        hs.push(tokio::spawn(async move {
            for i in 0..share {
                let t = Instant::now();
                let id = Uuid::new_v4().to_string();
                match &raw {
                    Raw::Pg(p) => {
                        sqlx::query("INSERT INTO bench_raw (id, n) VALUES ($1, $2)")
                            .bind(id)
                            .bind(i as i64)
                            .execute(p)
                            .await
                            .unwrap();
                    }
                    Raw::Sqlite(p) => {
                        sqlx::query("INSERT INTO bench_raw (id, n) VALUES ($1, $2)")
                            .bind(id)
                            .bind(i as i64)
                            .execute(p)
                            .await
                            .unwrap();
                    }
                }
                lat.lock().push(t.elapsed());
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    t.elapsed()
}

/// One saga (or one raw commit) at a time: transition latency without queueing.
async fn unloaded(s: &Arc<Setup>, raw: &Raw, name: &str) {
    const N: u64 = 300;
    s.timed.clear_checkpoint_times();
    for _ in 0..N {
        run_sagas(s, 1, 1).await;
    }
    let mut cps = s.timed.checkpoint_times();
    let lat = Arc::new(Mutex::new(Vec::new()));
    raw_commits(raw, N, 1, &lat).await;
    let mut raws = lat.lock().clone();
    let (p50, p99) = (percentile(&mut cps, 0.5), percentile(&mut cps, 0.99));
    let (r50, r99) = (percentile(&mut raws, 0.5), percentile(&mut raws, 0.99));
    println!(
        "\n== {name} unloaded (one saga at a time, execute on start): step transition p50 {p50:?} \
         p99 {p99:?}; raw one-row commit p50 {r50:?} p99 {r99:?}; ratio p50 {:.2}x, p99 {:.2}x",
        p50.as_secs_f64() / r50.as_secs_f64().max(1e-9),
        p99.as_secs_f64() / r99.as_secs_f64().max(1e-9)
    );
}

struct Figures {
    sagas: u64,
    saga_time: Duration,
    raw: u64,
    raw_time: Duration,
}

fn report(name: &str, s: &Setup, raw_lat: &Mutex<Vec<Duration>>, f: &Figures, conns: u32) {
    let mut cps = s.timed.checkpoint_times();
    let mut raws = raw_lat.lock().clone();
    let sagas_s = f.sagas as f64 / f.saga_time.as_secs_f64();
    let raw_s = f.raw as f64 / f.raw_time.as_secs_f64();
    let transitions_s = sagas_s * 3.0;
    let (p50, p99) = (percentile(&mut cps, 0.5), percentile(&mut cps, 0.99));
    let (r50, r99) = (percentile(&mut raws, 0.5), percentile(&mut raws, 0.99));
    let claims = s.timed.claims();
    let claimed = s.timed.claimed().max(1);
    println!("\n== {name} ({conns} connections)");
    println!("raw one-row commits: {raw_s:.0}/s, p50 {r50:?}, p99 {r99:?}");
    println!(
        "sagas (3 no-op steps): {sagas_s:.0} sagas/s = {transitions_s:.0} step transitions/s \
         ({:.2}x the raw commit rate)",
        transitions_s / raw_s
    );
    println!(
        "step transition (one checkpoint statement): p50 {p50:?} ({:.2}x raw), p99 {p99:?} ({:.2}x raw)",
        p50.as_secs_f64() / r50.as_secs_f64().max(1e-9),
        p99.as_secs_f64() / r99.as_secs_f64().max(1e-9)
    );
    println!(
        "round trips per saga: 1 start + 3 checkpoints + {:.2} claims (avg batch {:.1})",
        claims as f64 / claimed as f64 * 1.0,
        claimed as f64 / claims.max(1) as f64
    );
}

fn bench_backend(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    store: Arc<dyn SagaStore>,
    raw: Raw,
    conns: u32,
    workers: usize,
) {
    let raw_lat = Arc::new(Mutex::new(Vec::new()));
    let raw_figures = Arc::new(Mutex::new((0u64, Duration::ZERO)));
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(1));
    g.bench_function("raw_one_row_commit", |b| {
        b.to_async(rt).iter_custom(|n| {
            let raw = raw.clone();
            let lat = raw_lat.clone();
            let f = raw_figures.clone();
            async move {
                let d = raw_commits(&raw, n, u64::from(conns), &lat).await;
                let mut f = f.lock();
                f.0 += n;
                f.1 += d;
                d
            }
        });
    });
    for (variant, direct) in [
        ("saga_three_noop_steps", false),
        ("saga_three_noop_steps_execute_on_start", true),
    ] {
        let s = rt.block_on(setup(
            store.clone(),
            if direct { 0 } else { workers },
            direct,
        ));
        let figures = Arc::new(Mutex::new((0u64, Duration::ZERO)));
        g.bench_function(variant, |b| {
            b.to_async(rt).iter_custom(|n| {
                let s = s.clone();
                let f = figures.clone();
                async move {
                    let d = run_sagas(&s, n, u64::from(conns)).await;
                    let mut f = f.lock();
                    f.0 += n;
                    f.1 += d;
                    d
                }
            });
        });
        let _ = s.stop.send(true);
        if direct {
            rt.block_on(unloaded(&s, &raw, name));
        }
        let (raw_n, raw_t) = *raw_figures.lock();
        let (n, t) = *figures.lock();
        report(
            &format!("{name}/{variant}"),
            &s,
            &raw_lat,
            &Figures {
                sagas: n,
                saga_time: t,
                raw: raw_n,
                raw_time: raw_t,
            },
            conns,
        );
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    if let Ok(url) = std::env::var("TEST_POSTGRES_URL") {
        let schema = format!("saga_bench_{}", Uuid::new_v4().simple());
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
                .min_connections(PG_CONNECTIONS)
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
            "saga_postgres",
            Arc::new(PgSagaStore::new(pool.clone())),
            Raw::Pg(pool.clone()),
            PG_CONNECTIONS,
            2,
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

    let path = std::env::temp_dir().join(format!("saga-bench-{}.db", Uuid::new_v4().simple()));
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
        "saga_sqlite",
        Arc::new(SqliteSagaStore::new(pool.clone())),
        Raw::Sqlite(pool),
        SQLITE_CONNECTIONS,
        1,
    );
    let _ = std::fs::remove_file(&path);
}

criterion_group!(saga, benches);
criterion_main!(saga);
