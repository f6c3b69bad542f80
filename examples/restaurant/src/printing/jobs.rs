//! The consumer of print jobs (agent side): records each job in the agent's
//! database, deduplicated by the inbox in the same transaction, before the
//! message is acknowledged, then hands it to the agent's intake.

use async_trait::async_trait;
use counterfoil_outbox::{
    Handler, HandlerError, InboxOutcome, IncomingMessage, PgInbox, SqliteInbox,
};
use tokio::sync::mpsc;

use super::journal;
use crate::db::{Db, Tx};
use crate::messaging::JobMessage;
use crate::store::print_jobs::PrintJob;

const CONSUMER: &str = "restaurant-agent";

/// Records print jobs.
#[derive(Debug)]
pub(super) struct Jobs {
    db: Db,
    inbox: Inbox,
    received: mpsc::Sender<(String, PrintJob)>,
}

#[derive(Debug)]
enum Inbox {
    Postgres(PgInbox),
    Sqlite(SqliteInbox),
}

impl Jobs {
    /// Records jobs in `db` and sends each new one, with its saga, to
    /// `received` once it is committed.
    pub(super) fn new(db: Db, received: mpsc::Sender<(String, PrintJob)>) -> Self {
        let inbox = match &db {
            Db::Postgres(p) => Inbox::Postgres(PgInbox::new(p.clone())),
            Db::Sqlite(p) => Inbox::Sqlite(SqliteInbox::new(p.clone())),
        };
        Self {
            db,
            inbox,
            received,
        }
    }

    async fn record(
        &self,
        msg: &IncomingMessage,
        body: JobMessage,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut tx = self.db.begin().await?;
        let first = match (&self.inbox, &mut tx) {
            (Inbox::Postgres(i), Tx::Postgres(t)) => i.try_begin(t, CONSUMER, msg.id).await?,
            (Inbox::Sqlite(i), Tx::Sqlite(t)) => i.try_begin(t, CONSUMER, msg.id).await?,
            _ => return Err("inbox and transaction differ".into()),
        };
        let new = first == InboxOutcome::New
            && journal::receive(&mut tx, &body.saga_id, &body.job).await?;
        tx.commit().await?;
        if new {
            // Straight to the intake, which need not read every pending job
            // again for it. A full channel (or a closed one, while stopping)
            // loses nothing: the job is recorded, and the intake's next scan
            // finds it.
            let _ = self.received.try_send((body.saga_id, body.job));
        }
        Ok(())
    }
}

#[async_trait]
impl Handler for Jobs {
    async fn handle(&self, msg: &IncomingMessage) -> Result<(), HandlerError> {
        let body: JobMessage = msg.json().map_err(HandlerError::reject)?;
        self.record(msg, body).await.map_err(HandlerError::Retry)
    }
}
