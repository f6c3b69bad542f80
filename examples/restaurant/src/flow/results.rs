//! The consumer of the agents' reports (cloud side): records a print
//! outcome or a printer's state, deduplicated by the inbox in the same
//! transaction, and delivers the outcome to the waiting saga in that
//! transaction too.

use std::sync::Arc;

use async_trait::async_trait;
use counterfoil_outbox::{
    Handler, HandlerError, InboxOutcome, IncomingMessage, PgInbox, SqliteInbox,
};
use serde_json::json;

use super::Sagas;
use counterfoil_saga::Delivery;

use super::print::{self, Answer};
use crate::db::{Db, Durability, Tx};
use crate::messaging::ResultMessage;
use crate::store::print_jobs::{self, PrintOutcome};
use crate::store::{events, printers};

const CONSUMER: &str = "restaurant-results";

/// The inbox of the server database.
#[derive(Debug, Clone)]
enum Inbox {
    Postgres(Arc<PgInbox>),
    Sqlite(Arc<SqliteInbox>),
}

/// Handles agents' reports.
#[derive(Debug, Clone)]
pub(crate) struct Results {
    db: Db,
    sagas: Sagas,
    inbox: Inbox,
    /// A report is acknowledged only once its commit is on disk: the agent
    /// deletes its copy on the acknowledgement.
    durable: Durability,
}

impl Results {
    pub(crate) fn new(db: Db, sagas: Sagas, durable: Durability) -> Self {
        let inbox = match &db {
            Db::Postgres(p) => Inbox::Postgres(Arc::new(PgInbox::new(p.clone()))),
            Db::Sqlite(p) => Inbox::Sqlite(Arc::new(SqliteInbox::new(p.clone()))),
        };
        Self {
            db,
            sagas,
            inbox,
            durable,
        }
    }

    async fn first_time(
        &self,
        tx: &mut Tx,
        msg: &IncomingMessage,
    ) -> Result<bool, counterfoil_outbox::Error> {
        let outcome = match (&self.inbox, tx) {
            (Inbox::Postgres(i), Tx::Postgres(t)) => i.try_begin(t, CONSUMER, msg.id).await?,
            (Inbox::Sqlite(i), Tx::Sqlite(t)) => i.try_begin(t, CONSUMER, msg.id).await?,
            _ => {
                return Err(counterfoil_outbox::Error::InvalidMessage(
                    "inbox and transaction differ".into(),
                ));
            }
        };
        Ok(outcome == InboxOutcome::New)
    }

    async fn outcome(
        &self,
        msg: &IncomingMessage,
        key: &str,
        outcome: &PrintOutcome,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut tx = self.db.begin().await?;
        let mut recorded = None;
        if self.first_time(&mut tx, msg).await? {
            recorded = match print_jobs::complete(&mut tx, key, outcome).await? {
                Some(row) => Some((row, false)),
                // A person's answer for a job that ended unknown.
                None => print_jobs::settle_unknown(&mut tx, key, outcome)
                    .await?
                    .map(|row| (row, true)),
            };
        }
        let resolved = recorded.as_ref().is_some_and(|(_, resolved)| *resolved);
        if let Some((row, resolved)) = &recorded
            && !matches!(row.job.kind.as_str(), "simulator" | "resolve")
        {
            let job = &row.job;
            let (result, document) = match outcome {
                PrintOutcome::Printed { document } => ("printed", Some(document)),
                PrintOutcome::NotPrinted { .. } => ("not_printed", None),
                PrintOutcome::Unknown { .. } => ("unknown", None),
            };
            let kind = if job.kind == "receipt" || job.kind == "reversal" {
                format!("receipt.{result}")
            } else {
                format!("{}.{result}", job.kind)
            };
            let by = if *resolved { "operator" } else { "agent" };
            let data = json!({ "job": job.key, "kind": job.kind, "printer": job.printer, "document": document, "outcome": outcome, "by": by });
            events::append(&mut tx, &job.restaurant, &kind, &job.subject, &data).await?;
        }
        // Recorded now: the saga gets the outcome in the same commit, so a
        // crash cannot leave it recorded and undelivered.
        // The event and the answer name the job: a saga that has since
        // queued another job of the same sale is not waiting for this one.
        let event = print::event(outcome, Some(key));
        let bare = print::event(outcome, None);
        let answer = Answer {
            job: Some(key.to_owned()),
            outcome: outcome.clone(),
        };
        // Reports and cash moves have no saga.
        let saga_of = |row: &print_jobs::JobRow| uuid::Uuid::parse_str(&row.saga_id).ok();
        let engine = self.sagas.engine();
        let saga = if let Some((row, _)) = &recorded {
            let saga = saga_of(row);
            if let Some(saga) = saga
                && self
                    .sagas
                    .deliver_in(&mut tx, saga, &event, &answer)
                    .await?
                    == Delivery::NotWaiting
            {
                // A saga that began waiting before waits named their job.
                self.sagas.deliver_in(&mut tx, saga, &bare, &answer).await?;
            }
            tx.commit().await?;
            let Some(saga) = saga else { return Ok(()) };
            engine.wake();
            saga
        } else {
            tx.commit().await?;
            // A report seen before: deliver again, which is harmless, in
            // case it was recorded by a version that delivered after its
            // commit and died in between.
            let Some(saga) = print_jobs::get(&self.db, key)
                .await?
                .as_ref()
                .and_then(saga_of)
            else {
                return Ok(());
            };
            if engine.deliver(saga, &event, &answer).await? == Delivery::NotWaiting {
                engine.deliver(saga, &bare, &answer).await?;
            }
            saga
        };
        // The saga parked on the unknown job: it resumes now, and its step
        // reconciles from the answer. (Were this lost to a crash, the
        // operator's retry of the saga does the same.)
        if resolved && engine.get(saga).await?.status == counterfoil_saga::Status::Parked {
            match engine.retry_now(saga).await {
                Ok(()) | Err(counterfoil_saga::Error::InvalidState { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn status(
        &self,
        msg: &IncomingMessage,
        printer: &str,
        state: &printers::PrinterState,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Some(p) = printers::get(&self.db, None, printer).await? else {
            return Ok(());
        };
        let mut tx = self.db.begin().await?;
        if self.first_time(&mut tx, msg).await?
            && printers::set_state(&mut tx, printer, state).await?
        {
            let data = serde_json::to_value(state)?;
            events::append(&mut tx, &p.restaurant, "printer.status", printer, &data).await?;
        }
        tx.commit().await?;
        metrics::gauge!("printer_online", "printer" => printer.to_owned()).set(if state.online {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("printer_queue_depth", "printer" => printer.to_owned())
            .set(state.queued as f64);
        Ok(())
    }
}

#[async_trait]
impl Handler for Results {
    async fn handle(&self, msg: &IncomingMessage) -> Result<(), HandlerError> {
        let body: ResultMessage = msg.json().map_err(HandlerError::reject)?;
        let done = match &body {
            ResultMessage::Outcome { key, outcome } => self.outcome(msg, key, outcome).await,
            ResultMessage::PrinterStatus { printer, state } => {
                self.status(msg, printer, state).await
            }
        };
        done.map_err(HandlerError::Retry)?;
        self.durable.barrier().await.map_err(HandlerError::retry)
    }
}
