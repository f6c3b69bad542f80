//! The worker loop claims when work may be due, not whenever something
//! happens: a claim is a write transaction on the database.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use counterfoil_saga::{
    CountingStore, Definition, Engine, InMemorySagaStore, Kind, Status, Step, StepCx, StepError,
    StepOutcome, WorkerConfig, async_trait,
};

/// Says on `ran` that it ran.
struct Once {
    ran: tokio::sync::mpsc::UnboundedSender<u32>,
}

#[async_trait]
impl Step<u32> for Once {
    fn name(&self) -> &str {
        "once"
    }
    fn kind(&self) -> Kind {
        Kind::Retriable
    }
    async fn run(&self, cx: &mut StepCx<'_, u32>) -> Result<StepOutcome, StepError> {
        let _ = self.ran.send(*cx.state());
        Ok(StepOutcome::Done)
    }
}

/// Returns once every task of this paused, single-threaded runtime waits:
/// the paused clock moves only then, and no other timer is due this soon.
async fn settled() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Three sagas started together are claimed together; their tasks ending
/// and a batch that held everything due do not send the loop back to the
/// database. (Before: a claim after the batch and one per ended task, five
/// or more in all.)
#[tokio::test(start_paused = true)]
async fn sagas_ending_and_a_partial_batch_cost_no_claim() {
    let store = Arc::new(CountingStore::new(Arc::new(InMemorySagaStore::new())));
    let (ran, mut runs) = tokio::sync::mpsc::unbounded_channel();
    let def = Definition::<u32>::builder("one", 1)
        .step(Once { ran })
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
    for _ in 0..3 {
        runs.recv().await.expect("each saga runs");
    }
    // Their checkpoints, their tasks ending, and whatever the loop does
    // about it, all done.
    settled().await;
    for id in &ids {
        assert_eq!(engine.get(*id).await.unwrap().status, Status::Completed);
    }
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
    let (claims, empty) = (store.claims(), store.empty_claims());
    // One claim takes all three; the wake-ups of the three starts, folded
    // into one, may cost one more, and the first poll one more.
    assert!(claims <= 3, "{claims} claims, {empty} empty");
    assert_eq!(claims - empty, 1, "one claim took all three");
}
