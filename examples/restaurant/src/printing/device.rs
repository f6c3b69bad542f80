//! One actor per printer: a queue per device, so a slow or offline printer
//! never delays another. Every document goes intent → print → outcome in the
//! agent's journal; a failed or doubtful print is reconciled by asking the
//! device whether the sale key was printed, never printed blindly again.

use std::sync::Arc;
use std::time::Duration;

use counterfoil_breaker::{CircuitBreaker, Error as BreakerError, Outcome, State};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use counterfoil_fiscal::{self as fiscal, PrinterHandle};

use super::journal::{self, Entry};
use crate::db::Db;
use crate::store::print_jobs::{JobRow, PrintOutcome};
use crate::store::printers::PrinterState;

/// A printer's queue.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    queue: mpsc::UnboundedSender<JobRow>,
}

impl Device {
    /// Queues a job; `false` when the actor has stopped.
    pub(crate) fn submit(&self, job: JobRow) -> bool {
        self.queue.send(job).is_ok()
    }
}

/// Records a job's outcome and its report to the cloud.
#[derive(Debug, Clone)]
pub(crate) struct Finisher {
    pub(crate) journal: Db,
    pub(crate) outbox: crate::messaging::Outbox,
    pub(crate) names: crate::messaging::Names,
}

impl Finisher {
    /// Journal outcome, job done and report enqueued, in one transaction.
    pub(crate) async fn finish(
        &self,
        job: &crate::store::print_jobs::PrintJob,
        outcome: &PrintOutcome,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.record(job, outcome, journal::Replacing::Nothing).await
    }

    /// A person's answer for a job that ended unknown: the journal's
    /// outcome replaced and the new one reported, in one transaction.
    pub(crate) async fn resolve(
        &self,
        job: &crate::store::print_jobs::PrintJob,
        outcome: &PrintOutcome,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.record(job, outcome, journal::Replacing::Unknown).await
    }

    async fn record(
        &self,
        job: &crate::store::print_jobs::PrintJob,
        outcome: &PrintOutcome,
        replacing: journal::Replacing,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let report = crate::messaging::ResultMessage::Outcome {
            key: job.key.clone(),
            outcome: outcome.clone(),
        };
        let message = self.names.result(&job.printer, &report)?;
        journal::finish(
            &self.journal,
            &self.outbox,
            message,
            &job.key,
            outcome,
            replacing,
        )
        .await
    }
}

/// What the actor reports, to the agent's status loop.
#[derive(Debug, Clone, Default)]
pub(crate) struct Health {
    pub(crate) offline: bool,
    pub(crate) last_error: Option<String>,
}

/// Starts the actor of one printer.
pub(crate) fn spawn(
    id: String,
    printer: PrinterHandle,
    breaker: CircuitBreaker,
    finisher: Finisher,
    health: Arc<parking_lot::Mutex<Health>>,
    stop: CancellationToken,
) -> (Device, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<JobRow>();
    let actor = Actor {
        id: id.clone(),
        printer,
        breaker,
        journal: finisher.journal.clone(),
        health,
        stop: stop.clone(),
    };
    let task = tokio::spawn(async move {
        loop {
            let job = tokio::select! {
                () = stop.cancelled() => break,
                j = rx.recv() => match j { Some(j) => j, None => break },
            };
            // The job's span joins the trace of the payment's request.
            let span = tracing::info_span!(
                "print",
                printer = %actor.id,
                sale_key = %job.job.key,
                kind = %job.job.kind,
                otel.kind = "consumer",
            );
            crate::telemetry::join_trace(&span, job.job.traceparent.as_deref());
            match actor.run(&job).instrument(span.clone()).await {
                Ok(Some(outcome)) => {
                    if let Err(e) = finisher.finish(&job.job, &outcome).instrument(span).await {
                        tracing::error!(printer = %actor.id, error = %e, "journal write failed");
                        continue;
                    }
                }
                // Stopped mid-job: the intent stays in the journal and the
                // next start reconciles it.
                Ok(None) => break,
                Err(e) => tracing::error!(printer = %actor.id, error = %e, "journal failed"),
            }
        }
    });
    (Device { queue: tx }, task)
}

struct Actor {
    id: String,
    /// The device actor of `counterfoil-fiscal`: its own queue, the fiscal
    /// journal (intent and baseline before the first frame, outcome after)
    /// and the reconciliation after a lost reply or a crash.
    printer: PrinterHandle,
    /// This printer's breaker around the device actor: an unreachable
    /// printer is not hammered, and its state shows in
    /// `GET /v1/printers/{id}`.
    breaker: CircuitBreaker,
    journal: Db,
    health: Arc<parking_lot::Mutex<Health>>,
    stop: CancellationToken,
}

/// What a guarded call to the device actor ended in.
enum Call {
    Done(fiscal::Outcome),
    /// Nothing was printed, or the job is pending in the fiscal journal:
    /// submit the same job id again later. `true` when the printer did not
    /// answer (offline), `false` for trouble on the agent's side.
    Again(bool, String),
    /// The device actor refused the job; retrying will not help.
    Refused(String),
}

impl Actor {
    /// Runs one job to its outcome; `None` when stopped first.
    async fn run(&self, row: &JobRow) -> Result<Option<PrintOutcome>, sqlx::Error> {
        let job = &row.job;
        if let Entry::Done(outcome) =
            journal::intent(&self.journal, &self.id, &row.saga_id, job).await?
        {
            return Ok(Some(outcome));
        }
        let fiscal_job = match super::fiscal::job(job) {
            Ok(j) => j,
            Err(detail) => return Ok(Some(PrintOutcome::NotPrinted { detail })),
        };
        let mut attempt = 0u32;
        loop {
            if self.stop.is_cancelled() {
                return Ok(None);
            }
            // The sale key is the fiscal job id: submitting it again returns
            // the recorded outcome, or settles a pending job from the
            // device, and never prints it twice.
            let call = tokio::select! {
                () = self.stop.cancelled() => return Ok(None),
                c = self.guarded(&job.key, fiscal_job.clone()) => c,
            };
            let outcome = match call {
                Call::Done(fiscal::Outcome::Printed(doc)) => PrintOutcome::Printed {
                    document: super::fiscal::document(&self.id, &job.kind, &doc),
                },
                Call::Done(fiscal::Outcome::NotPrinted(np)) => PrintOutcome::NotPrinted {
                    detail: match np.code {
                        Some(code) => format!("{code}: {}", np.reason),
                        None => np.reason,
                    },
                },
                Call::Done(fiscal::Outcome::Unknown(evidence)) => PrintOutcome::Unknown {
                    detail: evidence.note,
                },
                Call::Refused(detail) => PrintOutcome::NotPrinted { detail },
                Call::Again(offline, why) => {
                    // Offline, or in doubt and pending: nothing more was
                    // printed; wait and submit the same job again.
                    self.note(offline, Some(why));
                    attempt += 1;
                    if !self.pause(attempt).await {
                        return Ok(None);
                    }
                    continue;
                }
            };
            self.note(false, None);
            let result = match &outcome {
                PrintOutcome::Printed { .. } => "printed",
                PrintOutcome::NotPrinted { .. } => "not_printed",
                PrintOutcome::Unknown { .. } => "unknown",
            };
            metrics::counter!("print_jobs_total", "printer" => self.id.clone(), "result" => result)
                .increment(1);
            return Ok(Some(outcome));
        }
    }

    /// Submits a job to the device actor through the breaker. An open
    /// breaker answers at once without submitting: nothing was sent, so
    /// nothing was printed.
    async fn guarded(&self, key: &str, job: fiscal::Job) -> Call {
        let classify = |r: &Result<fiscal::Outcome, fiscal::Error>| match r {
            Ok(fiscal::Outcome::NotPrinted(np)) if unreachable(np) => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(fiscal::Error::Offline(_)) => Outcome::Failure,
            // Refused documents and journal trouble are not the link's fault.
            Err(_) => Outcome::Ignored,
        };
        match self
            .breaker
            .call_classified(self.printer.submit(key, job), classify)
            .await
        {
            Ok(fiscal::Outcome::NotPrinted(np)) if unreachable(&np) => Call::Again(true, np.reason),
            Ok(outcome) => Call::Done(outcome),
            Err(BreakerError::Inner(
                e @ (fiscal::Error::Invalid(_)
                | fiscal::Error::Conflict(_)
                | fiscal::Error::Unsupported(_)),
            )) => Call::Refused(e.to_string()),
            Err(BreakerError::Inner(e)) => {
                Call::Again(matches!(e, fiscal::Error::Offline(_)), e.to_string())
            }
            Err(_) => Call::Again(true, "printer offline (breaker open)".into()),
        }
    }

    fn note(&self, offline: bool, error: Option<String>) {
        let mut h = self.health.lock();
        h.offline = offline;
        h.last_error = error;
    }

    /// Waits before the next attempt (200 ms doubling, at most 5 s, or
    /// until the breaker half-opens); `false` when stopped.
    async fn pause(&self, attempt: u32) -> bool {
        let backoff = (200u64 << attempt.min(5)).min(5_000);
        let open_for = self
            .breaker
            .snapshot()
            .retry_after
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let ms = backoff.max(open_for).min(10_000);
        tokio::select! {
            () = self.stop.cancelled() => false,
            () = tokio::time::sleep(Duration::from_millis(ms)) => true,
        }
    }
}

/// A job that ended "not printed" because the device did not answer or the
/// link failed: worth submitting again once the device is back.
fn unreachable(np: &fiscal::NotPrinted) -> bool {
    matches!(np.code.as_deref(), Some("E101" | "E107" | "E108"))
}

/// The breaker state as the API shows it.
pub(crate) fn breaker_state(b: &CircuitBreaker) -> &'static str {
    match b.state() {
        State::Closed => "closed",
        State::Open | State::ForcedOpen => "open",
        State::HalfOpen => "half_open",
        _ => "disabled",
    }
}

/// The state to publish for a printer.
pub(crate) fn state(
    printer: &PrinterHandle,
    health: &Health,
    breaker: &CircuitBreaker,
) -> PrinterState {
    let mut s = super::fiscal::state(&printer.status(), health.offline, health.last_error.clone());
    s.breaker = breaker_state(breaker).to_owned();
    s
}
