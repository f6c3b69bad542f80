//! Operator endpoints: parked sagas (list, inspect, retry, resolve), print
//! jobs of unknown outcome (list, answer), dead letters (list, replay) and
//! API keys. They need the operator key.
//!
//! Sagas are addressed by saga id (the `saga_id` of a payment or refund).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use counterfoil_saga::{ListFilter, Resolution, SagaRecord, Status};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::{Caller, Operator};
use super::printers::{Cmd, send};
use super::problem::{JsonBody, Problem};
use crate::domain::{FiscalDocument, PaymentStatus, is_valid_id, now_ms};
use crate::store::events;
use crate::store::keys::{self, Principal};
use crate::store::payments::{self, Change};
use crate::store::print_jobs::{self, JobResolution, PrintOutcome};
use crate::telemetry::Trace;

/// A saga as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Saga {
    /// Saga id.
    pub(crate) id: String,
    /// `payment` or `refund`.
    pub(crate) kind: String,
    /// The payment or refund id (the saga's key).
    pub(crate) subject: String,
    pub(crate) restaurant: String,
    /// `running`, `waiting`, `parked`, `completed`, `compensated`, `failed`.
    pub(crate) status: String,
    /// The current step.
    pub(crate) step: String,
    /// Why it is parked.
    pub(crate) reason: Option<String>,
    pub(crate) attempt: u32,
    /// The step may have had its effect and has no recorded outcome.
    pub(crate) in_doubt: bool,
}

/// One entry of a saga's step log.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LogLine {
    pub(crate) at: i64,
    pub(crate) step: String,
    pub(crate) attempt: u32,
    /// `completed`, `retry`, `in_doubt`, `waiting`, `parked`, ...
    pub(crate) outcome: String,
    pub(crate) detail: Option<String>,
}

/// A saga with its step log and the actions it accepts.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SagaDetail {
    pub(crate) saga: Saga,
    pub(crate) log: Vec<LogLine>,
    /// `retry`, and `resolve` when the step is in doubt.
    pub(crate) actions: Vec<String>,
}

/// An operator's answer for a parked in-doubt step.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Resolve {
    /// `applied`: the effect happened (the capture went through, the
    /// receipt printed); `not_applied`: it did not (the step runs again).
    pub(crate) outcome: ResolvedOutcome,
    /// For a printed receipt: the document number read on the device.
    pub(crate) document_number: Option<u64>,
}

/// Whether an in-doubt effect happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ResolvedOutcome {
    Applied,
    NotApplied,
}

/// A newly created API key (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NewKey {
    pub(crate) restaurant: String,
    /// The key. It is stored hashed: save it now.
    pub(crate) key: String,
}

fn current_step(r: &SagaRecord) -> String {
    let steps: &[&str] = if r.name == "payment" {
        &["authorize", "capture", "fiscalize", "notify"]
    } else {
        &["refund", "reverse"]
    };
    steps.get(r.cursor as usize).map_or("-", |s| s).to_owned()
}

fn to_saga(r: &SagaRecord) -> Saga {
    let state: serde_json::Value = serde_json::from_str(&r.state).unwrap_or_default();
    Saga {
        id: r.id.to_string(),
        kind: r.name.clone(),
        subject: r.key.clone(),
        restaurant: state["restaurant"].as_str().unwrap_or_default().to_owned(),
        status: r.status.as_str().to_owned(),
        step: current_step(r),
        reason: r.reason.clone(),
        attempt: r.attempt,
        in_doubt: r.in_flight,
    }
}

fn saga_id(id: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(id).map_err(|_| Problem::not_found("saga"))
}

/// Parked sagas, waiting for an operator.
#[utoipa::path(get, path = "/v1/operator/sagas", tag = "operator",
    responses((status = 200, body = Vec<Saga>)), security(("api_key" = [])))]
pub(crate) async fn list_parked(
    State(state): State<AppState>,
    _op: Operator,
) -> Result<Json<Vec<Saga>>, Problem> {
    let filter = ListFilter {
        status: Some(Status::Parked),
        limit: Some(500),
        ..ListFilter::default()
    };
    let list = state.sagas.engine().list(&filter).await?;
    Ok(Json(list.iter().map(to_saga).collect()))
}

/// A saga with its step log and the actions it accepts.
#[utoipa::path(get, path = "/v1/operator/sagas/{id}", tag = "operator",
    params(("id" = String, Path, description = "Saga id")),
    responses((status = 200, body = SagaDetail), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub(crate) async fn inspect(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> Result<Json<SagaDetail>, Problem> {
    let id = saga_id(&id)?;
    let engine = state.sagas.engine();
    let rec = engine.get(id).await?;
    let log = engine
        .log(id)
        .await?
        .into_iter()
        .map(|e| LogLine {
            at: e.at,
            step: e.step,
            attempt: e.attempt,
            outcome: e.outcome,
            detail: e.detail,
        })
        .collect();
    let mut actions = Vec::new();
    if rec.status == Status::Parked {
        actions.push("retry".to_owned());
        if rec.in_flight {
            actions.push("resolve".to_owned());
        }
    }
    Ok(Json(SagaDetail {
        saga: to_saga(&rec),
        log,
        actions,
    }))
}

/// Retry a parked saga now (an in-doubt step is reconciled again first).
#[utoipa::path(post, path = "/v1/operator/sagas/{id}/retry", tag = "operator",
    params(("id" = String, Path, description = "Saga id")),
    responses((status = 202, description = "Running again"), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let id = saga_id(&id)?;
    state.sagas.engine().retry_now(id).await?;
    tracing::info!(saga = %id, "operator retried a parked saga");
    Ok(StatusCode::ACCEPTED)
}

/// Resolve a parked in-doubt step: the operator checked the provider or the
/// printer and says whether the effect happened.
#[utoipa::path(post, path = "/v1/operator/sagas/{id}/resolve", tag = "operator",
    request_body = Resolve,
    params(("id" = String, Path, description = "Saga id")),
    responses((status = 202, description = "Resolved"), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub(crate) async fn resolve(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
    JsonBody(res): JsonBody<Resolve>,
) -> Result<StatusCode, Problem> {
    let id = saga_id(&id)?;
    let engine = state.sagas.engine();
    let rec = engine.get(id).await?;
    let step = current_step(&rec);
    if res.outcome == ResolvedOutcome::Applied && rec.name == "payment" && step == "fiscalize" {
        // The saga's resolution carries no data: record the receipt the
        // operator read on the device first, so `notify` has it.
        let Some(number) = res.document_number else {
            return Err(Problem::unprocessable(
                "document_number is required: read it on the device",
            ));
        };
        let p = payments::get(&state.db, None, &rec.key)
            .await?
            .ok_or_else(|| Problem::not_found("payment"))?;
        let doc = FiscalDocument {
            printer: p.printer.clone(),
            number,
            amount: p.amount,
            printed_at: now_ms(),
            device_time: None,
            fm_serial: None,
        };
        let mut tx = state.db.begin().await?;
        payments::set_status(
            &mut tx,
            &p.id,
            PaymentStatus::Fiscalizing,
            Change {
                receipt: Some(&doc),
                ..Change::default()
            },
        )
        .await?;
        events::append(
            &mut tx,
            &p.restaurant,
            "receipt.printed",
            &p.id,
            &json!({ "printer": doc.printer, "document": doc, "by": "operator" }),
        )
        .await?;
        tx.commit().await?;
    }
    let resolution = match res.outcome {
        ResolvedOutcome::Applied => Resolution::Applied,
        ResolvedOutcome::NotApplied => Resolution::NotApplied,
    };
    engine.resolve(id, resolution).await?;
    tracing::info!(saga = %id, %step, outcome = ?res.outcome, "operator resolved a parked saga");
    Ok(StatusCode::ACCEPTED)
}

/// A print job whose outcome nobody could tell: the device's counters moved
/// in a way that fits more than one story (a document printed at the
/// keypad while the agent waited for a lost reply, ...). Someone must read
/// the device's journal and answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UnknownJob {
    /// The sale key (answer with it).
    pub(crate) job: String,
    /// `receipt`, `reversal`, `cash`, ...
    pub(crate) kind: String,
    pub(crate) restaurant: String,
    pub(crate) printer: String,
    /// The payment or refund it is for.
    pub(crate) subject: String,
    /// Minor units.
    pub(crate) amount: i64,
    /// What the agent saw.
    pub(crate) detail: String,
}

/// An operator's answer for an unknown print job.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveJob {
    /// The unknown job's sale key.
    pub(crate) job: String,
    /// `printed` (give the document number read on the device) or
    /// `not_printed` (no document of this sale in the journal).
    pub(crate) outcome: JobAnswer,
    /// The document number the sale printed as.
    pub(crate) document_number: Option<u64>,
}

/// Whether the unknown job printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobAnswer {
    Printed,
    NotPrinted,
}

/// Print jobs waiting for a person: their outcome is unknown.
#[utoipa::path(get, path = "/v1/operator/print-jobs/unknown", tag = "operator",
    responses((status = 200, body = Vec<UnknownJob>)), security(("api_key" = [])))]
pub(crate) async fn unknown_jobs(
    State(state): State<AppState>,
    _op: Operator,
) -> Result<Json<Vec<UnknownJob>>, Problem> {
    let rows = print_jobs::unknown(&state.db, 500).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| UnknownJob {
                detail: match r.outcome {
                    Some(PrintOutcome::Unknown { detail }) => detail,
                    _ => String::new(),
                },
                job: r.job.key,
                kind: r.job.kind,
                restaurant: r.job.restaurant,
                printer: r.job.printer,
                subject: r.job.subject,
                amount: r.job.amount,
            })
            .collect(),
    ))
}

/// Answer for an unknown print job. The answer travels to the printer's
/// agent, which records it in its fiscal journal and reports the job's new
/// outcome; a payment or refund parked on that job then resumes by itself:
/// `printed` completes it with that document, `not_printed` prints the
/// receipt again under a new sale key.
#[utoipa::path(post, path = "/v1/operator/print-jobs/resolve", tag = "operator",
    request_body = ResolveJob,
    params(("Prefer" = Option<String>, Header, description = "`wait=N`: wait up to N seconds for the agent")),
    responses((status = 202, description = "Sent to the agent", body = super::printers::Command),
              (status = 200, description = "The agent recorded it (with `Prefer: wait`)", body = super::printers::Command),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "The job's outcome is not unknown", body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub(crate) async fn resolve_job(
    State(state): State<AppState>,
    _op: Operator,
    caller: Caller,
    trace: axum::Extension<Trace>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ResolveJob>,
) -> Result<Response, Problem> {
    let row = print_jobs::get(&state.db, &body.job)
        .await?
        .ok_or_else(|| Problem::not_found("print job"))?;
    if !matches!(row.outcome, Some(PrintOutcome::Unknown { .. })) {
        return Err(Problem::conflict(
            "this print job's outcome is not unknown: nothing to resolve",
        ));
    }
    let document_number = match (body.outcome, body.document_number) {
        (JobAnswer::Printed, Some(n)) if n > 0 => Some(n),
        (JobAnswer::Printed, _) => {
            return Err(Problem::unprocessable(
                "document_number is required: read it on the device",
            ));
        }
        (JobAnswer::NotPrinted, None) => None,
        (JobAnswer::NotPrinted, Some(_)) => {
            return Err(Problem::unprocessable(
                "a job that did not print has no document_number",
            ));
        }
    };
    tracing::info!(job = %row.job.key, outcome = ?body.outcome, "operator answered an unknown print job");
    send(
        &state,
        &caller,
        &trace,
        &headers,
        Cmd {
            id: &row.job.printer,
            kind: "resolve",
            amount: 0,
            faults: None,
            resolve: Some(JobResolution {
                job: row.job.key.clone(),
                document_number,
            }),
        },
    )
    .await
}

/// A message the relay gave up on.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetterView {
    /// Message id (replay with it).
    pub(crate) id: String,
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) attempts: u32,
    pub(crate) last_error: String,
    pub(crate) created_at: i64,
    pub(crate) dead_at: i64,
    /// The body, when it is JSON.
    pub(crate) body: Option<serde_json::Value>,
}

/// Messages the relay could not deliver after every retry (print jobs,
/// printer commands).
#[utoipa::path(get, path = "/v1/operator/dead-letters", tag = "operator",
    responses((status = 200, body = Vec<DeadLetterView>)), security(("api_key" = [])))]
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
    _op: Operator,
) -> Result<Json<Vec<DeadLetterView>>, Problem> {
    let list = state
        .outbox
        .store()
        .dead_letters(None, 500)
        .await
        .map_err(outbox_problem)?;
    Ok(Json(
        list.into_iter()
            .map(|d| DeadLetterView {
                id: d.message.id.as_uuid().to_string(),
                exchange: d.message.destination.exchange.clone(),
                routing_key: d.message.destination.routing_key.clone(),
                attempts: d.attempts,
                last_error: d.last_error,
                created_at: d.created_at,
                dead_at: d.dead_at,
                body: serde_json::from_slice(&d.message.payload).ok(),
            })
            .collect(),
    ))
}

fn outbox_problem(e: counterfoil_outbox::Error) -> Problem {
    tracing::error!(error = %e, "outbox error");
    Problem::internal()
}

/// Put a dead letter back in the outbox, to be delivered again.
#[utoipa::path(post, path = "/v1/operator/dead-letters/{id}/replay", tag = "operator",
    params(("id" = String, Path, description = "Dead letter (message) id")),
    responses((status = 202, description = "Queued again"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub(crate) async fn replay(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let id = Uuid::parse_str(&id).map_err(|_| Problem::not_found("dead letter"))?;
    let n = state
        .outbox
        .store()
        .replay(&[counterfoil_outbox::MessageId::from_uuid(id)], now_ms())
        .await
        .map_err(outbox_problem)?;
    if n == 0 {
        return Err(Problem::not_found("dead letter"));
    }
    tracing::info!(message = %id, "operator replayed a dead letter");
    Ok(StatusCode::ACCEPTED)
}

/// Create a restaurant (when missing) and a new API key for it.
#[utoipa::path(post, path = "/v1/operator/restaurants/{id}/keys", tag = "operator",
    params(("id" = String, Path, description = "Restaurant id")),
    responses((status = 201, body = NewKey), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    _op: Operator,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<NewKey>), Problem> {
    if !is_valid_id(&id) {
        return Err(Problem::unprocessable(
            "restaurant ids are 1-64 of [A-Za-z0-9_-]",
        ));
    }
    keys::ensure_restaurant(&state.db, &id).await?;
    let key = keys::generate("rk");
    keys::insert(
        &state.db,
        &key,
        &Principal::Restaurant(id.clone()),
        "created by an operator",
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewKey {
            restaurant: id,
            key,
        }),
    ))
}
