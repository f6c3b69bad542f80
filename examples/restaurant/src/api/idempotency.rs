//! Idempotency keys on the creating endpoints (counterfoil-idempotency's
//! tower layer, per the IETF Idempotency-Key draft): a retried request is
//! answered with the first one's stored response (`Idempotent-Replayed:
//! true`); a duplicate that arrives while the first is still running waits
//! for it and gets the same answer; the same key with another body is 422.
//!
//! Keys are scoped to the restaurant. The store is Redis when `REDIS_URL` is
//! set, else the server database. Behind the layer, the payment and refund
//! tables keep a unique (restaurant, key) as a second line of defence.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use counterfoil_idempotency::{
    IdempotencyLayer, IdempotencyScope, IdempotencyStore, InFlightPolicy, PgIdempotencyStore,
    RedisIdempotencyStore, SqliteIdempotencyStore,
};

use super::AppState;
use super::auth::Caller;
use crate::db::Db;

/// The idempotency store: Redis when given, else the server database.
pub(crate) async fn store(
    db: &Db,
    redis: Option<(&str, &str)>,
) -> Result<Arc<dyn IdempotencyStore>, counterfoil_idempotency::Error> {
    if let Some((url, prefix)) = redis {
        let store = RedisIdempotencyStore::connect(url)
            .await?
            .with_prefix(prefix);
        return Ok(Arc::new(store));
    }
    Ok(match db {
        Db::Postgres(p) => {
            let s = PgIdempotencyStore::new(p.clone());
            s.migrate().await?;
            Arc::new(s)
        }
        Db::Sqlite(p) => {
            let s = SqliteIdempotencyStore::new(p.clone());
            s.migrate().await?;
            Arc::new(s)
        }
    })
}

/// The layer for one operation (`create_payment`, `create_refund`, ...).
pub(crate) fn layer(
    store: Arc<dyn IdempotencyStore>,
    operation: &str,
    max_body: usize,
) -> Result<IdempotencyLayer, counterfoil_idempotency::BuildError> {
    IdempotencyLayer::builder(store)
        .operation(operation)
        // A till that retries while its first request still runs gets the
        // first request's answer, not a 409.
        .in_flight(InFlightPolicy::Wait(Duration::from_secs(65)))
        // A handler may run up to a minute (`Prefer: wait=60`), but the layer
        // renews the lease every third of it (5 s) while the handler runs, so
        // the lease only bounds how long a retry waits after the process
        // holding the key died: 15 s rather than the longest handler.
        .lease(Duration::from_secs(15))
        .max_request_body(max_body)
        .build()
}

/// Authenticates the caller before the idempotency layer runs, and scopes
/// idempotency keys to the caller's restaurant.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let caller = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(c) => c,
        Err(problem) => return problem.into_response(),
    };
    let tenant = caller.restaurant().unwrap_or("operator").to_owned();
    parts
        .extensions
        .insert(IdempotencyScope::new(tenant.clone(), tenant));
    next.run(Request::from_parts(parts, body)).await
}
