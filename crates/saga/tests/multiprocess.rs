//! Several real worker processes on one PostgreSQL database; one is killed with SIGKILL.
//! Every saga completes exactly once and two sagas never hold one printer at once.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use counterfoil_saga::{
    Clock, Definition, Engine, Kind, PgSagaStore, Resolution, Step, StepCx, StepError, StepOutcome,
    SystemClock, WorkerConfig, async_trait,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const CHILD_ENV: &str = "SAGA_MP_CHILD_SCHEMA";
const SAGAS: usize = 60;
const WORKERS: usize = 3;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    printer: String,
}

struct TxStep {
    name: &'static str,
    kind: Kind,
}

async fn record(cx: &mut StepCx<'_, Order>, step: &str) -> Result<(), StepError> {
    let id = cx.saga_id().to_string();
    let worker = std::process::id() as i64;
    let tx = cx.tx().await?;
    let tx = tx
        .postgres()
        .ok_or_else(|| StepError::fail("not postgres"))?;
    sqlx::query("INSERT INTO mp_effects (saga, step, worker) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(step)
        .bind(worker)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Step<Order> for TxStep {
    fn name(&self) -> &str {
        self.name
    }
    fn kind(&self) -> Kind {
        self.kind
    }
    // Its only effect is a row in the step transaction: re-running cannot apply it twice.
    fn idempotent(&self) -> bool {
        true
    }
    async fn run(&self, cx: &mut StepCx<'_, Order>) -> Result<StepOutcome, StepError> {
        record(cx, self.name).await?;
        Ok(StepOutcome::Done)
    }
}

/// Holds the order's printer for a while, logging when it starts and ends outside the step
/// transaction, as a device would see it.
struct Print {
    pool: PgPool,
}

#[async_trait]
impl Step<Order> for Print {
    fn name(&self) -> &str {
        "print"
    }
    fn kind(&self) -> Kind {
        Kind::Retriable
    }
    fn resource(&self, state: &Order) -> Option<String> {
        Some(state.printer.clone())
    }
    async fn run(&self, cx: &mut StepCx<'_, Order>) -> Result<StepOutcome, StepError> {
        let id = cx.saga_id().to_string();
        let now = || SystemClock.now_ms();
        let pid = i64::from(std::process::id());
        sqlx::query(
            "INSERT INTO mp_device (saga, printer, edge, at, worker) VALUES ($1, $2, 'start', $3, $4)",
        )
        .bind(&id)
        .bind(&cx.state().printer)
        .bind(now())
        .bind(pid)
            .execute(&self.pool)
            .await?;
        tokio::time::sleep(Duration::from_millis(80)).await;
        sqlx::query(
            "INSERT INTO mp_device (saga, printer, edge, at, worker) VALUES ($1, $2, 'end', $3, $4)",
        )
        .bind(&id)
        .bind(&cx.state().printer)
        .bind(now())
        .bind(pid)
            .execute(&self.pool)
            .await?;
        record(cx, "print").await?;
        Ok(StepOutcome::Done)
    }
    async fn reconcile(&self, cx: &mut StepCx<'_, Order>) -> Result<Resolution, StepError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM mp_effects WHERE saga = $1 AND step = 'print'",
        )
        .bind(cx.saga_id().to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(if n > 0 {
            Resolution::Applied
        } else {
            Resolution::NotApplied
        })
    }
}

fn definition(pool: &PgPool) -> Definition<Order> {
    Definition::builder("mp-order", 1)
        .step(TxStep {
            name: "reserve",
            kind: Kind::Compensatable,
        })
        .step(TxStep {
            name: "charge",
            kind: Kind::Pivot,
        })
        .step(Print { pool: pool.clone() })
        .step(TxStep {
            name: "notify",
            kind: Kind::Retriable,
        })
        .build()
        .unwrap()
}

async fn schema_pool(url: &str, schema: &str, max: u32) -> PgPool {
    let opts = PgConnectOptions::from_str(url)
        .unwrap()
        .options([("search_path", schema)]);
    PgPoolOptions::new()
        .max_connections(max)
        .connect_with(opts)
        .await
        .unwrap()
}

async fn engine(pool: &PgPool) -> Engine {
    Engine::builder(Arc::new(PgSagaStore::new(pool.clone())))
        .register(definition(pool))
        .lease(Duration::from_secs(2))
        .resource_poll(Duration::from_millis(200))
        .build()
        .await
        .unwrap()
}

async fn unfinished(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM saga_instances WHERE status NOT IN ('completed', 'compensated', 'failed')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The child: a worker process. Returns at once unless started by the parent test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mp_child_worker() {
    let Ok(schema) = std::env::var(CHILD_ENV) else {
        return;
    };
    let url = std::env::var("TEST_POSTGRES_URL").unwrap();
    let pool = schema_pool(&url, &schema, 6).await;
    let engine = engine(&pool).await;
    let watch = pool.clone();
    let shutdown = async move {
        let deadline = Instant::now() + Duration::from_secs(90);
        while unfinished(&watch).await > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let cfg = WorkerConfig::default()
        .concurrency(8)
        .batch(4)
        .poll(Duration::from_millis(20));
    engine.run(cfg, shutdown).await.unwrap();
}

fn spawn_child(schema: &str, url: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "mp_child_worker",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, schema)
        .env("TEST_POSTGRES_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_worker_processes_one_killed() {
    let Some(url) = common::pg_url() else { return };
    let (pool, schema) = common::pg_pool(&url, 4).await;
    sqlx::raw_sql(
        "CREATE TABLE mp_effects (saga TEXT NOT NULL, step TEXT NOT NULL, worker BIGINT NOT NULL);
         CREATE TABLE mp_device (saga TEXT NOT NULL, printer TEXT NOT NULL, edge TEXT NOT NULL, at BIGINT NOT NULL, worker BIGINT NOT NULL);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let eng = engine(&pool).await;
    let def = definition(&pool);
    let mut ids = Vec::new();
    for i in 0..SAGAS {
        let order = Order {
            printer: format!("printer-{}", i % 2),
        };
        ids.push(
            eng.start(&def, &format!("order-{i}"), &order)
                .await
                .unwrap()
                .id,
        );
    }

    let mut children: Vec<Child> = (0..WORKERS).map(|_| spawn_child(&schema, &url)).collect();
    // Once work is under way, SIGKILL a worker in the middle of printing.
    let started = Instant::now();
    let killed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no print in flight to kill"
        );
        let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mp_effects WHERE step = 'print'")
            .fetch_one(&pool)
            .await
            .unwrap();
        let printing: Option<i64> = sqlx::query_scalar(
            "SELECT worker FROM mp_device d WHERE edge = 'start' AND NOT EXISTS \
             (SELECT 1 FROM mp_device e WHERE e.saga = d.saga AND e.worker = d.worker AND e.edge = 'end') \
             LIMIT 1",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        if done >= (SAGAS / 4) as i64
            && let Some(pid) = printing
            && let Some(i) = children.iter().position(|c| i64::from(c.id()) == pid)
        {
            let mut child = children.remove(i);
            child.kill().unwrap();
            child.wait().unwrap();
            let open: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM mp_device d WHERE worker = $1 AND edge = 'start' AND NOT EXISTS \
                 (SELECT 1 FROM mp_device e WHERE e.saga = d.saga AND e.worker = d.worker AND e.edge = 'end')",
            )
            .bind(pid)
            .fetch_one(&pool)
            .await
            .unwrap();
            if open > 0 {
                break pid;
            }
            // The print ended just before the kill: replace the worker and try again.
            children.push(spawn_child(&schema, &url));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };

    let deadline = Instant::now() + Duration::from_secs(120);
    for c in children.iter_mut() {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "worker failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("worker did not finish");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Every saga completed, every step's effect exactly once.
    for id in &ids {
        let rec = eng.get(*id).await.unwrap();
        assert_eq!(rec.status, counterfoil_saga::Status::Completed, "{rec:?}");
    }
    let dupes: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT saga, step FROM mp_effects GROUP BY saga, step HAVING COUNT(*) <> 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(dupes, 0);
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mp_effects")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(total, (SAGAS * 4) as i64);
    let workers: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT worker) FROM mp_effects")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(workers >= 2, "work spread over the workers");

    // The killed worker died mid-print; its saga was taken over after the lease and
    // reconciled, not re-run blindly, and finished by another worker.
    let cut: Vec<String> = sqlx::query_scalar(
        "SELECT saga FROM mp_device d WHERE worker = $1 AND edge = 'start' AND NOT EXISTS \
         (SELECT 1 FROM mp_device e WHERE e.saga = d.saga AND e.worker = d.worker AND e.edge = 'end')",
    )
    .bind(killed)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!cut.is_empty(), "the killed worker was printing");
    for saga in &cut {
        let by: i64 =
            sqlx::query_scalar("SELECT worker FROM mp_effects WHERE saga = $1 AND step = 'print'")
                .bind(saga)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_ne!(by, killed);
        let log = eng.log(uuid::Uuid::parse_str(saga).unwrap()).await.unwrap();
        assert!(
            log.iter()
                .any(|l| l.step == "print" && l.outcome == "reconciled_not_applied"),
            "{log:?}"
        );
    }

    // Per printer, each saga's use (first start to last end, across workers) never overlaps
    // another saga's.
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT printer, saga, MIN(at), MAX(at) FROM mp_device GROUP BY printer, saga ORDER BY printer, MIN(at)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), SAGAS);
    for pair in rows.windows(2) {
        let (p1, s1, _, end1) = &pair[0];
        let (p2, s2, start2, _) = &pair[1];
        if p1 == p2 {
            assert!(end1 <= start2, "{s1} and {s2} overlap on {p1}");
        }
    }
    common::pg_drop(&url, &schema).await;
}
