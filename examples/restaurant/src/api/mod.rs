//! The HTTP API: `/v1` (JSON, problem+json errors, API keys, per-key rate
//! limits, request size limits), the WebSocket, health, metrics, the OpenAPI
//! document, the API page and the console.

mod auth;
mod console;
pub(crate) mod docs;
mod events;
mod health;
pub(crate) mod idempotency;
mod operator;
mod payments;
mod printers;
mod problem;
mod rate_limit;
pub(crate) mod tail;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::broadcast;
use tower_http::timeout::TimeoutLayer;

use crate::db::{Db, Durability};
use crate::printing::Simulators;
use crate::store::events::Event;
pub(crate) use auth::KeyCache;
use problem::Problem;
pub(crate) use rate_limit::RateLimiter;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) db: Db,
    pub(crate) keys: Arc<KeyCache>,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) tail: broadcast::Sender<Arc<Event>>,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) sims: Simulators,
    pub(crate) sagas: crate::flow::Sagas,
    /// Printer commands leave through the outbox, like receipts.
    pub(crate) outbox: crate::messaging::Outbox,
    pub(crate) names: crate::messaging::Names,
    /// For the readiness probe.
    pub(crate) bus: crate::messaging::Bus,
    /// Answers wait for the commits before them to reach the disk.
    pub(crate) durable: Durability,
}

/// Holds every `/v1` answer until the commits made before it are on disk
/// (group commit; nothing to wait for unless `--sqlite-sync grouped`), so
/// a client is never told of a payment a power failure could take back.
async fn after_sync(State(durable): State<Durability>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    match durable.barrier().await {
        Ok(()) => res,
        Err(e) => {
            tracing::error!(error = %e, status = %res.status(), "answer withheld");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-durable",
                "the server cannot make its database durable; retry with the same Idempotency-Key once it is restarted",
            )
            .into_response()
        }
    }
}

async fn not_found() -> Problem {
    Problem::not_found("route")
}

/// The idempotency layers of the creating endpoints.
#[derive(Debug, Clone)]
pub(crate) struct Idempotent {
    pub(crate) payments: counterfoil_idempotency::IdempotencyLayer,
    pub(crate) refunds: counterfoil_idempotency::IdempotencyLayer,
}

/// The whole router.
pub(crate) fn router(state: AppState, max_body: usize, idem: Idempotent) -> Router {
    let v1 = Router::new()
        .route(
            "/payments",
            post(payments::create)
                .layer(idem.payments)
                .get(payments::list),
        )
        .route("/payments/{id}", get(payments::get_one))
        .route(
            "/payments/{id}/refunds",
            post(payments::refund).layer(idem.refunds),
        )
        .route("/printers", get(printers::list))
        .route("/printers/{id}", get(printers::get_one))
        .route("/printers/{id}/reports/{kind}", post(printers::report))
        .route("/printers/{id}/cash", post(printers::cash))
        .route("/printers/{id}/simulator", put(printers::set_faults))
        .route("/printers/{id}/simulator/journal", get(printers::journal))
        .route("/operator/sagas", get(operator::list_parked))
        .route("/operator/sagas/{id}", get(operator::inspect))
        .route("/operator/sagas/{id}/retry", post(operator::retry))
        .route("/operator/sagas/{id}/resolve", post(operator::resolve))
        .route("/operator/print-jobs/unknown", get(operator::unknown_jobs))
        .route("/operator/print-jobs/resolve", post(operator::resolve_job))
        .route("/operator/dead-letters", get(operator::dead_letters))
        .route("/operator/dead-letters/{id}/replay", post(operator::replay))
        .route(
            "/operator/restaurants/{id}/keys",
            post(operator::create_key),
        )
        .route("/events", get(events::events))
        // Every /v1 route needs a key; authenticating before the routes'
        // own layers lets idempotency keys be scoped to the restaurant.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.durable.clone(),
            after_sync,
        ));
    Router::new()
        .nest("/v1", v1)
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(docs::openapi))
        .route("/api", get(docs::page))
        .route("/console", get(console::index))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style))
        .route("/", get(console::root))
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn(crate::telemetry::trace_layer))
        // Bodies are read only by the JSON extractor, which answers 413
        // problem+json past this size.
        .layer(DefaultBodyLimit::max(max_body))
        // `Prefer: wait` may hold a request up to 60 s.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(75),
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;

    fn app(durable: Durability) -> Router {
        Router::new()
            .route("/", post(|| async { "accepted" }))
            .layer(axum::middleware::from_fn_with_state(durable, after_sync))
    }

    async fn call(app: Router) -> Response {
        let req = Request::post("/").body(Body::empty()).unwrap();
        app.oneshot(req).await.unwrap()
    }

    #[tokio::test]
    async fn answers_pass_once_their_commits_are_synced() {
        assert_eq!(call(app(Durability::none())).await.status(), StatusCode::OK);
    }

    /// A log that cannot be synced withholds the handler's answer: the
    /// client gets 503 problem+json and retries with its key after a
    /// restart, never a 200 for a commit the disk may not hold.
    #[tokio::test]
    async fn an_answer_whose_commits_cannot_be_synced_is_withheld() {
        // The log's directory is a file: the sync fails.
        let durable = Durability::grouped(std::path::Path::new("/dev/null/x.sqlite"));
        let res = call(app(durable.clone())).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            res.headers()[axum::http::header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(res.into_body(), 4096).await.unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["type"], "/problems/not-durable");
        assert!(!durable.healthy());
        // And it stays so: a later answer is withheld too.
        assert_eq!(
            call(app(durable)).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
