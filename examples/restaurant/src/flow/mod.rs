//! The payment and refund sagas, on counterfoil-saga.
//!
//! Payment: `authorize` (compensatable; compensation: void) → `capture`
//! (the pivot: after it only forward recovery exists) → `fiscalize`
//! (resource: the printer, taken in start order to queue the print job in the
//! step's transaction and handed to the next receipt as the step starts to
//! wait for `receipt.printed`, `receipt.not_printed` or `receipt.unknown`
//! with a deadline) → `notify` (the `payment.fiscalized`
//! event, which reaches the till over the WebSocket).
//!
//! Refund: `refund` at the provider (the pivot) → `reverse` (the reversal
//! receipt, the same way as `fiscalize`).
//!
//! Each step writes the payment's status and its event in the step's own
//! transaction, which commits with the saga's checkpoint. In-doubt provider
//! calls are reconciled by looking their idempotency key up; an outcome
//! nobody can confirm parks the saga for an operator.

mod payment;
mod print;
mod refund;
pub(crate) mod results;

use std::sync::Arc;
use std::time::Duration;

use counterfoil_saga::{
    Definition, Engine, PgSagaStore, SagaStore, SqliteSagaStore, Started, WorkerConfig,
};

use crate::db::{Db, Tx};
use crate::provider::PaymentProvider;

pub(crate) use payment::PaymentSaga;
pub(crate) use refund::RefundSaga;

/// What the steps need.
#[derive(Debug)]
pub(crate) struct Deps {
    pub(crate) db: Db,
    /// Absent in processes that never run steps (`serve`, `agent`).
    pub(crate) provider: Option<Arc<dyn PaymentProvider>>,
    /// How long a receipt may wait for its printer before the saga parks.
    pub(crate) fiscal_deadline: Duration,
    /// The server's outbox: print jobs leave through it.
    pub(crate) outbox: crate::messaging::Outbox,
    pub(crate) names: crate::messaging::Names,
}

impl Deps {
    fn provider(&self) -> Result<&Arc<dyn PaymentProvider>, counterfoil_saga::StepError> {
        self.provider
            .as_ref()
            .ok_or_else(|| counterfoil_saga::StepError::Defer(Duration::from_secs(5)))
    }
}

#[derive(Debug, Clone)]
enum Store {
    Postgres(Arc<PgSagaStore>),
    Sqlite(Arc<SqliteSagaStore>),
}

/// The saga engine and the two definitions.
#[derive(Debug, Clone)]
pub(crate) struct Sagas {
    engine: Engine,
    store: Store,
    payment: Definition<PaymentSaga>,
    refund: Definition<RefundSaga>,
}

/// Runs `$call` with the backend's saga store `$s` and transaction `$t`, or
/// fails when the store and the transaction are of different backends.
macro_rules! in_tx {
    ($sagas:expr, $tx:expr, |$s:ident, $t:ident| $call:expr) => {
        match (&$sagas.store, $tx) {
            (Store::Postgres($s), Tx::Postgres($t)) => $call.await,
            (Store::Sqlite($s), Tx::Sqlite($t)) => $call.await,
            _ => Err(counterfoil_saga::Error::Backend(
                "saga store and transaction differ".into(),
            )),
        }
    };
}

impl Sagas {
    /// Builds the engine on the server database (migrating the saga
    /// tables) with both definitions registered.
    pub(crate) async fn new(deps: Deps) -> Result<Self, counterfoil_saga::Error> {
        let deps = Arc::new(deps);
        let (store, dyn_store): (Store, Arc<dyn SagaStore>) = match &deps.db {
            Db::Postgres(p) => {
                let s = Arc::new(PgSagaStore::new(p.clone()));
                (Store::Postgres(s.clone()), s)
            }
            Db::Sqlite(p) => {
                let s = Arc::new(SqliteSagaStore::new(p.clone()));
                (Store::Sqlite(s.clone()), s)
            }
        };
        let payment = payment::definition(&deps)?;
        let refund = refund::definition(&deps)?;
        let engine = Engine::builder(dyn_store)
            .lease(Duration::from_secs(15))
            // A printer's release hands it to the next receipt in the same
            // transaction, so a queued receipt re-checks only as a safety
            // net. Re-checking often makes every queued saga compete for the
            // printer's lock on each poll, and a long queue (a printer back
            // from an outage) then slows the hand-off it waits for.
            .resource_poll(Duration::from_secs(5))
            .register(payment.clone())
            .register(refund.clone())
            .build()
            .await?;
        Ok(Self {
            engine,
            store,
            payment,
            refund,
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Starts a payment saga inside the caller's transaction.
    pub(crate) async fn start_payment(
        &self,
        tx: &mut Tx,
        state: &PaymentSaga,
    ) -> Result<Started, counterfoil_saga::Error> {
        let key = state.payment_id.clone();
        in_tx!(self, tx, |s, t| s.start_in(t, &self.payment, &key, state))
    }

    /// Starts a refund saga inside the caller's transaction.
    pub(crate) async fn start_refund(
        &self,
        tx: &mut Tx,
        state: &RefundSaga,
    ) -> Result<Started, counterfoil_saga::Error> {
        let key = state.refund_id.clone();
        in_tx!(self, tx, |s, t| s.start_in(t, &self.refund, &key, state))
    }

    /// Hands `event` to saga `id` inside the caller's transaction; call
    /// `engine().wake()` after the commit.
    pub(crate) async fn deliver_in(
        &self,
        tx: &mut Tx,
        id: uuid::Uuid,
        event: &str,
        payload: &impl serde::Serialize,
    ) -> Result<counterfoil_saga::Delivery, counterfoil_saga::Error> {
        in_tx!(self, tx, |s, t| s.deliver_in(t, id, event, payload))
    }

    /// Runs saga workers until `stop`, then finishes the sagas in hand.
    pub(crate) async fn run_workers(
        self,
        concurrency: usize,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let cfg = WorkerConfig::default()
            .concurrency(concurrency)
            .poll(Duration::from_millis(25));
        if let Err(e) = self.engine.run(cfg, stop.cancelled_owned()).await {
            tracing::error!(error = %e, "saga workers stopped");
        }
    }
}
