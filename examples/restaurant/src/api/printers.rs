//! `/v1/printers`: status, X/Z reports, cash moves, and faults for
//! simulated printers. Commands travel to the restaurant's agent as print
//! jobs, the same way receipts do, because only the agent can reach the
//! printer.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Caller, Operator};
use super::problem::{JsonBody, Problem};
use crate::printing::simulated::{JournalEntry, SimFaults};
use crate::store::print_jobs::{self, JobResolution, PrintJob, PrintOutcome};
use crate::store::printers::{self, Printer};
use crate::telemetry::Trace;

/// A command sent to a printer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Command {
    /// The job id.
    pub(crate) id: String,
    pub(crate) printer: String,
    /// `x_report`, `z_report`, `cash`, `simulator`, `resolve`.
    pub(crate) kind: String,
    /// The outcome, once the agent reported it (with `Prefer: wait=N`).
    pub(crate) outcome: Option<serde_json::Value>,
}

/// Cash into (positive) or out of (negative) the drawer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CashMove {
    /// Minor units; positive in, negative out.
    #[schema(example = 10000)]
    pub(crate) amount: i64,
}

/// The restaurant's printers (operators: all).
#[utoipa::path(get, path = "/v1/printers", tag = "printers",
    responses((status = 200, body = Vec<Printer>)), security(("api_key" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Printer>>, Problem> {
    Ok(Json(printers::list(&state.db, caller.restaurant()).await?))
}

/// One printer: online, paper, open receipt, last document, breaker, queue.
#[utoipa::path(get, path = "/v1/printers/{id}", tag = "printers",
    params(("id" = String, Path, description = "Printer id")),
    responses((status = 200, body = Printer), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Printer>, Problem> {
    printers::get(&state.db, caller.restaurant(), &id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found("printer"))
}

/// What to send to a printer.
pub(crate) struct Cmd<'a> {
    /// The printer id.
    pub(crate) id: &'a str,
    /// The job kind.
    pub(crate) kind: &'a str,
    pub(crate) amount: i64,
    pub(crate) faults: Option<serde_json::Value>,
    pub(crate) resolve: Option<JobResolution>,
}

/// Queues a command for the printer's agent (with an `Idempotency-Key`, a
/// retried command runs once); with `Prefer: wait=N`, waits up to N
/// seconds for its outcome.
pub(crate) async fn send(
    state: &AppState,
    caller: &Caller,
    trace: &Trace,
    headers: &HeaderMap,
    cmd: Cmd<'_>,
) -> Result<Response, Problem> {
    let Cmd {
        id,
        kind,
        amount,
        faults,
        resolve,
    } = cmd;
    let printer = printers::get(&state.db, caller.restaurant(), id)
        .await?
        .ok_or_else(|| Problem::not_found("printer"))?;
    // With an Idempotency-Key a retried command runs once.
    let key = match headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        Some(k) if !k.is_empty() && k.len() <= 255 => format!("{}/{kind}/{k}", printer.id),
        Some(_) => {
            return Err(Problem::bad_request(
                "Idempotency-Key must be 1-255 characters",
            ));
        }
        None => format!("{}/{kind}/{}", printer.id, uuid::Uuid::now_v7()),
    };
    let job = PrintJob {
        key: key.clone(),
        subject: printer.id.clone(),
        restaurant: printer.restaurant.clone(),
        printer: printer.id.clone(),
        kind: kind.to_owned(),
        lines: Vec::new(),
        amount,
        currency: String::new(),
        original: None,
        faults,
        resolve,
        traceparent: Some(trace.traceparent.clone()),
        correlation_id: Some(trace.correlation_id.clone()),
    };
    let message = state.names.job(&key, &job).map_err(|e| {
        tracing::error!(error = %e, "print command message");
        Problem::internal()
    })?;
    let mut tx = state.db.begin().await?;
    print_jobs::enqueue(&mut tx, &key, &job).await?;
    state
        .outbox
        .enqueue(&mut tx, &[message])
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "outbox enqueue");
            Problem::internal()
        })?;
    tx.commit().await?;
    let wait = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|p| p.trim().strip_prefix("wait=")?.parse::<u64>().ok())
        })
        .map(|n| n.min(60));
    let mut outcome = None;
    if let Some(n) = wait {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(n);
        while tokio::time::Instant::now() < deadline {
            if let Some(done) = print_jobs::get(&state.db, &key)
                .await?
                .and_then(|j| j.outcome)
            {
                outcome = Some(done);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let status = if outcome.is_some() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = Command {
        id: key,
        printer: printer.id,
        kind: kind.to_owned(),
        outcome: outcome.map(|o: PrintOutcome| serde_json::to_value(o).unwrap_or_default()),
    };
    Ok((status, Json(body)).into_response())
}

/// Print an X (`kind = x`) or Z (`kind = z`) report.
#[utoipa::path(post, path = "/v1/printers/{id}/reports/{kind}", tag = "printers",
    params(("id" = String, Path, description = "Printer id"), ("kind" = String, Path, description = "`x` or `z`"),
           ("Prefer" = Option<String>, Header, description = "`wait=N`")),
    responses((status = 202, body = Command), (status = 200, body = Command),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub(crate) async fn report(
    State(state): State<AppState>,
    caller: Caller,
    trace: axum::Extension<Trace>,
    headers: HeaderMap,
    Path((id, kind)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let kind = match kind.as_str() {
        "x" => "x_report",
        "z" => "z_report",
        _ => return Err(Problem::not_found("report kind (use x or z)")),
    };
    send(
        &state,
        &caller,
        &trace,
        &headers,
        Cmd {
            id: &id,
            kind,
            amount: 0,
            faults: None,
            resolve: None,
        },
    )
    .await
}

/// Move cash into or out of the drawer.
#[utoipa::path(post, path = "/v1/printers/{id}/cash", tag = "printers",
    request_body = CashMove,
    params(("id" = String, Path, description = "Printer id")),
    responses((status = 202, body = Command), (status = 200, body = Command),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub(crate) async fn cash(
    State(state): State<AppState>,
    caller: Caller,
    trace: axum::Extension<Trace>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CashMove>,
) -> Result<Response, Problem> {
    if body.amount == 0 || body.amount.abs() > 1_000_000_000 {
        return Err(Problem::unprocessable(
            "amount must be non-zero and at most 10^9 minor units",
        ));
    }
    send(
        &state,
        &caller,
        &trace,
        &headers,
        Cmd {
            id: &id,
            kind: "cash",
            amount: body.amount,
            faults: None,
            resolve: None,
        },
    )
    .await
}

/// Set a simulated printer's faults (operator; simulated printers only).
#[utoipa::path(put, path = "/v1/printers/{id}/simulator", tag = "simulators",
    request_body = SimFaults,
    params(("id" = String, Path, description = "Printer id")),
    responses((status = 202, body = Command), (status = 200, body = Command)),
    security(("api_key" = [])))]
pub(crate) async fn set_faults(
    State(state): State<AppState>,
    _op: Operator,
    caller: Caller,
    trace: axum::Extension<Trace>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(faults): JsonBody<SimFaults>,
) -> Result<Response, Problem> {
    let faults = serde_json::to_value(faults).map_err(|_| Problem::internal())?;
    send(
        &state,
        &caller,
        &trace,
        &headers,
        Cmd {
            id: &id,
            kind: "simulator",
            amount: 0,
            faults: Some(faults),
            resolve: None,
        },
    )
    .await
}

/// A simulated printer's electronic journal, each receipt and reversal
/// labelled with its sale key from the agent's fiscal journal (operator; only for simulated
/// printers running in this process).
#[utoipa::path(get, path = "/v1/printers/{id}/simulator/journal", tag = "simulators",
    params(("id" = String, Path, description = "Printer id")),
    responses((status = 200, body = Vec<JournalEntry>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub(crate) async fn journal(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> Result<Json<Vec<JournalEntry>>, Problem> {
    let sim = state
        .sims
        .get(&id)
        .ok_or_else(|| Problem::not_found("simulated printer in this process"))?;
    match sim.journal().await {
        Ok(entries) => Ok(Json(entries)),
        Err(e) => {
            tracing::error!(printer = %id, error = %e, "cannot read the fiscal journal");
            Err(Problem::internal())
        }
    }
}
