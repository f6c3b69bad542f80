//! The conformance suite against a real PostgreSQL (`TEST_POSTGRES_URL`),
//! a fresh schema per test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use counterfoil_idempotency::conformance::Backend;
use counterfoil_idempotency::{Clock, IdempotencyStore, PgIdempotencyStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

struct Pg;

#[async_trait]
impl Backend for Pg {
    async fn open(&self, ns: &str, clock: Arc<dyn Clock>) -> Option<Arc<dyn IdempotencyStore>> {
        let url = common::service_url("TEST_POSTGRES_URL")?;
        let mut admin = PgConnection::connect(&url).await.expect("connect postgres");
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {ns}")))
            .execute(&mut admin)
            .await
            .expect("create schema");
        admin.close().await.ok();
        let opts = PgConnectOptions::from_str(&url)
            .expect("url")
            .options([("search_path", ns)]);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .expect("pool");
        let store = PgIdempotencyStore::new(pool).with_clock(clock);
        store.migrate().await.expect("migrate");
        // Migrations are idempotent.
        assert_eq!(store.migrate().await.expect("migrate again"), 0);
        Some(Arc::new(store))
    }

    async fn cleanup(&self, ns: &str) {
        let Ok(url) = std::env::var("TEST_POSTGRES_URL") else {
            return;
        };
        if let Ok(mut admin) = PgConnection::connect(&url).await {
            let _ = sqlx::query(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {ns} CASCADE")))
                .execute(&mut admin)
                .await;
        }
    }
}

counterfoil_idempotency::conformance_suite!(Pg);
