//! The store conformance suite against every backend.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;

use counterfoil_outbox::conformance::{self, Harness};
use counterfoil_outbox::{InMemoryOutboxStore, ManualClock, PgOutboxStore, SqliteOutboxStore};

#[tokio::test]
async fn in_memory_store_conforms() {
    conformance::run_all(|clock: ManualClock| async move {
        let store = InMemoryOutboxStore::new().with_clock(Arc::new(clock));
        Harness::new(Arc::new(store.clone()), Arc::new(store))
    })
    .await;
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let files = std::sync::Mutex::new(Vec::new());
    conformance::run_all(|clock: ManualClock| {
        let files = &files;
        async move {
            let (pool, path) = common::sqlite_pool().await;
            files.lock().unwrap().push(path);
            let store = SqliteOutboxStore::new(pool).with_clock(Arc::new(clock));
            store.migrate().await.unwrap();
            store.migrate().await.unwrap();
            Harness::new(Arc::new(store.clone()), Arc::new(store))
        }
    })
    .await;
    for p in files.into_inner().unwrap() {
        common::remove_sqlite(&p);
    }
}

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(probe) = common::PgTestDb::new(1).await else {
        return;
    };
    probe.cleanup().await;
    let dbs = tokio::sync::Mutex::new(Vec::new());
    conformance::run_all(|clock: ManualClock| {
        let dbs = &dbs;
        async move {
            let db = common::PgTestDb::new(4).await.unwrap();
            let store = PgOutboxStore::new(db.pool.clone()).with_clock(Arc::new(clock));
            store.migrate().await.unwrap();
            store.migrate().await.unwrap();
            dbs.lock().await.push(db);
            Harness::new(Arc::new(store.clone()), Arc::new(store))
        }
    })
    .await;
    for db in dbs.into_inner() {
        db.cleanup().await;
    }
}

#[tokio::test]
async fn postgres_migrations_run_concurrently() {
    let Some(db) = common::PgTestDb::new(8).await else {
        return;
    };
    let store = PgOutboxStore::new(db.pool.clone());
    let runs = (0..6).map(|_| {
        let s = store.clone();
        async move { s.migrate().await }
    });
    for r in futures::future::join_all(runs).await {
        r.unwrap();
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    db.cleanup().await;
}

#[tokio::test]
async fn sqlite_migrations_run_concurrently() {
    let (pool, path) = common::sqlite_pool().await;
    let store = SqliteOutboxStore::new(pool.clone());
    let runs = (0..4).map(|_| {
        let s = store.clone();
        async move { s.migrate().await }
    });
    for r in futures::future::join_all(runs).await {
        r.unwrap();
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    common::remove_sqlite(&path);
}
