//! Claim and completion inside the caller's transaction: the idempotency
//! record commits (or rolls back) with the business rows.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use counterfoil_idempotency::{
    Begin, BeginOptions, Error, Fingerprint, IdempotencyContext, IdempotencyKey, IdempotencyLayer,
    IdempotencyStore, ManualClock, PgIdempotencyStore, Scope, SqliteIdempotencyStore,
    StoredResponse,
};
use http_body_util::BodyExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, SqlitePool};
use tower::ServiceExt;

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(Scope::new("r-1", "api-1", "create_payment").unwrap(), k).unwrap()
}

/// Deletes the database files when the test ends.
struct TempDb(std::path::PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

async fn sqlite(name: &str) -> (SqlitePool, SqliteIdempotencyStore, TempDb) {
    let path = std::env::temp_dir().join(format!(
        "counterfoil-idem-tx-{name}-{}.db",
        std::process::id()
    ));
    drop(TempDb(path.clone()));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let store = SqliteIdempotencyStore::new(pool.clone());
    assert_eq!(store.migrate().await.unwrap(), 1);
    assert_eq!(store.migrate().await.unwrap(), 0);
    sqlx::query("CREATE TABLE payments (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    (pool, store, TempDb(path))
}

async fn payments(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlite_record_commits_and_rolls_back_with_business_rows() {
    let (pool, store, _db) = sqlite("commit").await;
    let fp = Fingerprint::of_bytes(b"1250 EUR");
    let opts = BeginOptions::default();

    // Rolled back: neither the payment nor the claim exists.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    let Begin::Execute(lease) = store
        .begin_in(&mut tx, &key("a"), &fp, &opts)
        .await
        .unwrap()
    else {
        panic!("execute")
    };
    sqlx::query("INSERT INTO payments (amount) VALUES (1250)")
        .execute(&mut *tx)
        .await
        .unwrap();
    store
        .complete_in(&mut tx, &lease, &StoredResponse::new(201, "p-1"), opts.ttl)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(payments(&pool).await, 0);

    // Committed: both exist, and the key replays.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    let Begin::Execute(lease) = store
        .begin_in(&mut tx, &key("a"), &fp, &opts)
        .await
        .unwrap()
    else {
        panic!("execute after rollback")
    };
    sqlx::query("INSERT INTO payments (amount) VALUES (1250)")
        .execute(&mut *tx)
        .await
        .unwrap();
    store
        .complete_in(&mut tx, &lease, &StoredResponse::new(201, "p-1"), opts.ttl)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(payments(&pool).await, 1);
    let Begin::Replay(r) = store.begin(&key("a"), &fp, &opts).await.unwrap() else {
        panic!("replay")
    };
    assert_eq!(r.body, "p-1");
}

#[derive(Clone)]
struct AppState {
    pool: SqlitePool,
    store: SqliteIdempotencyStore,
}

async fn create_payment(
    State(st): State<AppState>,
    Extension(ctx): Extension<IdempotencyContext>,
    body: String,
) -> Response {
    let amount: i64 = serde_json::from_str::<serde_json::Value>(&body).unwrap()["amount"]
        .as_i64()
        .unwrap();
    let mut tx = st.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    let id: i64 = sqlx::query_scalar("INSERT INTO payments (amount) VALUES (?1) RETURNING id")
        .bind(amount)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let stored =
        StoredResponse::json(201, &serde_json::json!({"id": id, "amount": amount})).unwrap();
    match st
        .store
        .complete_in(&mut tx, ctx.lease(), &stored, ctx.ttl())
        .await
    {
        Ok(()) => {
            tx.commit().await.unwrap();
            ctx.respond(&stored)
        }
        Err(Error::LeaseLost) => {
            tx.rollback().await.unwrap();
            let mut r = Response::new(Body::from("lease lost"));
            *r.status_mut() = StatusCode::CONFLICT;
            r
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn handler_completes_in_its_own_transaction_behind_the_layer() {
    let (pool, store, _db) = sqlite("layer").await;
    let layer = IdempotencyLayer::builder(Arc::new(store.clone()))
        .operation("create_payment")
        .build()
        .unwrap();
    let app = Router::new()
        .route("/v1/payments", post(create_payment).layer(layer))
        .with_state(AppState {
            pool: pool.clone(),
            store,
        });
    let send = |app: Router| async move {
        let r = axum::http::Request::post("/v1/payments")
            .header("idempotency-key", "\"pay-1\"")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"amount":1250,"currency":"EUR"}"#))
            .unwrap();
        let resp = app.oneshot(r).await.unwrap();
        let (parts, body) = resp.into_parts();
        (parts, body.collect().await.unwrap().to_bytes())
    };
    let (p1, b1) = send(app.clone()).await;
    let (p2, b2) = send(app.clone()).await;
    assert_eq!(p1.status, StatusCode::CREATED);
    assert_eq!(p2.status, StatusCode::CREATED);
    assert_eq!(b1, b2);
    assert_eq!(p1.headers["content-type"], "application/json");
    assert!(p1.headers.get("idempotent-replayed").is_none());
    assert_eq!(p2.headers["idempotent-replayed"], "true");
    assert_eq!(payments(&pool).await, 1);
}

#[tokio::test]
async fn postgres_completion_in_transaction_is_fenced() {
    let Some(url) = common::service_url("TEST_POSTGRES_URL") else {
        return;
    };
    let schema = format!("idem_tx_{}", std::process::id());
    let mut admin = PgConnection::connect(&url).await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(
            PgConnectOptions::from_str(&url)
                .unwrap()
                .options([("search_path", &schema)]),
        )
        .await
        .unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let store = PgIdempotencyStore::new(pool.clone()).with_clock(Arc::new(clock.clone()));
    store.migrate().await.unwrap();
    sqlx::query("CREATE TABLE payments (id BIGSERIAL PRIMARY KEY, amount BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let fp = Fingerprint::of_bytes(b"x");
    let opts = BeginOptions::with_lease(Duration::from_secs(10));

    // Claim in the transaction; a concurrent claim of the same key waits on
    // the row and then sees the committed record.
    let mut tx = pool.begin().await.unwrap();
    let Begin::Execute(lease) = store
        .begin_in(&mut tx, &key("k"), &fp, &opts)
        .await
        .unwrap()
    else {
        panic!("execute")
    };
    let waiter = tokio::spawn({
        let store = store.clone();
        async move { store.begin(&key("k"), &fp, &opts).await.unwrap() }
    });
    sqlx::query("INSERT INTO payments (amount) VALUES (1250)")
        .execute(&mut *tx)
        .await
        .unwrap();
    store
        .complete_in(&mut tx, &lease, &StoredResponse::new(201, "ok"), opts.ttl)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let Begin::Replay(r) = waiter.await.unwrap() else {
        panic!("replay after commit")
    };
    assert_eq!(r.body, "ok");

    // A stale holder's completion in its transaction is refused: it rolls
    // back its business rows too.
    let Begin::Execute(stale) = store.begin(&key("s"), &fp, &opts).await.unwrap() else {
        panic!("execute")
    };
    clock.advance(Duration::from_secs(11));
    let Begin::Execute(fresh) = store.begin(&key("s"), &fp, &opts).await.unwrap() else {
        panic!("takeover")
    };
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO payments (amount) VALUES (999)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let e = store
        .complete_in(
            &mut tx,
            &stale,
            &StoredResponse::new(201, "stale"),
            opts.ttl,
        )
        .await;
    assert!(matches!(e, Err(Error::LeaseLost)));
    tx.rollback().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    store
        .complete(&fresh, &StoredResponse::new(201, "fresh"), opts.ttl)
        .await
        .unwrap();
    pool.close().await;
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}
