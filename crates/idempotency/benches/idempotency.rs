//! Begin+complete and replay against raw baselines, per backend, and the
//! layer's own overhead on an axum handler.
//!
//! Run with `cargo bench -p counterfoil-idempotency --all-features` (with
//! `TEST_POSTGRES_URL` and `TEST_REDIS_URL` set for those backends).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use counterfoil_idempotency::{
    Begin, BeginOptions, Fingerprint, IdempotencyKey, IdempotencyLayer, IdempotencyStore,
    InMemoryIdempotencyStore, PgIdempotencyStore, RedisIdempotencyStore, Scope,
    SqliteIdempotencyStore, StoredResponse,
};
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, PgPool, SqlitePool};
use tower::ServiceExt;

/// Concurrent callers in every store benchmark.
const CONCURRENCY: u64 = 8;

type Op = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Runs `iters` calls of `op` spread over [`CONCURRENCY`] tasks; each call
/// gets a fresh number (for unique keys).
async fn concurrent(iters: u64, op: Op) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let op = op.clone();
        let n = iters / CONCURRENCY + u64::from(t < iters % CONCURRENCY);
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                op(SEQ.fetch_add(1, Ordering::Relaxed)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn key(n: u64) -> IdempotencyKey {
    IdempotencyKey::new(
        Scope::new("bench", "p", "create_payment").unwrap(),
        format!("k-{n}"),
    )
    .unwrap()
}

fn fp() -> Fingerprint {
    Fingerprint::of_bytes(b"amount=1250 currency=EUR")
}

fn response() -> StoredResponse {
    StoredResponse::json(201, &serde_json::json!({"id": "pay_123", "amount": 1250})).unwrap()
}

fn ours(store: Arc<dyn IdempotencyStore>) -> Op {
    Arc::new(move |n| {
        let store = store.clone();
        Box::pin(async move {
            let opts = BeginOptions::default();
            let Begin::Execute(lease) = store.begin(&key(n), &fp(), &opts).await.unwrap() else {
                panic!("fresh key")
            };
            store.complete(&lease, &response(), opts.ttl).await.unwrap();
        })
    })
}

fn replay(store: Arc<dyn IdempotencyStore>, n: u64) -> Op {
    Arc::new(move |_| {
        let store = store.clone();
        Box::pin(async move {
            let r = store
                .begin(&key(n), &fp(), &BeginOptions::default())
                .await
                .unwrap();
            assert!(matches!(r, Begin::Replay(_)));
        })
    })
}

/// Median over `rounds` of ours/raw throughput with `n` operations each.
fn ratio(rt: &tokio::runtime::Runtime, name: &str, raw: &Op, ours: &Op, n: u64) {
    let mut ratios = Vec::new();
    for _ in 0..5 {
        let r = rt.block_on(concurrent(n, raw.clone()));
        let o = rt.block_on(concurrent(n, ours.clone()));
        ratios.push(r.as_secs_f64() / o.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "RATIO {name}: ours/raw throughput = {:.2} (median of 5 rounds of {n} ops at concurrency {CONCURRENCY})",
        ratios[2]
    );
}

fn group(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    raw: Op,
    raw_read: Op,
    store: Arc<dyn IdempotencyStore>,
    n: u64,
) {
    let ours = ours(store.clone());
    // One completed key for the replay benchmarks.
    let done = SEQ.fetch_add(1, Ordering::Relaxed);
    rt.block_on(ours(done));
    let replay = replay(store, done);
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (label, op) in [
        ("raw_claim_then_update", &raw),
        ("begin_complete", &ours),
        ("raw_read", &raw_read),
        ("replay", &replay),
    ] {
        g.bench_function(label, |b| {
            b.to_async(rt)
                .iter_custom(|iters| concurrent(iters, op.clone()));
        });
    }
    g.finish();
    ratio(rt, &format!("{name} begin+complete"), &raw, &ours, n);
    ratio(rt, &format!("{name} replay"), &raw_read, &replay, n);
}

fn url(var: &str) -> Option<String> {
    let u = std::env::var(var).ok().filter(|u| !u.is_empty());
    if u.is_none() {
        println!("skipping: {var} is not set");
    }
    u
}

fn memory(c: &mut Criterion) {
    let rt = rt();
    let store: Arc<dyn IdempotencyStore> = Arc::new(InMemoryIdempotencyStore::new());
    // Raw baseline: a locked map insert then update.
    let map = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        u64,
        Vec<u8>,
    >::new()));
    let m2 = map.clone();
    let raw: Op = Arc::new(move |n| {
        let map = map.clone();
        Box::pin(async move {
            map.lock().unwrap().entry(n).or_default();
            map.lock().unwrap().insert(n, response().encode());
        })
    });
    let raw_read: Op = Arc::new(move |n| {
        let map = m2.clone();
        Box::pin(async move {
            let _ = map.lock().unwrap().get(&(n % 16)).cloned();
        })
    });
    group(c, &rt, "memory", raw, raw_read, store, 20_000);
}

async fn sqlite_pool() -> SqlitePool {
    let path =
        std::env::temp_dir().join(format!("counterfoil-idem-bench-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    SqlitePoolOptions::new()
        .max_connections(CONCURRENCY as u32)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap()
}

fn sqlite(c: &mut Criterion) {
    let rt = rt();
    let pool = rt.block_on(sqlite_pool());
    let store = SqliteIdempotencyStore::new(pool.clone());
    rt.block_on(store.migrate()).unwrap();
    rt.block_on(
        sqlx::query("CREATE TABLE raw_keys (k TEXT PRIMARY KEY, fp BLOB NOT NULL, resp BLOB)")
            .execute(&pool),
    )
    .unwrap();
    let p2 = pool.clone();
    let raw: Op = Arc::new(move |n| {
        let pool = pool.clone();
        Box::pin(async move {
            let k = key(n).storage_key();
            sqlx::query("INSERT INTO raw_keys (k, fp) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
                .bind(&k)
                .bind(&fp().as_bytes()[..])
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("UPDATE raw_keys SET resp = ?2 WHERE k = ?1")
                .bind(&k)
                .bind(response().encode())
                .execute(&pool)
                .await
                .unwrap();
        })
    });
    let raw_read: Op = Arc::new(move |n| {
        let pool = p2.clone();
        Box::pin(async move {
            let _: Option<Vec<u8>> = sqlx::query_scalar("SELECT resp FROM raw_keys WHERE k = ?1")
                .bind(key(n % 16).storage_key())
                .fetch_optional(&pool)
                .await
                .unwrap()
                .flatten();
        })
    });
    group(c, &rt, "sqlite", raw, raw_read, Arc::new(store), 400);
    let path =
        std::env::temp_dir().join(format!("counterfoil-idem-bench-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

async fn pg_pool(url: &str) -> PgPool {
    let schema = format!("idem_bench_{}", std::process::id());
    let admin = PgPool::connect(url).await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    PgPoolOptions::new()
        .max_connections(CONCURRENCY as u32)
        .connect_with(
            PgConnectOptions::from_str(url)
                .unwrap()
                .options([("search_path", &schema)]),
        )
        .await
        .unwrap()
}

fn postgres(c: &mut Criterion) {
    let Some(url) = url("TEST_POSTGRES_URL") else {
        return;
    };
    let rt = rt();
    let pool = rt.block_on(pg_pool(&url));
    let store = PgIdempotencyStore::new(pool.clone());
    rt.block_on(store.migrate()).unwrap();
    rt.block_on(
        sqlx::query("CREATE TABLE raw_keys (k TEXT PRIMARY KEY, fp BYTEA NOT NULL, resp BYTEA)")
            .execute(&pool),
    )
    .unwrap();
    let p2 = pool.clone();
    let raw: Op = Arc::new(move |n| {
        let pool = pool.clone();
        Box::pin(async move {
            let k = key(n).storage_key();
            sqlx::query("INSERT INTO raw_keys (k, fp) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(&k)
                .bind(&fp().as_bytes()[..])
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("UPDATE raw_keys SET resp = $2 WHERE k = $1")
                .bind(&k)
                .bind(response().encode())
                .execute(&pool)
                .await
                .unwrap();
        })
    });
    let raw_read: Op = Arc::new(move |n| {
        let pool = p2.clone();
        Box::pin(async move {
            let _: Option<Vec<u8>> = sqlx::query_scalar("SELECT resp FROM raw_keys WHERE k = $1")
                .bind(key(n % 16).storage_key())
                .fetch_optional(&pool)
                .await
                .unwrap()
                .flatten();
        })
    });
    group(c, &rt, "postgres", raw, raw_read, Arc::new(store), 2_000);
    rt.block_on(async {
        let admin = PgPool::connect(&url).await.unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS idem_bench_{} CASCADE",
            std::process::id()
        )))
        .execute(&admin)
        .await
        .unwrap();
    });
}

fn redis(c: &mut Criterion) {
    let Some(url) = url("TEST_REDIS_URL") else {
        return;
    };
    let rt = rt();
    let prefix = format!("idem_bench_{}:", std::process::id());
    let store = rt
        .block_on(RedisIdempotencyStore::connect(&url))
        .unwrap()
        .with_prefix(prefix.clone());
    let conn = store.get_ref().clone();
    let (cleanup, cleanup_prefix) = (conn.clone(), prefix.clone());
    let claim = Arc::new(redis::Script::new(
        "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])",
    ));
    let finish = Arc::new(redis::Script::new(
        "return redis.call('SET', KEYS[1], ARGV[1], 'XX', 'PX', ARGV[2])",
    ));
    let (c2, p2) = (conn.clone(), prefix.clone());
    let raw: Op = Arc::new(move |n| {
        let (mut conn, claim, finish) = (conn.clone(), claim.clone(), finish.clone());
        let k = format!("{prefix}raw:{}", key(n).storage_key());
        Box::pin(async move {
            let _: redis::Value = claim
                .key(&k)
                .arg(&fp().as_bytes()[..])
                .arg(86_400_000)
                .invoke_async(&mut conn)
                .await
                .unwrap();
            let _: redis::Value = finish
                .key(&k)
                .arg(response().encode())
                .arg(86_400_000)
                .invoke_async(&mut conn)
                .await
                .unwrap();
        })
    });
    let raw_read: Op = Arc::new(move |n| {
        let mut conn = c2.clone();
        let k = format!("{p2}raw:{}", key(n % 16).storage_key());
        Box::pin(async move {
            let _: Option<Vec<u8>> = redis::cmd("GET")
                .arg(k)
                .query_async(&mut conn)
                .await
                .unwrap();
        })
    });
    group(c, &rt, "redis", raw, raw_read, Arc::new(store), 5_000);
    // Remove this run's keys.
    rt.block_on(async {
        let mut conn = cleanup;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{cleanup_prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap();
            if !keys.is_empty() {
                let _: i64 = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    });
}

/// The layer's own cost: the same axum handler with and without it, on the
/// in-memory store, each request with a fresh key (claim + store response).
fn layer(c: &mut Criterion) {
    let rt = rt();
    let handler =
        || post(|| async { ([("content-type", "application/json")], "{\"id\":\"pay_1\"}") });
    let bare = Router::new().route("/v1/payments", handler());
    let store = Arc::new(InMemoryIdempotencyStore::new());
    let layer = IdempotencyLayer::builder(store).build().unwrap();
    let wrapped = Router::new().route("/v1/payments", handler().layer(layer));
    let request = |n: u64| {
        axum::http::Request::post("/v1/payments")
            .header("content-type", "application/json")
            .header("idempotency-key", format!("key-{n}"))
            .body(Body::from(r#"{"amount":1250,"currency":"EUR","table":7}"#))
            .unwrap()
    };
    let call = |app: Router, n: u64| async move {
        let resp = app.oneshot(request(n)).await.unwrap();
        resp.into_body().collect().await.unwrap();
    };
    let mut g = c.benchmark_group("layer");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (label, app, replay) in [
        ("axum_handler", &bare, false),
        ("axum_handler_with_layer", &wrapped, false),
        ("axum_handler_with_layer_replay", &wrapped, true),
    ] {
        if replay {
            rt.block_on(call(app.clone(), 0));
        }
        g.bench_function(label, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let app = app.clone();
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let n = if replay {
                            0
                        } else {
                            SEQ.fetch_add(1, Ordering::Relaxed) + 1
                        };
                        call(app.clone(), n).await;
                    }
                    start.elapsed()
                }
            });
        });
    }
    // Components of the layer's cost, sequential.
    let fpr = counterfoil_idempotency::Fingerprinter::default();
    g.bench_function("fingerprint_request", |b| {
        b.iter(|| {
            fpr.request(
                "POST",
                "/v1/payments",
                "/v1/payments",
                br#"{"amount":1250,"currency":"EUR","table":7}"#,
            )
            .unwrap()
        });
    });
    let mem: Arc<dyn IdempotencyStore> = Arc::new(InMemoryIdempotencyStore::new());
    let one = ours(mem);
    g.bench_function("memory_begin_complete_sequential", |b| {
        b.to_async(&rt)
            .iter(|| one(SEQ.fetch_add(1, Ordering::Relaxed) + 1));
    });
    g.finish();
    // Direct overhead figure: median of 5 rounds of 20k requests each.
    let mut deltas = Vec::new();
    for _ in 0..5 {
        let time = |app: &Router| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..20_000 {
                    call(app.clone(), SEQ.fetch_add(1, Ordering::Relaxed) + 1).await;
                }
                start.elapsed().as_secs_f64() / 20_000.0
            })
        };
        let b = time(&bare);
        let w = time(&wrapped);
        deltas.push(((w - b) * 1e9, b * 1e9));
    }
    deltas.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!(
        "RATIO layer: overhead per request = {:.0} ns (bare handler {:.0} ns; median of 5 rounds of 20000)",
        deltas[2].0, deltas[2].1
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

criterion_group!(benches, layer, memory, sqlite, postgres, redis);
criterion_main!(benches);
