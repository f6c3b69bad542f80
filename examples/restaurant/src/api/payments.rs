//! `/v1/payments`: take a payment, read it, list them, refund it.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::problem::{JsonBody, Problem};
use crate::domain::{
    Payment, PaymentMethod, PaymentStatus, ReceiptLine, Refund, RefundStatus, is_valid_id, now_ms,
};
use crate::flow::{PaymentSaga, RefundSaga};
use crate::store::payments::{self, Inserted, PaymentRow};
use crate::store::refunds::{self, RefundRow};
use crate::store::{events, printers};
use crate::telemetry::Trace;

/// A payment to take.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPayment {
    /// The restaurant (must be the API key's).
    #[schema(example = "demo-1")]
    pub(crate) restaurant: String,
    /// The till's order reference (1-64 characters).
    #[schema(example = "T12-0042")]
    pub(crate) order_ref: String,
    /// Amount in minor units; must equal the sum of the lines.
    #[schema(example = 2500)]
    pub(crate) amount: i64,
    /// ISO 4217 currency code.
    #[schema(example = "EUR")]
    pub(crate) currency: String,
    pub(crate) method: PaymentMethod,
    /// The printer that prints the fiscal receipt.
    #[schema(example = "demo-1-p1")]
    pub(crate) printer: String,
    /// Receipt lines (1-100).
    pub(crate) lines: Vec<ReceiptLine>,
}

/// A refund to make.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRefund {
    /// Amount in minor units (at most what is left to refund).
    #[schema(example = 2500)]
    pub(crate) amount: i64,
    /// Why (printed on the reversal receipt's journal; 1-64 characters).
    #[schema(example = "customer complaint")]
    pub(crate) reason: String,
}

/// A page of payments.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PaymentPage {
    pub(crate) items: Vec<Payment>,
    /// Pass as `before` for the next page; absent on the last page.
    pub(crate) next: Option<String>,
}

/// Filters for listing payments.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct ListQuery {
    /// Restaurant (defaults to the key's; operators must give it).
    restaurant: Option<String>,
    /// Only payments in this status.
    status: Option<String>,
    /// Cursor: the `next` of the previous page.
    before: Option<String>,
    /// Page size, 1-200 (default 50).
    limit: Option<i64>,
}

const MAX_WAIT_SECS: u64 = 60;

fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    let v = headers
        .get("idempotency-key")
        .ok_or_else(|| Problem::bad_request("the Idempotency-Key header is required"))?;
    let s = v
        .to_str()
        .map_err(|_| Problem::bad_request("Idempotency-Key must be printable ASCII"))?;
    // The IETF draft sends it as a structured-field string: accept "...".
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Problem::bad_request(
            "Idempotency-Key must be 1-255 printable ASCII characters",
        ));
    }
    Ok(s.to_owned())
}

/// `Prefer: wait=N` (RFC 7240), capped.
fn prefer_wait(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("wait=")?.trim().parse::<u64>().ok())
        .map(|n| n.min(MAX_WAIT_SECS))
}

/// SHA-256 of the canonical JSON of the request (keys sorted).
fn fingerprint<T: Serialize>(v: &T) -> String {
    let canonical = serde_json::to_value(v)
        .map(|v| v.to_string())
        .unwrap_or_default();
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn validate(p: &NewPayment) -> Result<(), Problem> {
    let text_ok = |s: &str, max: usize| {
        !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
    };
    if !text_ok(&p.order_ref, 64) {
        return Err(Problem::unprocessable(
            "order_ref must be 1-64 characters without control characters",
        ));
    }
    if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Problem::unprocessable(
            "currency must be an ISO 4217 code like EUR",
        ));
    }
    if !(1..=10_000_000_000).contains(&p.amount) {
        return Err(Problem::unprocessable(
            "amount must be between 1 and 10^10 minor units",
        ));
    }
    if p.lines.is_empty() || p.lines.len() > 100 {
        return Err(Problem::unprocessable("a receipt has 1-100 lines"));
    }
    let mut total: i64 = 0;
    for (i, l) in p.lines.iter().enumerate() {
        if !text_ok(&l.text, 36) {
            return Err(Problem::unprocessable(format!(
                "lines[{i}].text must be 1-36 characters"
            )));
        }
        if !(1..=1_000_000_000).contains(&l.quantity) {
            return Err(Problem::unprocessable(format!(
                "lines[{i}].quantity must be 1-10^9 thousandths"
            )));
        }
        if !(0..=1_000_000_000).contains(&l.unit_price) {
            return Err(Problem::unprocessable(format!(
                "lines[{i}].unit_price must be 0-10^9 minor units"
            )));
        }
        total = l
            .total()
            .and_then(|t| total.checked_add(t))
            .ok_or_else(|| Problem::unprocessable("line totals overflow"))?;
    }
    if total != p.amount {
        return Err(Problem::unprocessable(format!(
            "amount {} does not equal the sum of the lines {total}",
            p.amount
        )));
    }
    Ok(())
}

/// A payment whose saga is parked shows as `parked`, with the saga's
/// reason (the saga engine, not the payment row, knows it parked).
async fn with_saga_status(state: &AppState, mut p: PaymentRow) -> PaymentRow {
    if !p.status.is_final()
        && let Some(id) = p
            .saga_id
            .as_deref()
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
        && let Ok(saga) = state.sagas.engine().get(id).await
        && saga.status == counterfoil_saga::Status::Parked
    {
        p.status = PaymentStatus::Parked;
        p.reason = saga.reason;
    }
    p
}

/// Builds the API view of a payment (with refunds and journey).
pub(crate) async fn view(state: &AppState, p: PaymentRow) -> Result<Payment, Problem> {
    let p = with_saga_status(state, p).await;
    let refunds = refunds::for_payment(&state.db, &p.id)
        .await?
        .iter()
        .map(RefundRow::to_api)
        .collect();
    let journey = events::for_subject(&state.db, &p.restaurant, &p.id)
        .await?
        .into_iter()
        .map(journey_step)
        .collect();
    Ok(to_api(p, refunds, journey))
}

fn journey_step(e: events::Event) -> crate::domain::JourneyStep {
    crate::domain::JourneyStep {
        id: e.id,
        kind: e.kind,
        at: e.at,
        detail: e.data,
    }
}

fn no_printer(printer: &str) -> Problem {
    Problem::unprocessable(format!("restaurant has no printer `{printer}`"))
}

fn to_api(
    p: PaymentRow,
    refunds: Vec<crate::domain::Refund>,
    journey: Vec<crate::domain::JourneyStep>,
) -> Payment {
    Payment {
        url: format!("/v1/payments/{}", p.id),
        id: p.id,
        restaurant: p.restaurant,
        order_ref: p.order_ref,
        amount: p.amount,
        currency: p.currency,
        method: p.method,
        printer: p.printer,
        lines: p.lines,
        status: p.status,
        reason: p.reason,
        provider_ref: p.provider_ref,
        receipt: p.receipt,
        saga_id: p.saga_id,
        refunds,
        journey,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

/// Waits until the payment reaches a final status or `secs` pass.
async fn wait_final(
    state: &AppState,
    restaurant: &str,
    id: &str,
    secs: u64,
) -> Result<Option<PaymentRow>, Problem> {
    let mut rx = state.tail.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let p = match payments::get(&state.db, Some(restaurant), id).await? {
            Some(p) => Some(with_saga_status(state, p).await),
            None => None,
        };
        if p.as_ref().is_none_or(|p| p.status.is_final()) {
            return Ok(p);
        }
        // Wake on any event about this payment, or re-check every second.
        let woke = tokio::time::timeout_at(deadline, async {
            loop {
                match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                    Ok(Ok(e)) if e.subject == id => return,
                    Ok(Ok(_)) => {}
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) | Err(_) => return,
                    Ok(Err(_)) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return;
                    }
                }
            }
        })
        .await;
        if woke.is_err() {
            return Ok(p);
        }
    }
}

fn with_location(
    status: StatusCode,
    body: &Payment,
    replayed: bool,
    waited: Option<u64>,
) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&body.url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(n) = waited
        && let Ok(v) = HeaderValue::from_str(&format!("wait={n}"))
    {
        resp.headers_mut().insert("preference-applied", v);
    }
    resp
}

/// Take a payment.
///
/// Answers 202 at once with the payment and its URL; the saga authorizes,
/// captures and fiscalizes it in the background. With `Prefer: wait=N` it
/// waits up to N seconds (at most 60) for a final status and answers 200
/// when reached. A retry with the same `Idempotency-Key` and body returns
/// the same payment (`Idempotent-Replayed: true`); the same key with a
/// different body is refused with 422.
#[utoipa::path(
    post, path = "/v1/payments", tag = "payments",
    request_body = NewPayment,
    params(
        ("Idempotency-Key" = String, Header, description = "1-255 printable characters, unique per payment"),
        ("Prefer" = Option<String>, Header, description = "`wait=N`: wait up to N seconds for the outcome"),
    ),
    responses(
        (status = 202, description = "Accepted; the saga is running", body = Payment),
        (status = 200, description = "Final (with `Prefer: wait`) or replayed", body = Payment),
        (status = 400, description = "Malformed request or missing Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another restaurant", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid payment, or key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    trace: axum::Extension<Trace>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<NewPayment>,
) -> Result<Response, Problem> {
    let restaurant = caller.require_restaurant()?.to_owned();
    let key = idempotency_key(&headers)?;
    if req.restaurant != restaurant {
        return Err(Problem::forbidden(
            "this API key belongs to another restaurant",
        ));
    }
    validate(&req)?;
    if !is_valid_id(&req.printer) {
        return Err(no_printer(&req.printer));
    }
    let now = now_ms();
    let row = PaymentRow {
        id: uuid::Uuid::now_v7().to_string(),
        restaurant: restaurant.clone(),
        idempotency_key: key,
        fingerprint: fingerprint(&req),
        order_ref: req.order_ref,
        amount: req.amount,
        currency: req.currency,
        method: req.method,
        printer: req.printer,
        lines: req.lines,
        status: PaymentStatus::Pending,
        reason: None,
        provider_ref: None,
        receipt: None,
        traceparent: Some(trace.traceparent.clone()),
        correlation_id: Some(trace.correlation_id.clone()),
        saga_id: None,
        created_at: now,
        updated_at: now,
    };
    // One transaction: the printer check, the payment, its first event and
    // the saga start.
    let mut tx = state.db.begin().await?;
    if printers::get_in(&mut tx, Some(&restaurant), &row.printer)
        .await?
        .is_none()
    {
        return Err(no_printer(&row.printer));
    }
    let wait = prefer_wait(&headers);
    let (stored, replayed) = match payments::insert(&mut tx, &row).await? {
        Inserted::New => {
            let first = events::append(
                &mut tx,
                &restaurant,
                "payment.pending",
                &row.id,
                &json!({ "status": "pending", "amount": row.amount, "currency": row.currency, "order_ref": row.order_ref }),
            )
            .await?;
            // The saga starts in the same transaction: no payment without
            // its saga, no saga without its payment.
            let saga = PaymentSaga {
                payment_id: row.id.clone(),
                restaurant: restaurant.clone(),
                amount: row.amount,
                currency: row.currency.clone(),
                printer: row.printer.clone(),
                lines: row.lines.clone(),
                traceparent: row.traceparent.clone(),
                correlation_id: row.correlation_id.clone(),
                auth_ref: None,
                capture_ref: None,
                sale_key: None,
                receipt: None,
            };
            let started = state.sagas.start_payment(&mut tx, &saga).await?;
            payments::set_saga_id(&mut tx, &row.id, &started.id.to_string()).await?;
            tx.commit().await?;
            // The saga was written in our transaction: wake this process's
            // workers now rather than at their next poll.
            state.sagas.engine().wake();
            metrics::counter!("payments_accepted_total").increment(1);
            tracing::info!(payment = %row.id, amount = row.amount, "payment accepted");
            let mut row = row;
            row.saga_id = Some(started.id.to_string());
            if wait.is_none_or(|n| n == 0) {
                // Just accepted: no refunds, one event, the saga not yet
                // run. Nothing to read back.
                let body = to_api(row, Vec::new(), vec![journey_step(first)]);
                return Ok(with_location(StatusCode::ACCEPTED, &body, false, wait));
            }
            (row, false)
        }
        Inserted::Existing(existing) => {
            tx.commit().await?;
            if existing.fingerprint != row.fingerprint {
                return Err(Problem::unprocessable(
                    "this Idempotency-Key was used for a different request",
                ));
            }
            metrics::counter!("payments_replayed_total").increment(1);
            (*existing, true)
        }
    };
    let current = match wait {
        Some(n) if n > 0 => wait_final(&state, &restaurant, &stored.id, n)
            .await?
            .unwrap_or(stored),
        _ => stored,
    };
    let status = if current.status.is_final() || replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = view(&state, current).await?;
    Ok(with_location(status, &body, replayed, wait))
}

/// Read a payment, with its refunds and its journey step by step.
#[utoipa::path(
    get, path = "/v1/payments/{id}", tag = "payments",
    params(("id" = String, Path, description = "Payment id")),
    responses(
        (status = 200, body = Payment),
        (status = 404, description = "No such payment for this key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Payment>, Problem> {
    let p = payments::get(&state.db, caller.restaurant(), &id)
        .await?
        .ok_or_else(|| Problem::not_found("payment"))?;
    Ok(Json(view(&state, p).await?))
}

/// List payments, newest first, a page at a time.
#[utoipa::path(
    get, path = "/v1/payments", tag = "payments",
    params(ListQuery),
    responses(
        (status = 200, body = PaymentPage),
        (status = 403, description = "Another restaurant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<PaymentPage>, Problem> {
    let restaurant = match (q.restaurant.as_deref(), caller.restaurant()) {
        (Some(r), _) if !caller.may_see(r) => {
            return Err(Problem::forbidden(
                "this API key belongs to another restaurant",
            ));
        }
        (Some(r), _) => r.to_owned(),
        (None, Some(r)) => r.to_owned(),
        (None, None) => return Err(Problem::bad_request("operators must give ?restaurant=")),
    };
    let status = match q.status.as_deref() {
        Some(s) => Some(
            PaymentStatus::parse(s)
                .ok_or_else(|| Problem::bad_request(format!("unknown status `{s}`")))?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let rows = if status == Some(PaymentStatus::Parked) {
        parked(&state, &restaurant, q.before.as_deref(), limit + 1).await?
    } else {
        payments::list(
            &state.db,
            &restaurant,
            status,
            q.before.as_deref(),
            limit + 1,
        )
        .await?
    };
    let more = rows.len() as i64 > limit;
    let next = if more {
        rows.get(limit as usize - 1).map(|p| p.id.clone())
    } else {
        None
    };
    let mut items = Vec::new();
    for p in rows.into_iter().take(limit as usize) {
        let p = view(&state, p).await?;
        // A payment whose saga parked shows as `parked`, whatever its row
        // says: it belongs to that filter, not to its row's status.
        if status.is_none_or(|s| s == p.status) {
            items.push(p);
        }
    }
    Ok(Json(PaymentPage { items, next }))
}

/// The restaurant's payments whose saga is parked, newest first. The
/// payment row keeps the step's status (`fiscalizing`, ...): only the saga
/// engine knows it parked, so the list starts from the parked sagas (few,
/// and each waiting for a person).
async fn parked(
    state: &AppState,
    restaurant: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<PaymentRow>, Problem> {
    const PAGE: u32 = 500;
    let engine = state.sagas.engine();
    let mut ids = Vec::new();
    let mut filter = counterfoil_saga::ListFilter {
        status: Some(counterfoil_saga::Status::Parked),
        name: Some("payment".to_owned()),
        limit: Some(PAGE),
        ..counterfoil_saga::ListFilter::default()
    };
    loop {
        let page = engine.list(&filter).await?;
        ids.extend(
            page.iter()
                .filter(|r| before.is_none_or(|b| r.key.as_str() < b))
                .map(|r| r.key.clone()),
        );
        match page.last() {
            Some(last) if page.len() == PAGE as usize => filter.after_seq = Some(last.seq + 1),
            _ => break,
        }
    }
    // Payment ids are time-ordered: newest first, as the other filters,
    // read a bounded number of ids per query.
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let mut rows = Vec::new();
    for chunk in ids.chunks(100) {
        rows.extend(
            payments::get_many(&state.db, restaurant, chunk)
                .await?
                .into_iter()
                .filter(|p| !p.status.is_final()),
        );
        if rows.len() as i64 >= limit {
            break;
        }
    }
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(rows)
}

/// Refund a fiscalized payment: refund at the provider, then a reversal
/// receipt referencing the original. Idempotent by `Idempotency-Key`.
#[utoipa::path(
    post, path = "/v1/payments/{id}/refunds", tag = "payments",
    request_body = NewRefund,
    params(
        ("id" = String, Path, description = "Payment id"),
        ("Idempotency-Key" = String, Header, description = "1-255 printable characters, unique per refund"),
    ),
    responses(
        (status = 202, description = "Accepted", body = Refund),
        (status = 200, description = "Replayed", body = Refund),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Payment not refundable now", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub(crate) async fn refund(
    State(state): State<AppState>,
    caller: Caller,
    trace: axum::Extension<Trace>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<NewRefund>,
) -> Result<Response, Problem> {
    let restaurant = caller.require_restaurant()?.to_owned();
    let key = idempotency_key(&headers)?;
    if req.reason.trim().is_empty() || req.reason.chars().count() > 64 {
        return Err(Problem::unprocessable("reason must be 1-64 characters"));
    }
    if req.amount <= 0 {
        return Err(Problem::unprocessable("amount must be positive"));
    }
    let p = payments::get(&state.db, Some(&restaurant), &id)
        .await?
        .ok_or_else(|| Problem::not_found("payment"))?;
    let now = now_ms();
    let row = RefundRow {
        id: uuid::Uuid::now_v7().to_string(),
        payment_id: p.id.clone(),
        restaurant: restaurant.clone(),
        idempotency_key: key,
        fingerprint: fingerprint(&(&id, &req)),
        amount: req.amount,
        reason: req.reason,
        status: RefundStatus::Pending,
        provider_ref: None,
        reversal: None,
        traceparent: Some(trace.traceparent.clone()),
        correlation_id: Some(trace.correlation_id.clone()),
        saga_id: None,
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.db.begin().await?;
    // Serialize refunds of one payment, so their sum cannot overshoot.
    payments::lock(&mut tx, &p.id).await?;
    let (stored, replayed) = match refunds::insert(&mut tx, &row).await? {
        Inserted2::New => {
            if p.status != PaymentStatus::Fiscalized {
                return Err(Problem::conflict(format!(
                    "only fiscalized payments can be refunded (this one is {})",
                    p.status.as_str()
                )));
            }
            let done = refunds::refunded_total(&mut tx, &p.id).await?;
            if done > p.amount {
                return Err(Problem::conflict(format!(
                    "refunds would exceed the payment: {} of {} already refunded",
                    done - row.amount,
                    p.amount
                )));
            }
            events::append(
                &mut tx,
                &restaurant,
                "refund.pending",
                &p.id,
                &json!({ "refund": row.id, "status": "pending", "amount": row.amount }),
            )
            .await?;
            let (Some(capture_ref), Some(original)) = (p.provider_ref.clone(), p.receipt.clone())
            else {
                return Err(Problem::conflict(
                    "the payment has no capture or receipt to refund",
                ));
            };
            // A full refund reverses every line; a partial one prints one line.
            let lines = if row.amount == p.amount {
                p.lines.clone()
            } else {
                vec![ReceiptLine {
                    text: "Refund".into(),
                    quantity: 1000,
                    unit_price: row.amount,
                    vat: p
                        .lines
                        .first()
                        .map_or(crate::domain::VatGroup::A, |l| l.vat),
                }]
            };
            let saga = RefundSaga {
                refund_id: row.id.clone(),
                payment_id: p.id.clone(),
                restaurant: restaurant.clone(),
                amount: row.amount,
                currency: p.currency.clone(),
                capture_ref,
                original,
                lines,
                traceparent: row.traceparent.clone(),
                correlation_id: row.correlation_id.clone(),
                refund_ref: None,
                sale_key: None,
            };
            let started = state.sagas.start_refund(&mut tx, &saga).await?;
            refunds::set_saga_id(&mut tx, &row.id, &started.id.to_string()).await?;
            tx.commit().await?;
            state.sagas.engine().wake();
            (row, false)
        }
        Inserted2::Existing(existing) => {
            tx.commit().await?;
            if existing.fingerprint != row.fingerprint {
                return Err(Problem::unprocessable(
                    "this Idempotency-Key was used for a different request",
                ));
            }
            (*existing, true)
        }
    };
    let mut resp = (
        if replayed {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        },
        Json(stored.to_api()),
    )
        .into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

use refunds::Inserted as Inserted2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_wait_is_parsed_and_capped() {
        let mut h = HeaderMap::new();
        assert_eq!(prefer_wait(&h), None);
        h.insert("prefer", HeaderValue::from_static("respond-async, wait=5"));
        assert_eq!(prefer_wait(&h), Some(5));
        h.insert("prefer", HeaderValue::from_static("wait=9999"));
        assert_eq!(prefer_wait(&h), Some(MAX_WAIT_SECS));
    }

    #[test]
    fn idempotency_keys_are_checked() {
        let mut h = HeaderMap::new();
        assert!(idempotency_key(&h).is_err());
        h.insert("idempotency-key", HeaderValue::from_static("\"abc-123\""));
        assert_eq!(idempotency_key(&h).unwrap(), "abc-123");
        h.insert("idempotency-key", HeaderValue::from_static(""));
        assert!(idempotency_key(&h).is_err());
    }

    #[test]
    fn fingerprints_ignore_key_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
    }
}
