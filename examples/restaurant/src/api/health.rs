//! `/health/live` (the process answers), `/health/ready` (the database and
//! the message bus answer) and `/metrics` (Prometheus text format).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

/// Readiness of each dependency.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    pub(crate) database: String,
    pub(crate) bus: String,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, description = "Alive")))]
pub(crate) async fn live() -> &'static str {
    "ok"
}

/// Readiness: 200 when the database and the bus answer, else 503.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = Ready), (status = 503, body = Ready)))]
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let database =
        match tokio::time::timeout(std::time::Duration::from_secs(2), state.db.ping()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => "timeout".to_owned(),
        };
    let bus = match state.bus.check().await {
        Ok(kind) => format!("ok ({kind})"),
        Err(e) => format!("error: {e}"),
    };
    let database = if database == "ok" && !state.durable.healthy() {
        "error: the write-ahead log could not be synced; restart".to_owned()
    } else {
        database
    };
    let status = if database == "ok" && bus.starts_with("ok") {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Ready { database, bus })).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
