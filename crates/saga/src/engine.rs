//! The engine: registered definitions over a store, workers, events and operator actions.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde::Serialize;
use uuid::Uuid;

use crate::clock::{Clock, duration_ms};
use crate::crash::CrashHook;
use crate::definition::{Definition, SagaState};
use crate::driver::{ErasedSaga, Runtime};
use crate::record::{Delivery, ListFilter, LogEntry, Resolution, SagaRecord, Started, Status};
use crate::store::{ClaimRequest, Claimed, OperatorOp, SagaStore};
use crate::wakeup::Wakeup;
use crate::{BuildError, Error};

/// How a worker loop claims and runs sagas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Sagas driven at once by this worker. Default: 32.
    pub concurrency: usize,
    /// Most sagas claimed by one query. Default: 32.
    pub batch: u32,
    /// Longest wait between claims when nothing is due. Default: 100 ms.
    ///
    /// The wait is adaptive: an eighth of this right after work was found, doubling while the
    /// worker stays idle. It is the fallback for work made due by other processes: work made
    /// due in this process (a start, a delivery, a released resource, a retry or deadline
    /// coming due, an operator action, [`Engine::wake`]) wakes the loop at once.
    pub poll: Duration,
    /// How often the running/waiting/parked gauges are refreshed. Default: 15 s.
    pub metrics_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 32,
            batch: 32,
            poll: Duration::from_millis(100),
            metrics_interval: Duration::from_secs(15),
        }
    }
}

impl WorkerConfig {
    /// Sets [`concurrency`](Self::concurrency).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets [`batch`](Self::batch).
    pub fn batch(mut self, n: u32) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Sets [`poll`](Self::poll).
    pub fn poll(mut self, d: Duration) -> Self {
        self.poll = d;
        self
    }
}

/// Sets up an [`Engine`].
pub struct EngineBuilder {
    store: Arc<dyn SagaStore>,
    defs: Vec<Arc<dyn ErasedSaga>>,
    lease: Duration,
    resource_poll: Duration,
    crash: Option<Arc<dyn CrashHook>>,
    execute_on_start: bool,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("store", &self.store)
            .field(
                "defs",
                &self
                    .defs
                    .iter()
                    .map(|d| format!("{}@{}", d.name(), d.version()))
                    .collect::<Vec<_>>(),
            )
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Registers a definition. Register every version that may still be in flight; new sagas
    /// of a name start on its highest version.
    pub fn register<S: SagaState>(mut self, def: Definition<S>) -> Self {
        self.defs.push(Arc::new(def));
        self
    }

    /// How long a claim holds a saga; a worker that dies is replaced after this.
    /// Each checkpoint renews it. Default: 30 s.
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }

    /// How soon a saga queued for a busy resource looks again (it is also woken when the
    /// resource is released). Default: 5 s.
    pub fn resource_poll(mut self, d: Duration) -> Self {
        self.resource_poll = d;
        self
    }

    /// Whether [`Engine::start`] runs the new saga at once in this process (it is inserted
    /// already claimed, saving a claim round trip and a poll interval of latency). If the
    /// process dies, the saga resumes elsewhere after the lease. Sagas started with a backend's
    /// `start_in` are always left to the workers. Default: false.
    pub fn execute_on_start(mut self, yes: bool) -> Self {
        self.execute_on_start = yes;
        self
    }

    /// Installs a crash hook (test harness).
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn crash_hook(mut self, hook: Arc<dyn CrashHook>) -> Self {
        self.crash = Some(hook);
        self
    }

    /// Runs the store's migrations, then checks that every saga in flight in the database has a
    /// registered definition.
    ///
    /// # Errors
    /// [`Error::UnknownVersion`] when the database holds a saga of an unregistered name or
    /// version; [`Error::Build`] when one is registered twice; [`Error::Backend`] when the
    /// database fails.
    pub async fn build(self) -> Result<Engine, Error> {
        let mut defs: HashMap<(String, u32), Arc<dyn ErasedSaga>> = HashMap::new();
        let mut latest: HashMap<String, u32> = HashMap::new();
        for d in self.defs {
            let k = (d.name().to_owned(), d.version());
            if defs.contains_key(&k) {
                return Err(BuildError::DuplicateVersion {
                    name: k.0,
                    version: k.1,
                }
                .into());
            }
            let l = latest.entry(k.0.clone()).or_insert(k.1);
            *l = (*l).max(k.1);
            defs.insert(k, d);
        }
        self.store.migrate().await?;
        for (name, version) in self.store.active_versions().await? {
            if !defs.contains_key(&(name.clone(), version)) {
                return Err(Error::UnknownVersion { name, version });
            }
        }
        let mut known: Vec<String> = defs.keys().map(|(n, v)| format!("{n}@{v}")).collect();
        known.sort();
        let clock = self.store.clock();
        Ok(Engine {
            inner: Arc::new(Inner {
                rt: Runtime {
                    store: self.store,
                    clock,
                    lease: self.lease,
                    resource_poll: self.resource_poll,
                    crash: self.crash,
                    wakeup: Arc::new(Wakeup::default()),
                },
                defs,
                latest,
                known,
                execute_on_start: self.execute_on_start,
            }),
        })
    }
}

struct Inner {
    rt: Runtime,
    defs: HashMap<(String, u32), Arc<dyn ErasedSaga>>,
    latest: HashMap<String, u32>,
    known: Vec<String>,
    execute_on_start: bool,
}

/// The saga engine: starts sagas, runs workers, takes events and operator actions.
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.inner.rt.store)
            .field("known", &self.inner.known)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts building an engine over `store`.
    pub fn builder(store: Arc<dyn SagaStore>) -> EngineBuilder {
        EngineBuilder {
            store,
            defs: Vec::new(),
            lease: Duration::from_secs(30),
            resource_poll: Duration::from_secs(5),
            crash: None,
            execute_on_start: false,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SagaStore> {
        &self.inner.rt.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.rt.clock
    }

    fn check_registered<S: SagaState>(&self, def: &Definition<S>) -> Result<(), Error> {
        if self
            .inner
            .defs
            .contains_key(&(def.name().to_owned(), def.version()))
        {
            Ok(())
        } else {
            Err(Error::NotRegistered(format!(
                "{}@{}",
                def.name(),
                def.version()
            )))
        }
    }

    /// Starts a saga of `def` with idempotency key `key`; a second start with the same name
    /// and key returns the first saga's id with `created: false`. To start inside your own
    /// transaction, use the backend's `start_in`.
    ///
    /// # Errors
    /// [`Error::NotRegistered`] when `def` is not registered; [`Error::Serde`],
    /// [`Error::Backend`].
    ///
    /// # Panics
    /// With [`EngineBuilder::execute_on_start`], when called outside a Tokio runtime.
    ///
    /// # Cancel safety
    /// The insert either commits or not; retrying with the same key is safe.
    pub async fn start<S: SagaState>(
        &self,
        def: &Definition<S>,
        key: &str,
        state: &S,
    ) -> Result<Started, Error> {
        self.check_registered(def)?;
        let now = self.inner.rt.clock.now_ms();
        let mut new = def.new_saga(key, state, now)?;
        if self.inner.execute_on_start {
            new.lease_until = now.saturating_add(duration_ms(self.inner.rt.lease));
        }
        let started = self.inner.rt.store.start(new.clone()).await?;
        if started.created && !self.inner.execute_on_start {
            self.wake();
        }
        if started.created {
            metrics::counter!("saga_started_total", "saga" => def.name().to_owned()).increment(1);
            if self.inner.execute_on_start {
                let record = SagaRecord {
                    id: new.id,
                    name: new.name,
                    version: new.version,
                    key: new.key,
                    seq: started.seq,
                    status: Status::Running,
                    phase: crate::Phase::Forward,
                    cursor: 0,
                    attempt: 0,
                    in_flight: true,
                    paused: false,
                    cancel_requested: false,
                    state: new.state,
                    wake_at: now,
                    lease_until: new.lease_until,
                    epoch: 1,
                    wait_events: Vec::new(),
                    event: None,
                    resolution: None,
                    reason: None,
                    resource: None,
                    resource_held: false,
                    created_at: now,
                    updated_at: now,
                };
                let engine = self.clone();
                tokio::spawn(async move {
                    engine
                        .drive(Claimed {
                            record,
                            recovered: false,
                        })
                        .await;
                });
            }
        }
        Ok(started)
    }

    /// The highest registered version of saga `name`.
    pub fn latest_version(&self, name: &str) -> Option<u32> {
        self.inner.latest.get(name).copied()
    }

    /// Hands `event` with `payload` to saga `id` if it waits for it.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] for an empty name or one with a comma, [`Error::NotFound`],
    /// [`Error::Serde`], [`Error::Backend`].
    ///
    /// # Cancel safety
    /// The update either commits or not; delivering again is harmless.
    pub async fn deliver(
        &self,
        id: Uuid,
        event: &str,
        payload: &impl Serialize,
    ) -> Result<Delivery, Error> {
        crate::step::check_event(event)?;
        let payload = serde_json::to_string(payload)?;
        let now = self.inner.rt.clock.now_ms();
        let delivery = self
            .inner
            .rt
            .store
            .deliver(id, event, &payload, now)
            .await?;
        self.wake();
        Ok(delivery)
    }

    /// Wakes this engine's worker loops to claim at once. Call it after committing a
    /// transaction in which you started sagas with a backend's `start_in` (without it they
    /// are found at the next poll). Cheap; waking with nothing due costs one claim query.
    pub fn wake(&self) {
        self.inner.rt.wakeup.wake();
    }

    async fn drive(&self, c: Claimed) {
        let key = (c.record.name.clone(), c.record.version);
        let id = c.record.id;
        match self.inner.defs.get(&key) {
            Some(def) => {
                if let Err(e) = def.drive(&self.inner.rt, c).await {
                    tracing::error!(saga_id = %id, error = %e, "saga step failed in the engine");
                }
            }
            None => tracing::error!(saga_id = %id, "claimed a saga of an unknown version"),
        }
    }

    async fn claim(&self, limit: u32) -> Result<Vec<Claimed>, Error> {
        let now = self.inner.rt.clock.now_ms();
        self.inner
            .rt
            .store
            .claim(ClaimRequest {
                now,
                lease_until: now.saturating_add(duration_ms(self.inner.rt.lease)),
                limit,
                known: self.inner.known.clone(),
            })
            .await
    }

    /// Claims up to `limit` due sagas and drives each until it waits, backs off or ends.
    /// Returns how many were claimed.
    ///
    /// # Errors
    /// [`Error::Backend`] when the claim fails.
    ///
    /// # Cancel safety
    /// Dropping the future leaves claimed sagas leased; they resume after the lease.
    pub async fn run_once(&self, limit: u32) -> Result<usize, Error> {
        let claimed = self.claim(limit).await?;
        let n = claimed.len();
        futures::future::join_all(claimed.into_iter().map(|c| self.drive(c))).await;
        Ok(n)
    }

    /// Runs [`run_once`](Self::run_once) until nothing is due at the clock's present time.
    /// Returns how many claims were driven.
    ///
    /// # Errors
    /// [`Error::Backend`] when a claim fails.
    ///
    /// # Cancel safety
    /// As [`run_once`](Self::run_once).
    pub async fn run_until_idle(&self) -> Result<usize, Error> {
        let mut total = 0;
        loop {
            let n = self.run_once(64).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// A worker loop: claims due sagas and drives up to `cfg.concurrency` at once, until
    /// `shutdown` completes; then finishes the sagas it holds. Database errors are logged and
    /// retried after `cfg.poll`.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for fatal conditions.
    ///
    /// # Cancel safety
    /// Dropping the future abandons held sagas; they resume elsewhere after the lease.
    pub async fn run(
        &self,
        cfg: WorkerConfig,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let mut shutdown = std::pin::pin!(shutdown.fuse());
        // Each saga runs in its own task, so a claim waiting for a pooled connection never
        // stops the sagas that hold connections from finishing.
        let mut tasks = tokio::task::JoinSet::new();
        let mut metrics_tick = tokio::time::interval(cfg.metrics_interval);
        let shortest = (cfg.poll / 8).max(Duration::from_millis(1)).min(cfg.poll);
        let mut idle_wait = shortest;
        let wakeup = self.inner.rt.wakeup.clone();
        // A claim is a write transaction: make one only when work may be due (a wake-up, a
        // due time, the poll, a full batch, a slot freed while all were busy), never because
        // a saga task ended. The poll counts from the last claim, so frequent wake-ups of
        // other kinds cannot keep postponing it.
        let mut claim_now = true;
        let mut poll_at = tokio::time::Instant::now();
        loop {
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "saga task panicked");
                }
            }
            if (&mut shutdown).now_or_never().is_some() {
                break;
            }
            let free = cfg.concurrency.saturating_sub(tasks.len());
            let mut full = false;
            if free > 0 && std::mem::take(&mut claim_now) {
                let limit = u32::try_from(free).unwrap_or(u32::MAX).min(cfg.batch);
                match self.claim(limit).await {
                    Ok(batch) => {
                        full = batch.len() >= limit as usize;
                        idle_wait = if batch.is_empty() {
                            (idle_wait * 2).min(cfg.poll)
                        } else {
                            shortest
                        };
                        for c in batch {
                            let engine = self.clone();
                            tasks.spawn(async move { engine.drive(c).await });
                        }
                    }
                    Err(e) => {
                        idle_wait = cfg.poll;
                        tracing::warn!(error = %e, "claiming sagas failed");
                    }
                }
                poll_at = tokio::time::Instant::now() + idle_wait;
            }
            let busy = tasks.len() >= cfg.concurrency;
            if full && !busy {
                // More may be due than one batch held.
                claim_now = true;
                tokio::task::yield_now().await;
                continue;
            }
            let now = self.inner.rt.clock.now_ms();
            let (due_now, next_due) = wakeup.take_due(now);
            if due_now {
                claim_now = true;
                if !busy {
                    continue;
                }
            }
            let wake_at = next_due.map_or(poll_at, |at| {
                let until = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
                poll_at.min(tokio::time::Instant::now() + Duration::from_millis(until.max(1)))
            });
            tokio::select! {
                () = &mut shutdown => break,
                // A slot freed up: claim if every slot was taken (work may be waiting).
                Some(_) = tasks.join_next(), if !tasks.is_empty() => claim_now |= busy,
                () = wakeup.notified() => claim_now = true,
                // While every slot is taken, a freed slot triggers the claim instead.
                () = tokio::time::sleep_until(wake_at), if !busy => claim_now = true,
                _ = metrics_tick.tick() => {
                    if let Err(e) = self.refresh_metrics().await {
                        tracing::warn!(error = %e, "refreshing saga metrics failed");
                    }
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Sets the `saga_sagas{status}` gauges from the store.
    ///
    /// # Errors
    /// [`Error::Backend`].
    pub async fn refresh_metrics(&self) -> Result<(), Error> {
        for (status, n) in self.inner.rt.store.counts().await? {
            metrics::gauge!("saga_sagas", "status" => status.as_str()).set(n as f64);
        }
        Ok(())
    }

    /// One saga.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Backend`].
    pub async fn get(&self, id: Uuid) -> Result<SagaRecord, Error> {
        self.inner
            .rt
            .store
            .get(id)
            .await?
            .ok_or(Error::NotFound(id))
    }

    /// Sagas matching `filter`.
    ///
    /// # Errors
    /// [`Error::Backend`].
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>, Error> {
        self.inner.rt.store.list(filter).await
    }

    /// A saga's step log, oldest first.
    ///
    /// # Errors
    /// [`Error::Backend`].
    pub async fn log(&self, id: Uuid) -> Result<Vec<LogEntry>, Error> {
        self.inner.rt.store.log(id).await
    }

    async fn operate(&self, id: Uuid, op: OperatorOp, action: &'static str) -> Result<(), Error> {
        let now = self.inner.rt.clock.now_ms();
        if self.inner.rt.store.operate(id, op, now).await? {
            self.wake();
            return Ok(());
        }
        let rec = self.get(id).await?;
        Err(Error::InvalidState {
            id,
            action,
            state: describe(&rec),
        })
    }

    /// Stops workers from claiming the saga; a worker holding it stops at the next step
    /// boundary.
    ///
    /// # Errors
    /// [`Error::InvalidState`] when the saga has ended; [`Error::NotFound`], [`Error::Backend`].
    ///
    /// # Cancel safety
    /// One update; repeat on doubt.
    pub async fn pause(&self, id: Uuid) -> Result<(), Error> {
        self.operate(id, OperatorOp::Pause, "pause").await
    }

    /// Undoes [`pause`](Self::pause).
    ///
    /// # Errors
    /// [`Error::InvalidState`] when not paused; [`Error::NotFound`], [`Error::Backend`].
    ///
    /// # Cancel safety
    /// One update; repeat on doubt.
    pub async fn resume(&self, id: Uuid) -> Result<(), Error> {
        self.operate(id, OperatorOp::Resume, "resume").await
    }

    /// Makes a backing-off or parked saga due now; a parked one gets a fresh attempt budget
    /// (an in-doubt one is reconciled again).
    ///
    /// # Errors
    /// [`Error::InvalidState`] when waiting, held by a worker or ended; [`Error::NotFound`],
    /// [`Error::Backend`].
    ///
    /// # Cancel safety
    /// One update; repeat on doubt.
    pub async fn retry_now(&self, id: Uuid) -> Result<(), Error> {
        self.operate(id, OperatorOp::RetryNow, "retry_now").await
    }

    /// Asks to compensate the saga at the next step boundary. Refused once the pivot has
    /// committed; an in-doubt step must be resolved first.
    ///
    /// # Errors
    /// [`Error::InvalidState`] past the pivot, while compensating or once ended;
    /// [`Error::NotFound`], [`Error::Backend`].
    ///
    /// # Cancel safety
    /// One update; repeat on doubt.
    pub async fn cancel(&self, id: Uuid) -> Result<(), Error> {
        let rec = self.get(id).await?;
        let past_pivot = self
            .inner
            .defs
            .get(&(rec.name.clone(), rec.version))
            .is_some_and(|d| d.pivot_committed(&rec));
        if past_pivot {
            return Err(Error::InvalidState {
                id,
                action: "cancel",
                state: "past its pivot".into(),
            });
        }
        self.operate(id, OperatorOp::Cancel, "cancel").await
    }

    /// Answers for a parked in-doubt step: [`Resolution::Applied`] counts it done,
    /// [`Resolution::NotApplied`] runs it again.
    ///
    /// # Errors
    /// [`Error::InvalidState`] unless the saga is parked on an in-doubt step (or the answer is
    /// `Unknown`); [`Error::NotFound`], [`Error::Backend`].
    ///
    /// # Cancel safety
    /// One update; repeat on doubt.
    pub async fn resolve(&self, id: Uuid, resolution: Resolution) -> Result<(), Error> {
        self.operate(id, OperatorOp::Resolve(resolution), "resolve")
            .await
    }
}

fn describe(rec: &SagaRecord) -> String {
    let mut s = rec.status.as_str().to_owned();
    if rec.paused {
        s.push_str(", paused");
    }
    if rec.status == Status::Parked && rec.in_flight {
        s.push_str(", in doubt");
    }
    s
}
