//! The payment saga's definition and steps.

use std::sync::Arc;
use std::time::Duration;

use counterfoil_saga::{
    Definition, Kind, Resolution, RetryPolicy, Step, StepCx, StepError, StepOutcome, Wake,
    async_trait,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Deps, print};
use crate::domain::{FiscalDocument, PaymentStatus, ReceiptLine};
use crate::provider::{Operation, ProviderError, Request};
use crate::store::payments::{self, Change};
use crate::store::print_jobs::PrintJob;

/// Attempts while the provider is unavailable before giving up on a step.
const MAX_UNAVAILABLE: u32 = 12;

/// The payment saga's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PaymentSaga {
    pub(crate) payment_id: String,
    pub(crate) restaurant: String,
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) printer: String,
    pub(crate) lines: Vec<ReceiptLine>,
    pub(crate) traceparent: Option<String>,
    pub(crate) correlation_id: Option<String>,
    /// The provider's authorization id.
    pub(crate) auth_ref: Option<String>,
    /// The provider's capture id.
    pub(crate) capture_ref: Option<String>,
    /// The sale key of the receipt being printed.
    pub(crate) sale_key: Option<String>,
    /// The printed receipt.
    pub(crate) receipt: Option<FiscalDocument>,
}

/// `authorize` → `capture` (pivot) → `fiscalize` → `notify`.
pub(super) fn definition(
    deps: &Arc<Deps>,
) -> Result<Definition<PaymentSaga>, counterfoil_saga::BuildError> {
    crate::telemetry::traced(Definition::builder("payment", 1), |s: &PaymentSaga| {
        s.traceparent.as_deref()
    })
    .step(Authorize(deps.clone()))
    .step(Capture(deps.clone()))
    .step(Fiscalize(deps.clone()))
    .step(Notify(deps.clone()))
    .build()
}

fn request(s: &PaymentSaga, kind: &str, parent: Option<&str>) -> Request {
    Request {
        kind: kind.to_owned(),
        amount: s.amount,
        currency: s.currency.clone(),
        parent: parent.map(str::to_owned),
        reference: s.payment_id.clone(),
    }
}

/// Provider calls keep retrying while it is down (the breaker makes them
/// fail fast); each step decides when to give up.
fn provider_policy() -> RetryPolicy {
    RetryPolicy::forever()
        .initial_backoff(Duration::from_millis(200))
        .max_backoff(Duration::from_secs(10))
}

/// Sets the payment's status and appends its event in the step's
/// transaction (it commits with the saga's checkpoint).
async fn record(
    cx: &mut StepCx<'_, PaymentSaga>,
    status: PaymentStatus,
    change: Change<'_>,
    mut detail: serde_json::Value,
) -> Result<(), StepError> {
    let (id, restaurant, step) = (
        cx.state().payment_id.clone(),
        cx.state().restaurant.clone(),
        cx.step().to_owned(),
    );
    if let Some(d) = detail.as_object_mut() {
        d.insert("status".into(), json!(status));
        d.insert("step".into(), json!(step));
    }
    let tx = cx.tx().await?;
    payments::set_status_with_event(tx, &id, status, change, &restaurant, &detail).await?;
    metrics::counter!("payments_transitions_total", "status" => status.as_str()).increment(1);
    Ok(())
}

/// Records an outcome outside the saga's transaction, once: for what
/// happens on the way to a failure or in `reconcile`, which have no step
/// transaction. Only moves a payment that is still `from`.
async fn record_outside(
    deps: &Deps,
    s: &PaymentSaga,
    from: PaymentStatus,
    to: PaymentStatus,
    change: Change<'_>,
) -> Result<(), StepError> {
    let current = payments::get(&deps.db, None, &s.payment_id).await?;
    if current.is_none_or(|p| p.status != from) {
        return Ok(());
    }
    let mut tx = deps.db.begin().await?;
    let detail = json!({ "status": to, "reason": change.reason });
    payments::set_status_with_event(&mut tx, &s.payment_id, to, change, &s.restaurant, &detail)
        .await?;
    tx.commit().await?;
    metrics::counter!("payments_transitions_total", "status" => to.as_str()).increment(1);
    Ok(())
}

async fn declined(deps: &Deps, s: &PaymentSaga, reason: &str) -> StepError {
    let change = Change {
        reason: Some(reason),
        ..Change::default()
    };
    match record_outside(
        deps,
        s,
        PaymentStatus::Pending,
        PaymentStatus::Declined,
        change,
    )
    .await
    {
        Ok(()) => StepError::fail(reason.to_owned()),
        Err(e) => e,
    }
}

struct Authorize(Arc<Deps>);

#[async_trait]
impl Step<PaymentSaga> for Authorize {
    fn name(&self) -> &str {
        "authorize"
    }
    fn kind(&self) -> Kind {
        Kind::Compensatable
    }
    fn policy(&self) -> RetryPolicy {
        provider_policy()
    }

    async fn run(&self, cx: &mut StepCx<'_, PaymentSaga>) -> Result<StepOutcome, StepError> {
        let s = cx.state().clone();
        let provider = self.0.provider()?.clone();
        let key = cx.key();
        match provider
            .execute(
                &key,
                &request(&s, "authorize", None),
                crate::telemetry::traceparent_here(s.traceparent.as_deref()).as_deref(),
            )
            .await
        {
            Ok(op) if op.approved() => {
                cx.state_mut().auth_ref = Some(op.id.clone());
                let change = Change {
                    provider_ref: Some(&op.id),
                    ..Change::default()
                };
                record(cx, PaymentStatus::Authorized, change, json!({})).await?;
                Ok(StepOutcome::Done)
            }
            Ok(_) => Err(declined(&self.0, &s, "declined by the issuer").await),
            Err(ProviderError::Rejected(why)) => {
                Err(declined(&self.0, &s, &format!("rejected by the provider: {why}")).await)
            }
            Err(ProviderError::InDoubt(why)) => Err(StepError::in_doubt(why)),
            Err(ProviderError::Unavailable(why)) if cx.attempt() >= MAX_UNAVAILABLE => {
                // Before telling the till "not charged", make sure of it.
                match provider.lookup(&key).await {
                    Ok(None) => {
                        Err(declined(&self.0, &s, &format!("provider unavailable: {why}")).await)
                    }
                    Ok(Some(_)) => Err(StepError::retry(why)),
                    Err(e) => Err(StepError::in_doubt(e.to_string())),
                }
            }
            Err(ProviderError::Unavailable(why)) => Err(StepError::retry(why)),
        }
    }

    async fn reconcile(&self, cx: &mut StepCx<'_, PaymentSaga>) -> Result<Resolution, StepError> {
        reconcile_op(
            &self.0,
            cx,
            PaymentStatus::Pending,
            PaymentStatus::Authorized,
            |s, op| {
                s.auth_ref = Some(op.id.clone());
            },
        )
        .await
    }

    /// Releases the authorization (the capture failed).
    async fn compensate(&self, cx: &mut StepCx<'_, PaymentSaga>) -> Result<(), StepError> {
        let s = cx.state().clone();
        let Some(auth) = s.auth_ref.clone() else {
            return Ok(());
        };
        let provider = self.0.provider()?.clone();
        let key = cx.compensation_key();
        match provider
            .execute(
                &key,
                &request(&s, "void", Some(&auth)),
                crate::telemetry::traceparent_here(s.traceparent.as_deref()).as_deref(),
            )
            .await
        {
            Ok(op) if op.approved() => {
                let change = Change {
                    reason: Some("capture failed; authorization released"),
                    ..Change::default()
                };
                record(cx, PaymentStatus::Voided, change, json!({})).await
            }
            Ok(_) | Err(ProviderError::Rejected(_)) => Err(StepError::fail(
                "the provider refused to void the authorization",
            )),
            Err(e) => Err(StepError::retry(e.to_string())),
        }
    }
}

/// Looks a step's idempotency key up at the provider: approved is applied
/// (and recorded), anything else runs the step again with the same key.
async fn reconcile_op(
    deps: &Deps,
    cx: &mut StepCx<'_, PaymentSaga>,
    from: PaymentStatus,
    to: PaymentStatus,
    apply: impl FnOnce(&mut PaymentSaga, &Operation),
) -> Result<Resolution, StepError> {
    let provider = deps.provider()?.clone();
    match provider.lookup(&cx.key()).await {
        Ok(Some(op)) if op.approved() => {
            apply(cx.state_mut(), &op);
            let s = cx.state().clone();
            let change = Change {
                provider_ref: Some(&op.id),
                ..Change::default()
            };
            record_outside(deps, &s, from, to, change).await?;
            Ok(Resolution::Applied)
        }
        // Declined, or never arrived: run it again with the same key (the
        // provider replays a recorded answer).
        Ok(_) => Ok(Resolution::NotApplied),
        Err(e) => Err(StepError::retry(e.to_string())),
    }
}

struct Capture(Arc<Deps>);

#[async_trait]
impl Step<PaymentSaga> for Capture {
    fn name(&self) -> &str {
        "capture"
    }
    fn kind(&self) -> Kind {
        Kind::Pivot
    }
    fn policy(&self) -> RetryPolicy {
        provider_policy().max_attempts(MAX_UNAVAILABLE)
    }

    async fn run(&self, cx: &mut StepCx<'_, PaymentSaga>) -> Result<StepOutcome, StepError> {
        let s = cx.state().clone();
        let Some(auth) = s.auth_ref.clone() else {
            return Err(StepError::fail("authorized without a provider reference"));
        };
        let provider = self.0.provider()?.clone();
        match provider
            .execute(
                &cx.key(),
                &request(&s, "capture", Some(&auth)),
                crate::telemetry::traceparent_here(s.traceparent.as_deref()).as_deref(),
            )
            .await
        {
            Ok(op) if op.approved() => {
                // The pivot: the money moved. From here only forward recovery.
                cx.state_mut().capture_ref = Some(op.id.clone());
                let change = Change {
                    provider_ref: Some(&op.id),
                    ..Change::default()
                };
                record(cx, PaymentStatus::Captured, change, json!({})).await?;
                Ok(StepOutcome::Done)
            }
            // Refused: compensate (void the authorization).
            Ok(_) | Err(ProviderError::Rejected(_)) => Err(StepError::fail("capture refused")),
            Err(ProviderError::InDoubt(why)) => Err(StepError::in_doubt(why)),
            Err(ProviderError::Unavailable(why)) => Err(StepError::retry(why)),
        }
    }

    async fn reconcile(&self, cx: &mut StepCx<'_, PaymentSaga>) -> Result<Resolution, StepError> {
        reconcile_op(
            &self.0,
            cx,
            PaymentStatus::Authorized,
            PaymentStatus::Captured,
            |s, op| {
                s.capture_ref = Some(op.id.clone());
            },
        )
        .await
    }
}

struct Fiscalize(Arc<Deps>);

#[async_trait]
impl Step<PaymentSaga> for Fiscalize {
    fn name(&self) -> &str {
        "fiscalize"
    }
    fn kind(&self) -> Kind {
        Kind::Retriable
    }
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::forever()
            .initial_backoff(Duration::from_millis(200))
            .max_backoff(Duration::from_secs(10))
    }
    /// Receipts are queued for a printer one at a time, in start order (the
    /// printer is released once the job is queued; see `print::request`).
    fn resource(&self, s: &PaymentSaga) -> Option<String> {
        Some(format!("printer:{}", s.printer))
    }

    async fn run(&self, cx: &mut StepCx<'_, PaymentSaga>) -> Result<StepOutcome, StepError> {
        match cx.wake().clone() {
            Wake::Event(_) => {
                let current = cx.state().sale_key.clone();
                let Some(outcome) = print::answer(cx, current.as_deref())? else {
                    return Err(StepError::retry("woken without an answer"));
                };
                let document = print::decide(outcome)?;
                cx.state_mut().receipt = Some(document);
                Ok(StepOutcome::Done)
            }
            Wake::DeadlineReached => Err(StepError::in_doubt(
                "the printer did not print within the deadline",
            )),
            _ => {
                let s = cx.state().clone();
                let key = match print::previous(&self.0, s.sale_key.as_deref()).await? {
                    print::Previous::Printed(document) => {
                        cx.state_mut().receipt = Some(document);
                        return Ok(StepOutcome::Done);
                    }
                    // Still queued behind the printer: wait for that one,
                    // never queue a second receipt for the same sale.
                    print::Previous::Queued(key) => key,
                    print::Previous::None => print::sale_key(
                        &s.payment_id,
                        "receipt",
                        cx.attempt(),
                        s.sale_key.as_deref(),
                    ),
                };
                cx.state_mut().sale_key = Some(key.clone());
                let job = PrintJob {
                    key,
                    subject: s.payment_id.clone(),
                    restaurant: s.restaurant.clone(),
                    printer: s.printer.clone(),
                    kind: "receipt".into(),
                    lines: s.lines.clone(),
                    amount: s.amount,
                    currency: s.currency.clone(),
                    original: None,
                    faults: None,
                    resolve: None,
                    traceparent: crate::telemetry::traceparent_here(s.traceparent.as_deref()),
                    correlation_id: s.correlation_id.clone(),
                };
                record(
                    cx,
                    PaymentStatus::Fiscalizing,
                    Change::default(),
                    json!({ "printer": s.printer }),
                )
                .await?;
                print::request(cx, &self.0, &job).await
            }
        }
    }

    async fn reconcile(&self, cx: &mut StepCx<'_, PaymentSaga>) -> Result<Resolution, StepError> {
        let key = cx.state().sale_key.clone();
        let (resolution, document) = print::reconcile(&self.0, key.as_deref()).await?;
        if document.is_some() {
            cx.state_mut().receipt = document;
        }
        Ok(resolution)
    }
}

struct Notify(Arc<Deps>);

#[async_trait]
impl Step<PaymentSaga> for Notify {
    fn name(&self) -> &str {
        "notify"
    }
    fn kind(&self) -> Kind {
        Kind::Retriable
    }
    fn idempotent(&self) -> bool {
        true
    }

    /// `payment.fiscalized` reaches the till over the WebSocket.
    async fn run(&self, cx: &mut StepCx<'_, PaymentSaga>) -> Result<StepOutcome, StepError> {
        let _ = &self.0;
        let receipt = cx.state().receipt.clone();
        let detail = match &receipt {
            Some(r) => json!({ "printer": r.printer, "document": r.number }),
            None => json!({}),
        };
        let change = Change {
            receipt: receipt.as_ref(),
            ..Change::default()
        };
        record(cx, PaymentStatus::Fiscalized, change, detail).await?;
        Ok(StepOutcome::Done)
    }
}
