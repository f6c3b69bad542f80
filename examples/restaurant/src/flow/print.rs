//! What `fiscalize` and `reverse` share: the sale key, queuing the print
//! job in the step's transaction, reading the agent's answer, and
//! reconciling from the job's recorded outcome.

use counterfoil_saga::{Resolution, StepCx, StepError, StepOutcome};
use serde::{Deserialize, Serialize};

use super::Deps;
use crate::domain::FiscalDocument;
use crate::store::print_jobs::{self, PrintJob, PrintOutcome};

/// The events a print step waits for, each named for the job it answers
/// (see [`event`]).
const EVENTS: [&str; 3] = ["receipt.printed", "receipt.not_printed", "receipt.unknown"];

/// The event an agent's report of job `key` is delivered as: its outcome
/// and the job, `receipt.printed#{key}`. A step waits for its current job's
/// events, so a report for an earlier job of the same sale (late, or
/// delivered again by the broker) finds the saga not waiting and changes
/// nothing. The bare name (`receipt.printed`) is what a step waited for
/// before; the results consumer tries it when the named one is not waited
/// for.
pub(super) fn event(outcome: &PrintOutcome, key: Option<&str>) -> String {
    let name = match outcome {
        PrintOutcome::Printed { .. } => "receipt.printed",
        PrintOutcome::NotPrinted { .. } => "receipt.not_printed",
        PrintOutcome::Unknown { .. } => "receipt.unknown",
    };
    match key {
        Some(key) => named(name, key),
        None => name.to_owned(),
    }
}

/// `name` for job `key`: what a step waits for and a report is delivered as.
fn named(name: &str, key: &str) -> String {
    format!("{name}#{key}")
}

/// The sale key of a document: `{id}/receipt` on the first attempt, then
/// `{id}/receipt.2`, ... when the step runs again after "not printed", so
/// the printer can tell a new sale from a retry of the same one. Never at
/// or below `last`, the key an earlier attempt used (an operator's retry
/// starts the attempts again).
pub(super) fn sale_key(id: &str, doc: &str, attempt: u32, last: Option<&str>) -> String {
    let base = format!("{id}/{doc}");
    let after = last.and_then(|k| {
        if k == base {
            Some(1)
        } else {
            k.strip_prefix(base.as_str())?
                .strip_prefix('.')?
                .parse::<u32>()
                .ok()
        }
    });
    let n = attempt.max(after.map_or(0, |n| n.saturating_add(1)));
    if n <= 1 { base } else { format!("{base}.{n}") }
}

/// What became of the job an earlier attempt of this step queued.
pub(super) enum Previous {
    /// No earlier job, or it ended without printing: queue a new one.
    None,
    /// It is still waiting for the printer: wait for it again.
    Queued(String),
    /// It printed (the answer was lost, or came after a deadline).
    Printed(FiscalDocument),
}

/// Looks the earlier attempt's job up, so a step that runs again never
/// queues a second document while the first may still print, or may have.
///
/// # Errors
/// In doubt when nobody can tell whether the earlier job printed: a new
/// document could print the sale twice. The step reconciles to unknown and
/// the saga parks until someone answers for the job (an operator's `retry`
/// of the saga alone prints nothing).
pub(super) async fn previous(deps: &Deps, key: Option<&str>) -> Result<Previous, StepError> {
    let Some(key) = key else {
        return Ok(Previous::None);
    };
    Ok(match print_jobs::get(&deps.db, key).await? {
        None => Previous::None,
        Some(job) => match job.outcome {
            None => Previous::Queued(key.to_owned()),
            Some(PrintOutcome::Printed { document }) => Previous::Printed(document),
            Some(PrintOutcome::NotPrinted { .. }) => Previous::None,
            Some(PrintOutcome::Unknown { detail }) => {
                return Err(StepError::in_doubt(format!(
                    "print outcome unknown: {detail} (answer for job {key})"
                )));
            }
        },
    })
}

/// Queues `job` in the step's transaction and waits for the agent.
pub(super) async fn request<S: Send + Sync + 'static>(
    cx: &mut StepCx<'_, S>,
    deps: &Deps,
    job: &PrintJob,
) -> Result<StepOutcome, StepError> {
    let saga_id = cx.saga_id().to_string();
    let message = deps
        .names
        .job(&saga_id, job)
        .map_err(|e| StepError::retry(e.to_string()))?;
    let tx = cx.tx().await?;
    // The server's record of the job, and the message to the agent, commit
    // with the step's checkpoint: never one without the other.
    print_jobs::enqueue(tx, &saga_id, job).await?;
    deps.outbox
        .enqueue_step(tx, &[message])
        .await
        .map_err(|e| StepError::retry(e.to_string()))?;
    // The agent's device actor prints one document at a time in the order
    // jobs reach it: the printer is handed to the next receipt as soon as
    // this one is queued, not after it printed.
    let events = EVENTS.map(|e| named(e, &job.key));
    Ok(StepOutcome::wait(events, deps.fiscal_deadline).releasing_resource())
}

/// What a print step is woken with: the agent's answer and the job it
/// answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Answer {
    /// The sale key of the job answered. Absent from answers delivered
    /// before the key was sent along; those are taken as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) job: Option<String>,
    /// How the job ended.
    #[serde(flatten)]
    pub(super) outcome: PrintOutcome,
}

/// The agent's answer for `current`, the job the step waits for, when the
/// step was woken by one.
///
/// A saga can have an earlier job of the same sale: one a person answered
/// "not printed", after which the step queued a new one. A report for that
/// earlier job can still come (the agent's own, late, or the broker's
/// redelivery). It is delivered as that job's [`event`], which the step does
/// not wait for; but a saga that began waiting before events named their job
/// gets it under the bare name. Taken as the answer for the current job it
/// would park the saga, or fail it, while the current job may still print;
/// so it is refused here and the step runs again, which finds its current job
/// still queued and waits for it.
pub(super) fn answer<S: Send + Sync + 'static>(
    cx: &StepCx<'_, S>,
    current: Option<&str>,
) -> Result<Option<PrintOutcome>, StepError> {
    cx.event::<Answer>()?
        .map(|(_, a)| for_job(a, current))
        .transpose()
}

fn for_job(answer: Answer, current: Option<&str>) -> Result<PrintOutcome, StepError> {
    match (answer.job.as_deref(), current) {
        (Some(job), Some(current)) if job != current => Err(StepError::retry(format!(
            "an answer for the earlier job {job}, not for {current}: waiting for {current} again"
        ))),
        _ => Ok(answer.outcome),
    }
}

/// Turns the agent's answer into the step's result.
pub(super) fn decide(outcome: PrintOutcome) -> Result<FiscalDocument, StepError> {
    match outcome {
        PrintOutcome::Printed { document } => Ok(document),
        // The device refused the document: printing it again will not help,
        // and after the pivot the saga parks for a person.
        PrintOutcome::NotPrinted { detail } => {
            Err(StepError::fail(format!("not printed: {detail}")))
        }
        PrintOutcome::Unknown { detail } => Err(StepError::in_doubt(format!(
            "print outcome unknown: {detail}"
        ))),
    }
}

/// Reconciles a print step from the job's recorded outcome: printed is
/// applied; not printed (the device refused it, or a person answered so
/// for an unknown job) is not, and the step runs again under a new sale
/// key; anything else needs a person (the job may still be queued behind
/// an unreachable printer, or nobody can tell whether it printed).
pub(super) async fn reconcile(
    deps: &Deps,
    key: Option<&str>,
) -> Result<(Resolution, Option<FiscalDocument>), StepError> {
    let Some(key) = key else {
        return Ok((Resolution::NotApplied, None));
    };
    match print_jobs::get(&deps.db, key)
        .await?
        .and_then(|j| j.outcome)
    {
        Some(PrintOutcome::Printed { document }) => Ok((Resolution::Applied, Some(document))),
        Some(PrintOutcome::NotPrinted { .. }) => Ok((Resolution::NotApplied, None)),
        _ => Ok((Resolution::Unknown, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::{Answer, for_job, sale_key};
    use crate::domain::FiscalDocument;
    use crate::store::print_jobs::PrintOutcome;

    fn unknown() -> PrintOutcome {
        PrintOutcome::Unknown {
            detail: "no reply".into(),
        }
    }

    #[test]
    fn each_report_is_an_event_the_step_waits_for_and_names_its_job() {
        // What `request` waits for, spelled out.
        let waited = super::EVENTS.map(|e| format!("{e}#p/receipt.2"));
        let printed = PrintOutcome::Printed {
            document: FiscalDocument {
                printer: "p1".into(),
                number: 1,
                amount: 100,
                printed_at: 0,
                device_time: None,
                fm_serial: None,
            },
        };
        let not_printed = PrintOutcome::NotPrinted {
            detail: "no paper".into(),
        };
        for o in [printed, not_printed, unknown()] {
            let e = super::event(&o, Some("p/receipt.2"));
            assert!(waited.contains(&e), "{e}");
            // Another job's report is not waited for.
            assert!(!waited.contains(&super::event(&o, Some("p/receipt"))));
            // The bare name, as steps of the previous version waited for it.
            assert!(super::EVENTS.contains(&super::event(&o, None).as_str()));
        }
    }

    #[test]
    fn an_answer_for_another_job_of_the_sale_is_refused() {
        let a = |job: Option<&str>| Answer {
            job: job.map(str::to_owned),
            outcome: unknown(),
        };
        assert_eq!(
            for_job(a(Some("p/receipt.2")), Some("p/receipt.2")).unwrap(),
            unknown()
        );
        let e = for_job(a(Some("p/receipt")), Some("p/receipt.2")).unwrap_err();
        assert!(e.to_string().contains("earlier job p/receipt"), "{e}");
        // An answer without its job (delivered by an earlier version) and a
        // step with no job on record take the answer as it is.
        assert_eq!(for_job(a(None), Some("p/receipt.2")).unwrap(), unknown());
        assert_eq!(for_job(a(Some("p/receipt")), None).unwrap(), unknown());
    }

    #[test]
    fn answers_read_with_and_without_their_job() {
        let printed = PrintOutcome::Printed {
            document: FiscalDocument {
                printer: "demo-1-p1".into(),
                number: 7,
                amount: 1250,
                printed_at: 1_700_000_000_000,
                device_time: None,
                fm_serial: None,
            },
        };
        let a = Answer {
            job: Some("p/receipt".into()),
            outcome: printed.clone(),
        };
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["job"], "p/receipt");
        assert_eq!(json["result"], "printed");
        assert_eq!(serde_json::from_value::<Answer>(json).unwrap(), a);
        // The payload an earlier version delivered: the outcome alone.
        let old = serde_json::to_value(&printed).unwrap();
        let read: Answer = serde_json::from_value(old).unwrap();
        assert_eq!(read.job, None);
        assert_eq!(read.outcome, printed);
    }

    #[test]
    fn sale_keys_count_up_and_never_repeat() {
        assert_eq!(sale_key("p", "receipt", 0, None), "p/receipt");
        assert_eq!(sale_key("p", "receipt", 1, None), "p/receipt");
        assert_eq!(sale_key("p", "receipt", 3, None), "p/receipt.3");
        // Attempts counted again from one after an earlier key.
        assert_eq!(
            sale_key("p", "receipt", 1, Some("p/receipt")),
            "p/receipt.2"
        );
        assert_eq!(
            sale_key("p", "receipt", 1, Some("p/receipt.4")),
            "p/receipt.5"
        );
        assert_eq!(
            sale_key("p", "receipt", 7, Some("p/receipt.4")),
            "p/receipt.7"
        );
        // A key of another document does not count.
        assert_eq!(
            sale_key("p", "receipt", 1, Some("q/receipt.4")),
            "p/receipt"
        );
    }
}
