//! Deterministic test harness: a store on a manual clock, crash injection, run-until-idle,
//! and a store that counts what the workers ask of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::clock::{Clock, ManualClock};
use crate::crash::{CrashHook, CrashPoint};
use crate::definition::{Definition, SagaState};
use crate::engine::{Engine, EngineBuilder};
use crate::memory::InMemorySagaStore;
use crate::record::{Delivery, LogEntry, SagaRecord, Started, Status};
use crate::store::{
    Checkpoint, CheckpointAck, ClaimRequest, Claimed, NewSaga, OperatorOp, SagaStore, StepTx,
};
use crate::{Error, ListFilter};

/// Step (any when `None`), attempt (any when `None`) and boundary of a planned death.
type Planned = (Option<String>, Option<u32>, CrashPoint);

/// Planned worker deaths: each entry fires once, at a step (any step when `None`), attempt
/// (any when `None`) and boundary.
#[derive(Debug, Default)]
pub struct CrashPlan {
    plan: Mutex<Vec<Planned>>,
    fired: Mutex<Vec<(Uuid, String, u32, CrashPoint)>>,
}

impl CrashPlan {
    /// Plans one death.
    pub fn add(&self, step: Option<&str>, attempt: Option<u32>, point: CrashPoint) {
        self.plan
            .lock()
            .push((step.map(str::to_owned), attempt, point));
    }

    /// Deaths that happened: saga, step, attempt, boundary.
    pub fn fired(&self) -> Vec<(Uuid, String, u32, CrashPoint)> {
        self.fired.lock().clone()
    }
}

impl CrashHook for CrashPlan {
    fn crash(&self, saga_id: Uuid, step: &str, attempt: u32, point: CrashPoint) -> bool {
        let mut plan = self.plan.lock();
        let hit = plan.iter().position(|(s, a, p)| {
            *p == point && s.as_deref().is_none_or(|s| s == step) && a.is_none_or(|a| a == attempt)
        });
        match hit {
            Some(i) => {
                plan.remove(i);
                self.fired
                    .lock()
                    .push((saga_id, step.to_owned(), attempt, point));
                true
            }
            None => false,
        }
    }
}

/// An engine over a store on a [`ManualClock`], with crash injection and helpers to run
/// until nothing is due and to jump the clock to the next due saga.
#[derive(Debug, Clone)]
pub struct Harness {
    engine: Engine,
    clock: ManualClock,
    crashes: Arc<CrashPlan>,
}

impl Harness {
    /// A builder over a fresh [`InMemorySagaStore`] and clock, with a 30 s lease.
    pub fn in_memory() -> (EngineBuilder, ManualClock) {
        let clock = ManualClock::default();
        let store = InMemorySagaStore::with_clock(Arc::new(clock.clone()));
        (Engine::builder(Arc::new(store)), clock)
    }

    /// Builds the harness from `builder` (whose store must run on `clock`).
    ///
    /// # Errors
    /// As [`EngineBuilder::build`].
    pub async fn new(builder: EngineBuilder, clock: ManualClock) -> Result<Self, Error> {
        let crashes = Arc::new(CrashPlan::default());
        let engine = builder
            .crash_hook(crashes.clone() as Arc<dyn CrashHook>)
            .build()
            .await?;
        Ok(Self {
            engine,
            clock,
            crashes,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SagaStore> {
        self.engine.store()
    }

    /// The clock.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The crash plan.
    pub fn crashes(&self) -> &CrashPlan {
        &self.crashes
    }

    /// Plans a worker death at `point` of `step`, attempt `attempt`.
    pub fn crash_at(&self, step: &str, attempt: u32, point: CrashPoint) {
        self.crashes.add(Some(step), Some(attempt), point);
    }

    /// Starts a saga; returns its id.
    ///
    /// # Errors
    /// As [`Engine::start`].
    pub async fn start<S: SagaState>(
        &self,
        def: &Definition<S>,
        key: &str,
        state: &S,
    ) -> Result<Uuid, Error> {
        Ok(self.engine.start(def, key, state).await?.id)
    }

    /// Drives every saga due now until none is.
    ///
    /// # Errors
    /// As [`Engine::run_until_idle`].
    pub async fn run_until_idle(&self) -> Result<usize, Error> {
        self.engine.run_until_idle().await
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Status of saga `id`.
    ///
    /// # Errors
    /// As [`Engine::get`].
    pub async fn status(&self, id: Uuid) -> Result<Status, Error> {
        Ok(self.engine.get(id).await?.status)
    }

    /// Runs until idle, then jumps the clock to the next due time (wake or lease end) of an
    /// unpaused running or waiting saga, repeatedly, until none is left or `max_jumps` is
    /// spent. Returns the sagas still not settled (neither ended nor parked).
    ///
    /// # Errors
    /// As [`Engine::run_until_idle`].
    pub async fn settle(&self, max_jumps: usize) -> Result<Vec<SagaRecord>, Error> {
        for _ in 0..max_jumps {
            self.run_until_idle().await?;
            let pending = self.pending().await?;
            let next = pending
                .iter()
                .filter(|s| !s.paused)
                .map(|s| s.wake_at.max(s.lease_until))
                .min();
            match next {
                None => return Ok(pending),
                Some(t) => {
                    let now = self.clock.now_ms_value();
                    if t > now {
                        self.clock.set(t);
                    }
                }
            }
        }
        self.pending().await
    }

    async fn pending(&self) -> Result<Vec<SagaRecord>, Error> {
        let mut out = Vec::new();
        for status in [Status::Running, Status::Waiting] {
            out.extend(
                self.engine
                    .list(&ListFilter {
                        status: Some(status),
                        limit: Some(100_000),
                        ..ListFilter::default()
                    })
                    .await?,
            );
        }
        Ok(out)
    }
}

impl ManualClock {
    fn now_ms_value(&self) -> i64 {
        crate::Clock::now_ms(self)
    }
}

/// A store that passes every call on to another and counts what the workers
/// ask of it: claims, the sagas they returned, the claims that came back
/// empty, and how long each checkpoint took. For tests and benchmarks of
/// worker settings (how many round trips a saga costs).
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn SagaStore>,
    claims: AtomicU64,
    claimed: AtomicU64,
    empty: AtomicU64,
    checkpoints: Mutex<Vec<Duration>>,
}

impl CountingStore {
    /// Counts the calls made to `inner`.
    pub fn new(inner: Arc<dyn SagaStore>) -> Self {
        Self {
            inner,
            claims: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            empty: AtomicU64::new(0),
            checkpoints: Mutex::new(Vec::new()),
        }
    }

    /// Claims made so far.
    pub fn claims(&self) -> u64 {
        self.claims.load(Ordering::Relaxed)
    }

    /// Sagas those claims returned.
    pub fn claimed(&self) -> u64 {
        self.claimed.load(Ordering::Relaxed)
    }

    /// Claims that returned no saga.
    pub fn empty_claims(&self) -> u64 {
        self.empty.load(Ordering::Relaxed)
    }

    /// How long each checkpoint took, in order, since the last
    /// [`clear_checkpoint_times`](Self::clear_checkpoint_times).
    pub fn checkpoint_times(&self) -> Vec<Duration> {
        self.checkpoints.lock().clone()
    }

    /// Forgets the checkpoint times recorded so far.
    pub fn clear_checkpoint_times(&self) {
        self.checkpoints.lock().clear();
    }
}

#[async_trait]
impl SagaStore for CountingStore {
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
        self.claims.fetch_add(1, Ordering::Relaxed);
        self.claimed.fetch_add(got.len() as u64, Ordering::Relaxed);
        if got.is_empty() {
            self.empty.fetch_add(1, Ordering::Relaxed);
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
        let started = Instant::now();
        let r = self.inner.checkpoint(tx, cp).await;
        self.checkpoints.lock().push(started.elapsed());
        r
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
