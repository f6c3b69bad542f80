//! The conformance suite against a real Redis (`TEST_REDIS_URL`), a unique
//! key prefix per test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use counterfoil_idempotency::conformance::Backend;
use counterfoil_idempotency::{Clock, IdempotencyStore, RedisIdempotencyStore};

struct Redis;

#[async_trait]
impl Backend for Redis {
    async fn open(&self, ns: &str, clock: Arc<dyn Clock>) -> Option<Arc<dyn IdempotencyStore>> {
        let url = common::service_url("TEST_REDIS_URL")?;
        let store = RedisIdempotencyStore::connect(&url)
            .await
            .expect("connect redis")
            .with_prefix(format!("{ns}:"))
            .with_clock(clock);
        Some(Arc::new(store))
    }

    async fn cleanup(&self, ns: &str) {
        let Ok(url) = std::env::var("TEST_REDIS_URL") else {
            return;
        };
        let Ok(client) = redis::Client::open(url) else {
            return;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{ns}:*"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
        }
    }
}

counterfoil_idempotency::conformance_suite!(Redis);
