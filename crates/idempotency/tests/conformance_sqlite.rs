//! The conformance suite against SQLite (a WAL file per test).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use counterfoil_idempotency::conformance::Backend;
use counterfoil_idempotency::{Clock, IdempotencyStore, SqliteIdempotencyStore};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

struct Sqlite;

fn path(ns: &str) -> PathBuf {
    std::env::temp_dir().join(format!("counterfoil-{ns}.db"))
}

#[async_trait]
impl Backend for Sqlite {
    async fn open(&self, ns: &str, clock: Arc<dyn Clock>) -> Option<Arc<dyn IdempotencyStore>> {
        let opts = SqliteConnectOptions::new()
            .filename(path(ns))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .expect("open sqlite");
        let store = SqliteIdempotencyStore::new(pool).with_clock(clock);
        store.migrate().await.expect("migrate");
        Some(Arc::new(store))
    }

    async fn cleanup(&self, ns: &str) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path(ns).into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

counterfoil_idempotency::conformance_suite!(Sqlite);
