//! The conformance suite on every backend: in-memory, SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[cfg(all(feature = "postgres", feature = "sqlite"))]
mod common;

use counterfoil_saga::conformance::{memory_backend, run_all};

#[tokio::test]
async fn conformance_in_memory() {
    run_all(|| async { memory_backend() }).await;
}

#[cfg(all(feature = "postgres", feature = "sqlite"))]
#[tokio::test]
async fn conformance_sqlite() {
    run_all(common::sqlite_backend).await;
}

#[cfg(all(feature = "postgres", feature = "sqlite"))]
#[tokio::test]
async fn conformance_postgres() {
    let Some(url) = common::pg_url() else { return };
    let schemas = parking_lot::Mutex::new(Vec::new());
    run_all(|| common::pg_backend(&url, &schemas)).await;
    let names = schemas.lock().clone();
    for s in names {
        common::pg_drop(&url, &s).await;
    }
}
