//! What `fiscalize` and `reverse` share: the sale key, queuing the print
//! job in the step's transaction, reading the agent's answer, and
//! reconciling from the job's recorded outcome.

use counterfoil_saga::{Resolution, StepCx, StepError, StepOutcome};

use super::Deps;
use crate::domain::FiscalDocument;
use crate::store::print_jobs::{self, PrintJob, PrintOutcome};

/// The events a print step waits for.
pub(super) const EVENTS: [&str; 3] = ["receipt.printed", "receipt.not_printed", "receipt.unknown"];

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
/// queues a second document while the first may still print.
pub(super) async fn previous(deps: &Deps, key: Option<&str>) -> Result<Previous, StepError> {
    let Some(key) = key else {
        return Ok(Previous::None);
    };
    Ok(match print_jobs::get(&deps.db, key).await? {
        None => Previous::None,
        Some(job) => match job.outcome {
            None => Previous::Queued(key.to_owned()),
            Some(PrintOutcome::Printed { document }) => Previous::Printed(document),
            Some(_) => Previous::None,
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
    Ok(StepOutcome::wait(EVENTS, deps.fiscal_deadline).releasing_resource())
}

/// The agent's answer, when the step was woken by one.
pub(super) fn answer<S: Send + Sync + 'static>(
    cx: &StepCx<'_, S>,
) -> Result<Option<PrintOutcome>, StepError> {
    Ok(cx.event::<PrintOutcome>()?.map(|(_, o)| o))
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
    use super::sale_key;

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
