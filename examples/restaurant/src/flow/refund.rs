//! The refund saga's definition and steps: refund at the provider (the
//! pivot), then a reversal (storno) receipt referencing the original.

use std::sync::Arc;
use std::time::Duration;

use counterfoil_saga::{
    Definition, Kind, Resolution, RetryPolicy, Step, StepCx, StepError, StepOutcome, Wake,
    async_trait,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Deps, print};
use crate::domain::{FiscalDocument, ReceiptLine, RefundStatus};
use crate::provider::{ProviderError, Request};
use crate::store::print_jobs::PrintJob;
use crate::store::{events, refunds};

const MAX_UNAVAILABLE: u32 = 12;

/// The refund saga's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RefundSaga {
    pub(crate) refund_id: String,
    pub(crate) payment_id: String,
    pub(crate) restaurant: String,
    pub(crate) amount: i64,
    pub(crate) currency: String,
    /// The capture being refunded.
    pub(crate) capture_ref: String,
    /// The receipt being reversed.
    pub(crate) original: FiscalDocument,
    /// Lines of the reversal receipt.
    pub(crate) lines: Vec<ReceiptLine>,
    pub(crate) traceparent: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) refund_ref: Option<String>,
    pub(crate) sale_key: Option<String>,
}

/// `refund` (pivot) → `reverse`.
pub(super) fn definition(
    deps: &Arc<Deps>,
) -> Result<Definition<RefundSaga>, counterfoil_saga::BuildError> {
    crate::telemetry::traced(Definition::builder("refund", 1), |s: &RefundSaga| {
        s.traceparent.as_deref()
    })
    .step(RefundAtProvider(deps.clone()))
    .step(Reverse(deps.clone()))
    .build()
}

/// Sets the refund's status and appends its event (on the payment's
/// journey) in `tx`.
async fn record(
    tx: &mut impl crate::db::AsConn,
    s: &RefundSaga,
    status: RefundStatus,
    provider_ref: Option<&str>,
    reversal: Option<&FiscalDocument>,
    extra: serde_json::Value,
) -> Result<(), StepError> {
    refunds::set_status(tx, &s.refund_id, status, provider_ref, reversal).await?;
    let mut data = json!({ "refund": s.refund_id, "status": status, "amount": s.amount });
    if let (Some(d), serde_json::Value::Object(x)) = (data.as_object_mut(), extra) {
        d.extend(x);
    }
    events::append(
        tx,
        &s.restaurant,
        &format!("refund.{}", status.as_str()),
        &s.payment_id,
        &data,
    )
    .await?;
    Ok(())
}

async fn rejected(deps: &Deps, s: &RefundSaga, reason: &str) -> StepError {
    let run = async {
        let current = refunds::get(&deps.db, &s.refund_id).await?;
        if current.is_some_and(|r| r.status == RefundStatus::Pending) {
            let mut tx = deps.db.begin().await?;
            record(
                &mut tx,
                s,
                RefundStatus::Rejected,
                None,
                None,
                json!({ "reason": reason }),
            )
            .await?;
            tx.commit().await?;
        }
        Ok::<_, StepError>(())
    };
    match run.await {
        Ok(()) => StepError::fail(reason.to_owned()),
        Err(e) => e,
    }
}

struct RefundAtProvider(Arc<Deps>);

#[async_trait]
impl Step<RefundSaga> for RefundAtProvider {
    fn name(&self) -> &str {
        "refund"
    }
    fn kind(&self) -> Kind {
        Kind::Pivot
    }
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::forever()
            .initial_backoff(Duration::from_millis(200))
            .max_backoff(Duration::from_secs(10))
    }

    async fn run(&self, cx: &mut StepCx<'_, RefundSaga>) -> Result<StepOutcome, StepError> {
        let s = cx.state().clone();
        let provider = self.0.provider()?.clone();
        let key = cx.key();
        let req = Request {
            kind: "refund".into(),
            amount: s.amount,
            currency: s.currency.clone(),
            parent: Some(s.capture_ref.clone()),
            reference: s.refund_id.clone(),
        };
        match provider
            .execute(
                &key,
                &req,
                crate::telemetry::traceparent_here(s.traceparent.as_deref()).as_deref(),
            )
            .await
        {
            Ok(op) if op.approved() => {
                cx.state_mut().refund_ref = Some(op.id.clone());
                let tx = cx.tx().await?;
                record(
                    tx,
                    &s,
                    RefundStatus::Refunded,
                    Some(&op.id),
                    None,
                    json!({}),
                )
                .await?;
                Ok(StepOutcome::Done)
            }
            Ok(_) => Err(rejected(&self.0, &s, "refund declined by the provider").await),
            Err(ProviderError::Rejected(why)) => {
                Err(rejected(&self.0, &s, &format!("rejected by the provider: {why}")).await)
            }
            Err(ProviderError::InDoubt(why)) => Err(StepError::in_doubt(why)),
            Err(ProviderError::Unavailable(why)) if cx.attempt() >= MAX_UNAVAILABLE => {
                match provider.lookup(&key).await {
                    Ok(None) => {
                        Err(rejected(&self.0, &s, &format!("provider unavailable: {why}")).await)
                    }
                    Ok(Some(_)) => Err(StepError::retry(why)),
                    Err(e) => Err(StepError::in_doubt(e.to_string())),
                }
            }
            Err(ProviderError::Unavailable(why)) => Err(StepError::retry(why)),
        }
    }

    async fn reconcile(&self, cx: &mut StepCx<'_, RefundSaga>) -> Result<Resolution, StepError> {
        let provider = self.0.provider()?.clone();
        match provider.lookup(&cx.key()).await {
            Ok(Some(op)) if op.approved() => {
                cx.state_mut().refund_ref = Some(op.id.clone());
                let s = cx.state().clone();
                let current = refunds::get(&self.0.db, &s.refund_id).await?;
                if current.is_some_and(|r| r.status == RefundStatus::Pending) {
                    let mut tx = self.0.db.begin().await?;
                    record(
                        &mut tx,
                        &s,
                        RefundStatus::Refunded,
                        Some(&op.id),
                        None,
                        json!({}),
                    )
                    .await?;
                    tx.commit().await?;
                }
                Ok(Resolution::Applied)
            }
            Ok(_) => Ok(Resolution::NotApplied),
            Err(e) => Err(StepError::retry(e.to_string())),
        }
    }
}

struct Reverse(Arc<Deps>);

#[async_trait]
impl Step<RefundSaga> for Reverse {
    fn name(&self) -> &str {
        "reverse"
    }
    fn kind(&self) -> Kind {
        Kind::Retriable
    }
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::forever()
            .initial_backoff(Duration::from_millis(200))
            .max_backoff(Duration::from_secs(10))
    }
    fn resource(&self, s: &RefundSaga) -> Option<String> {
        Some(format!("printer:{}", s.original.printer))
    }

    async fn run(&self, cx: &mut StepCx<'_, RefundSaga>) -> Result<StepOutcome, StepError> {
        let s = cx.state().clone();
        match cx.wake().clone() {
            Wake::Event(_) => {
                let Some(outcome) = print::answer(cx, s.sale_key.as_deref())? else {
                    return Err(StepError::retry("woken without an answer"));
                };
                let document = print::decide(outcome)?;
                let tx = cx.tx().await?;
                let extra = json!({ "printer": document.printer, "document": document.number });
                record(tx, &s, RefundStatus::Reversed, None, Some(&document), extra).await?;
                Ok(StepOutcome::Done)
            }
            Wake::DeadlineReached => Err(StepError::in_doubt(
                "the printer did not print the reversal within the deadline",
            )),
            _ => {
                let key = match print::previous(&self.0, s.sale_key.as_deref()).await? {
                    print::Previous::Printed(document) => {
                        let tx = cx.tx().await?;
                        let extra =
                            json!({ "printer": document.printer, "document": document.number });
                        record(tx, &s, RefundStatus::Reversed, None, Some(&document), extra)
                            .await?;
                        return Ok(StepOutcome::Done);
                    }
                    print::Previous::Queued(key) => key,
                    print::Previous::None => print::sale_key(
                        &s.refund_id,
                        "reversal",
                        cx.attempt(),
                        s.sale_key.as_deref(),
                    ),
                };
                cx.state_mut().sale_key = Some(key.clone());
                let job = PrintJob {
                    key,
                    subject: s.payment_id.clone(),
                    restaurant: s.restaurant.clone(),
                    printer: s.original.printer.clone(),
                    kind: "reversal".into(),
                    lines: s.lines.clone(),
                    amount: s.amount,
                    currency: s.currency.clone(),
                    original: Some(s.original.clone()),
                    faults: None,
                    resolve: None,
                    traceparent: crate::telemetry::traceparent_here(s.traceparent.as_deref()),
                    correlation_id: s.correlation_id.clone(),
                };
                let tx = cx.tx().await?;
                record(
                    tx,
                    &s,
                    RefundStatus::Reversing,
                    None,
                    None,
                    json!({ "printer": s.original.printer }),
                )
                .await?;
                print::request(cx, &self.0, &job).await
            }
        }
    }

    async fn reconcile(&self, cx: &mut StepCx<'_, RefundSaga>) -> Result<Resolution, StepError> {
        let s = cx.state().clone();
        let (resolution, document) = print::reconcile(&self.0, s.sale_key.as_deref()).await?;
        if let Some(doc) = document {
            let current = refunds::get(&self.0.db, &s.refund_id).await?;
            if current.is_some_and(|r| r.status != RefundStatus::Reversed) {
                let mut tx = self.0.db.begin().await?;
                record(
                    &mut tx,
                    &s,
                    RefundStatus::Reversed,
                    None,
                    Some(&doc),
                    json!({}),
                )
                .await?;
                tx.commit().await?;
            }
        }
        Ok(resolution)
    }
}
