//! Helpers shared by the integration tests: fresh SQLite databases and PostgreSQL schemas.
#![allow(dead_code, unreachable_pub)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use counterfoil_saga::conformance::{Backend, EffectRows};
use counterfoil_saga::{Error, ManualClock, PgSagaStore, SqliteSagaStore, StepTx};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

/// The PostgreSQL URL, or `None` (with a message) when unset outside CI.
pub fn pg_url() -> Option<String> {
    match std::env::var("TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("TEST_POSTGRES_URL is not set and CI=true");
            }
            eprintln!("skipping: TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// A pool on a fresh schema of its own.
pub async fn pg_pool(url: &str, max: u32) -> (PgPool, String) {
    let schema = format!("saga_t_{}", Uuid::new_v4().simple());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("connect to TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("create schema");
    admin.close().await;
    let opts = PgConnectOptions::from_str(url)
        .expect("url")
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .connect_with(opts)
        .await
        .expect("connect");
    (pool, schema)
}

/// Drops a test schema.
pub async fn pg_drop(url: &str, schema: &str) {
    if let Ok(admin) = PgPoolOptions::new().max_connections(1).connect(url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await;
        admin.close().await;
    }
}

/// A fresh SQLite database file in WAL mode.
pub async fn sqlite_pool(max: u32) -> (SqlitePool, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("saga-test-{}.db", Uuid::new_v4().simple()));
    let opts = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(max)
        .connect_with(opts)
        .await
        .expect("open sqlite");
    (pool, path)
}

/// Step rows in a `conf_effects` table on PostgreSQL.
#[derive(Debug)]
pub struct PgRows(pub PgPool);

#[async_trait]
impl EffectRows for PgRows {
    async fn write(&self, tx: &mut StepTx, saga: Uuid, step: &str) -> Result<(), Error> {
        let tx = tx.postgres().ok_or(Error::Corrupt("not postgres".into()))?;
        sqlx::query("INSERT INTO conf_effects (saga, step) VALUES ($1, $2)")
            .bind(saga.to_string())
            .bind(step)
            .execute(&mut **tx)
            .await
            .map_err(|e| Error::Backend(Box::new(e)))?;
        Ok(())
    }

    async fn count(&self, saga: Uuid) -> Result<usize, Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conf_effects WHERE saga = $1")
            .bind(saga.to_string())
            .fetch_one(&self.0)
            .await
            .map_err(|e| Error::Backend(Box::new(e)))?;
        Ok(n as usize)
    }
}

/// Step rows in a `conf_effects` table on SQLite.
#[derive(Debug)]
pub struct SqliteRows(pub SqlitePool);

#[async_trait]
impl EffectRows for SqliteRows {
    async fn write(&self, tx: &mut StepTx, saga: Uuid, step: &str) -> Result<(), Error> {
        let tx = tx.sqlite().ok_or(Error::Corrupt("not sqlite".into()))?;
        sqlx::query("INSERT INTO conf_effects (saga, step) VALUES ($1, $2)")
            .bind(saga.to_string())
            .bind(step)
            .execute(&mut **tx)
            .await
            .map_err(|e| Error::Backend(Box::new(e)))?;
        Ok(())
    }

    async fn count(&self, saga: Uuid) -> Result<usize, Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conf_effects WHERE saga = $1")
            .bind(saga.to_string())
            .fetch_one(&self.0)
            .await
            .map_err(|e| Error::Backend(Box::new(e)))?;
        Ok(n as usize)
    }
}

/// A conformance backend on a fresh PostgreSQL schema.
pub async fn pg_backend(url: &str, schemas: &parking_lot::Mutex<Vec<String>>) -> Backend {
    let (pool, schema) = pg_pool(url, 4).await;
    schemas.lock().push(schema);
    sqlx::query("CREATE TABLE conf_effects (saga TEXT NOT NULL, step TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("effects table");
    let clock = ManualClock::default();
    let store = PgSagaStore::new(pool.clone()).with_clock(Arc::new(clock.clone()));
    Backend {
        store: Arc::new(store),
        clock,
        rows: Arc::new(PgRows(pool)),
    }
}

/// A conformance backend on a fresh SQLite file.
pub async fn sqlite_backend() -> Backend {
    let (pool, _path) = sqlite_pool(4).await;
    sqlx::query("CREATE TABLE conf_effects (saga TEXT NOT NULL, step TEXT NOT NULL)")
        .execute(&pool)
        .await
        .expect("effects table");
    let clock = ManualClock::default();
    let store = SqliteSagaStore::new(pool.clone()).with_clock(Arc::new(clock.clone()));
    Backend {
        store: Arc::new(store),
        clock,
        rows: Arc::new(SqliteRows(pool)),
    }
}
