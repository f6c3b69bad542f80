//! The conformance suite against the in-memory store.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use async_trait::async_trait;
use counterfoil_idempotency::conformance::Backend;
use counterfoil_idempotency::{Clock, IdempotencyStore, InMemoryIdempotencyStore};

struct Memory;

#[async_trait]
impl Backend for Memory {
    async fn open(&self, _ns: &str, clock: Arc<dyn Clock>) -> Option<Arc<dyn IdempotencyStore>> {
        Some(Arc::new(InMemoryIdempotencyStore::new().with_clock(clock)))
    }

    fn durable(&self) -> bool {
        false
    }
}

counterfoil_idempotency::conformance_suite!(Memory);
