//! `deliver_in`: an event handed to a waiting saga inside the caller's
//! transaction takes effect with that transaction's commit, and not without
//! it, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use counterfoil_saga::{
    Definition, Delivery, Engine, Error, Harness, Kind, ManualClock, PgSagaStore, SqliteSagaStore,
    Status, Step, StepCx, StepError, StepOutcome, Wake, async_trait,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Order {
    paid_with: Option<String>,
}

/// Waits for `paid`, then keeps what came with it.
struct Pay;

#[async_trait]
impl Step<Order> for Pay {
    fn name(&self) -> &str {
        "pay"
    }
    fn kind(&self) -> Kind {
        Kind::Retriable
    }
    async fn run(&self, cx: &mut StepCx<'_, Order>) -> Result<StepOutcome, StepError> {
        match cx.wake() {
            Wake::Event(_) => {
                let with = cx
                    .event::<String>()
                    .map_err(|e| StepError::fail(e.to_string()))?
                    .map(|(_, with)| with);
                cx.state_mut().paid_with = with;
                Ok(StepOutcome::Done)
            }
            _ => Ok(StepOutcome::wait(["paid"], Duration::from_secs(60))),
        }
    }
}

fn definition() -> Definition<Order> {
    Definition::builder("order", 1).step(Pay).build().unwrap()
}

async fn waiting(h: &Harness, def: &Definition<Order>, key: &str) -> Uuid {
    let id = h.start(def, key, &Order::default()).await.unwrap();
    h.run_until_idle().await.unwrap();
    assert_eq!(h.status(id).await.unwrap(), Status::Waiting);
    id
}

async fn paid_with(engine: &Engine, id: Uuid) -> Option<String> {
    engine
        .get(id)
        .await
        .unwrap()
        .state::<Order>()
        .unwrap()
        .paid_with
}

/// The same steps on either backend: a delivery rolled back changes nothing;
/// one committed with the caller's own row completes the saga with its
/// payload; a second in the same wait is not taken; an unknown saga is
/// `NotFound`; a name with a comma is `InvalidEvent`.
macro_rules! delivery_commits_with_the_callers_transaction {
    ($pool:expr, $store:expr) => {{
        let (pool, store) = ($pool, $store);
        let clock = ManualClock::default();
        let store = store.with_clock(Arc::new(clock.clone()));
        let def = definition();
        let h = Harness::new(
            Engine::builder(Arc::new(store.clone())).register(def.clone()),
            clock,
        )
        .await
        .unwrap();
        let id = waiting(&h, &def, "a").await;

        // Rolled back: the saga still waits, as if nothing came.
        let mut tx = pool.begin().await.unwrap();
        let d = store
            .deliver_in(&mut tx, id, "paid", &"card")
            .await
            .unwrap();
        assert_eq!(d, Delivery::Accepted);
        tx.rollback().await.unwrap();
        h.run_until_idle().await.unwrap();
        assert_eq!(h.status(id).await.unwrap(), Status::Waiting);

        // Committed with the caller's own row.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("CREATE TABLE receipts (k TEXT PRIMARY KEY)")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("INSERT INTO receipts VALUES ('a')")
            .execute(&mut *tx)
            .await
            .unwrap();
        let d = store
            .deliver_in(&mut tx, id, "paid", &"cash")
            .await
            .unwrap();
        assert_eq!(d, Delivery::Accepted);
        // Once per wait: a second event in the same transaction is not taken.
        let d = store
            .deliver_in(&mut tx, id, "paid", &"card")
            .await
            .unwrap();
        assert_eq!(d, Delivery::NotWaiting);
        assert!(matches!(
            store
                .deliver_in(&mut tx, Uuid::new_v4(), "paid", &"card")
                .await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            store.deliver_in(&mut tx, id, "paid,late", &"card").await,
            Err(Error::InvalidEvent(_))
        ));
        tx.commit().await.unwrap();
        h.engine().wake();
        h.run_until_idle().await.unwrap();
        assert_eq!(h.status(id).await.unwrap(), Status::Completed);
        assert_eq!(paid_with(h.engine(), id).await.as_deref(), Some("cash"));
        pool.close().await;
    }};
}

#[tokio::test]
async fn sqlite_delivery_commits_with_the_callers_transaction() {
    let (pool, path) = common::sqlite_pool(1).await;
    delivery_commits_with_the_callers_transaction!(pool.clone(), SqliteSagaStore::new(pool));
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn postgres_delivery_commits_with_the_callers_transaction() {
    let Some(url) = common::pg_url() else { return };
    let (pool, schema) = common::pg_pool(&url, 4).await;
    delivery_commits_with_the_callers_transaction!(pool.clone(), PgSagaStore::new(pool));
    common::pg_drop(&url, &schema).await;
}
