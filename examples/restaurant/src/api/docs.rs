//! The OpenAPI document, generated from the handlers' annotations, and a
//! small interactive API page that works with no internet access (plain
//! HTML and JavaScript embedded in the binary).

use axum::Json;
use axum::response::Html;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{events, health, operator, payments, printers, problem};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "api_key",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("A restaurant key (rk_...) or the operator key"))
                        .build(),
                ),
            );
        }
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Counterfoil restaurant API",
        version = "1.0.0",
        description = "Card payments that end as exactly one fiscal receipt. Errors are RFC 9457 problem+json."
    ),
    paths(
        payments::create, payments::get_one, payments::list, payments::refund,
        printers::list, printers::get_one, printers::report, printers::cash,
        printers::set_faults, printers::journal,
        operator::list_parked, operator::inspect, operator::retry, operator::resolve,
        operator::unknown_jobs, operator::resolve_job,
        operator::dead_letters, operator::replay, operator::create_key,
        events::events,
        health::live, health::ready, health::metrics,
    ),
    components(schemas(problem::Problem, crate::store::events::Event)),
    modifiers(&Security),
    tags(
        (name = "payments", description = "Take, read, list and refund payments"),
        (name = "printers", description = "Fiscal printers: status, reports, cash"),
        (name = "events", description = "Live events over a WebSocket"),
        (name = "operator", description = "Parked sagas, print jobs of unknown outcome, dead letters, API keys (operator key)"),
        (name = "simulators", description = "Simulated printers (operator key)"),
        (name = "health", description = "Probes and metrics"),
    )
)]
pub(crate) struct ApiDoc;

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// `GET /api`: the interactive API page.
pub(crate) async fn page() -> Html<&'static str> {
    Html(include_str!("../../console/api.html"))
}
