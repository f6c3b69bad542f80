//! The worker loop claims when work may be due, not whenever something
//! happens: a claim is a write transaction on the database.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use counterfoil_saga::{
    Checkpoint, CheckpointAck, ClaimRequest, Claimed, Clock, Definition, Delivery, Engine, Error,
    InMemorySagaStore, Kind, ListFilter, LogEntry, NewSaga, OperatorOp, SagaRecord, SagaStore,
    Started, Status, Step, StepCx, StepError, StepOutcome, StepTx, WorkerConfig, async_trait,
};
use uuid::Uuid;

/// An in-memory store that counts claims (and how many came back empty).
#[derive(Debug, Default)]
struct Counting {
    inner: InMemorySagaStore,
    claims: AtomicUsize,
    empty: AtomicUsize,
}

#[async_trait]
impl SagaStore for Counting {
    fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock()
    }
    async fn migrate(&self) -> Result<(), Error> {
        self.inner.migrate().await
    }
    async fn start(&self, new: NewSaga) -> Result<Started, Error> {
        self.inner.start(new).await
    }
    async fn active_versions(&self) -> Result<Vec<(String, u32)>, Error> {
        self.inner.active_versions().await
    }
    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>, Error> {
        let got = self.inner.claim(req).await?;
        self.claims.fetch_add(1, Ordering::SeqCst);
        if got.is_empty() {
            self.empty.fetch_add(1, Ordering::SeqCst);
        }
        Ok(got)
    }
    async fn begin(&self) -> Result<StepTx, Error> {
        self.inner.begin().await
    }
    async fn checkpoint(
        &self,
        tx: Option<StepTx>,
        cp: Checkpoint,
    ) -> Result<Option<CheckpointAck>, Error> {
        self.inner.checkpoint(tx, cp).await
    }
    async fn acquire(&self, id: Uuid, epoch: i64, seq: i64, resource: &str) -> Result<bool, Error> {
        self.inner.acquire(id, epoch, seq, resource).await
    }
    async fn deliver(
        &self,
        id: Uuid,
        event: &str,
        payload: &str,
        now: i64,
    ) -> Result<Delivery, Error> {
        self.inner.deliver(id, event, payload, now).await
    }
    async fn get(&self, id: Uuid) -> Result<Option<SagaRecord>, Error> {
        self.inner.get(id).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>, Error> {
        self.inner.list(filter).await
    }
    async fn log(&self, id: Uuid) -> Result<Vec<LogEntry>, Error> {
        self.inner.log(id).await
    }
    async fn operate(&self, id: Uuid, op: OperatorOp, now: i64) -> Result<bool, Error> {
        self.inner.operate(id, op, now).await
    }
    async fn counts(&self) -> Result<Vec<(Status, u64)>, Error> {
        self.inner.counts().await
    }
}

struct Once;

#[async_trait]
impl Step<u32> for Once {
    fn name(&self) -> &str {
        "once"
    }
    fn kind(&self) -> Kind {
        Kind::Retriable
    }
    async fn run(&self, _cx: &mut StepCx<'_, u32>) -> Result<StepOutcome, StepError> {
        Ok(StepOutcome::Done)
    }
}

/// Three sagas started together are claimed together; their tasks ending
/// and a batch that held everything due do not send the loop back to the
/// database. (Before: a claim after the batch and one per ended task, five
/// or more in all.)
#[tokio::test(start_paused = true)]
async fn sagas_ending_and_a_partial_batch_cost_no_claim() {
    let store = Arc::new(Counting::default());
    let def = Definition::<u32>::builder("one", 1)
        .step(Once)
        .build()
        .unwrap();
    let engine = Engine::builder(store.clone())
        .register(def.clone())
        .build()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..3u32 {
        ids.push(engine.start(&def, &format!("k{i}"), &i).await.unwrap().id);
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut cfg = WorkerConfig::default();
            // No poll within the test: only wake-ups make claims.
            cfg.poll = Duration::from_secs(3600);
            engine
                .run(cfg, async {
                    let _ = stopped.await;
                })
                .await
        })
    };
    // Virtual time: the runtime advances it only when every task is idle.
    tokio::time::sleep(Duration::from_secs(60)).await;
    for id in &ids {
        assert_eq!(engine.get(*id).await.unwrap().status, Status::Completed);
    }
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
    let claims = store.claims.load(Ordering::SeqCst);
    let empty = store.empty.load(Ordering::SeqCst);
    // One claim takes all three; the wake-ups of the three starts, folded
    // into one, may cost one more, and the first poll one more.
    assert!(claims <= 3, "{claims} claims, {empty} empty");
    assert_eq!(claims - empty, 1, "one claim took all three");
}
