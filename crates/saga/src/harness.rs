//! Deterministic test harness: a store on a manual clock, crash injection, run-until-idle.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use uuid::Uuid;

use crate::clock::ManualClock;
use crate::crash::{CrashHook, CrashPoint};
use crate::definition::{Definition, SagaState};
use crate::engine::{Engine, EngineBuilder};
use crate::memory::InMemorySagaStore;
use crate::record::{SagaRecord, Status};
use crate::store::SagaStore;
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
