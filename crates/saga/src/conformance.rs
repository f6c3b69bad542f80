//! The backend conformance suite: the same scenarios, run unchanged against every store.
//!
//! A backend's test builds a fresh [`Backend`] per scenario (a fresh database or schema on a
//! [`ManualClock`]) and calls [`run_all`]. The scenarios drive a scripted saga whose steps
//! record every effect and compensation in a [`World`], and then check the engine's promises:
//! no effect twice, no compensation for an effect that did not happen, nothing compensated
//! across a committed pivot, every saga ended or parked with a reason.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    CrashPoint, Definition, Delivery, Engine, Error, Harness, InMemorySagaStore, Kind, ManualClock,
    Resolution, RetryPolicy, SagaStore, Status, Step, StepCx, StepError, StepOutcome, StepTx, Wake,
    WorkerConfig,
};

/// Writes and counts rows that a step commits in its own transaction.
#[async_trait]
pub trait EffectRows: Send + Sync {
    /// Writes one row for `(saga, step)` inside the step's transaction.
    ///
    /// # Errors
    /// When the write fails.
    async fn write(&self, tx: &mut StepTx, saga: Uuid, step: &str) -> Result<(), Error>;

    /// Committed rows of `saga`.
    ///
    /// # Errors
    /// When the read fails.
    async fn count(&self, saga: Uuid) -> Result<usize, Error>;
}

/// [`EffectRows`] for the in-memory store.
#[derive(Debug, Clone)]
pub struct MemoryRows(pub InMemorySagaStore);

#[async_trait]
impl EffectRows for MemoryRows {
    async fn write(&self, tx: &mut StepTx, saga: Uuid, step: &str) -> Result<(), Error> {
        match tx.memory() {
            Some(m) => {
                m.insert(
                    "effects",
                    serde_json::json!({ "saga": saga.to_string(), "step": step }),
                );
                Ok(())
            }
            None => Err(Error::Corrupt("not an in-memory transaction".into())),
        }
    }

    async fn count(&self, saga: Uuid) -> Result<usize, Error> {
        let id = saga.to_string();
        Ok(self
            .0
            .committed_rows("effects")
            .iter()
            .filter(|r| r["saga"] == id.as_str())
            .count())
    }
}

/// A fresh store for one scenario.
pub struct Backend {
    /// The store, on `clock`.
    pub store: Arc<dyn SagaStore>,
    /// The store's clock.
    pub clock: ManualClock,
    /// Step-transaction rows of this store.
    pub rows: Arc<dyn EffectRows>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("store", &self.store)
            .finish()
    }
}

/// A fresh in-memory backend.
pub fn memory_backend() -> Backend {
    let clock = ManualClock::default();
    let store = InMemorySagaStore::with_clock(Arc::new(clock.clone()));
    Backend {
        store: Arc::new(store.clone()),
        clock,
        rows: Arc::new(MemoryRows(store)),
    }
}

/// What a scripted step does on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Behavior {
    /// Applies the effect and succeeds.
    Ok,
    /// No effect; transient failure.
    Retry,
    /// No effect; permanent failure.
    Fail,
    /// Applies the effect, then reports the outcome unknown.
    InDoubtApplied,
    /// No effect; reports the outcome unknown.
    InDoubtNotApplied,
    /// No effect; come back later.
    Defer,
}

/// The outside world the scripted steps act on, and the ledger the checks read.
#[derive(Debug, Default)]
pub struct World {
    inner: Mutex<WorldInner>,
}

#[derive(Debug, Default)]
struct WorldInner {
    scripts: HashMap<(String, String), VecDeque<Behavior>>,
    comp_failures: HashMap<(String, String), u32>,
    applied: HashMap<(Uuid, String), u32>,
    compensations: HashMap<(Uuid, String), u32>,
    order: Vec<(Uuid, String, &'static str)>,
    violations: Vec<String>,
    holders: HashMap<String, Uuid>,
    resource_order: HashMap<String, Vec<Uuid>>,
}

impl World {
    /// Scripts the attempts of `step` in the saga started with `key`; later attempts succeed.
    pub fn script(&self, key: &str, step: &str, attempts: &[Behavior]) {
        self.inner.lock().scripts.insert(
            (key.into(), step.into()),
            attempts.iter().copied().collect(),
        );
    }

    /// Makes the compensation of `step` in saga `key` fail `times` times first.
    pub fn fail_compensation(&self, key: &str, step: &str, times: u32) {
        self.inner
            .lock()
            .comp_failures
            .insert((key.into(), step.into()), times);
    }

    /// Times the effect of `step` of `saga` was applied.
    pub fn applied(&self, saga: Uuid, step: &str) -> u32 {
        self.inner
            .lock()
            .applied
            .get(&(saga, step.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Times the compensation of `step` of `saga` took effect (calls after the first are
    /// deduplicated by the compensation key, as a provider would).
    pub fn compensated(&self, saga: Uuid, step: &str) -> u32 {
        self.inner
            .lock()
            .compensations
            .get(&(saga, step.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Effects and compensations of `saga` in the order they happened.
    pub fn order(&self, saga: Uuid) -> Vec<(String, &'static str)> {
        self.inner
            .lock()
            .order
            .iter()
            .filter(|(s, _, _)| *s == saga)
            .map(|(_, st, what)| (st.clone(), *what))
            .collect()
    }

    /// Broken promises seen so far (effect twice, compensation without effect, overlap).
    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().violations.clone()
    }

    /// Sagas in the order they took `resource`.
    pub fn resource_order(&self, resource: &str) -> Vec<Uuid> {
        self.inner
            .lock()
            .resource_order
            .get(resource)
            .cloned()
            .unwrap_or_default()
    }

    fn next(&self, key: &str, step: &str) -> Behavior {
        self.inner
            .lock()
            .scripts
            .get_mut(&(key.to_owned(), step.to_owned()))
            .and_then(VecDeque::pop_front)
            .unwrap_or(Behavior::Ok)
    }

    fn apply(&self, saga: Uuid, step: &str) {
        let mut g = self.inner.lock();
        let n = g.applied.entry((saga, step.to_owned())).or_default();
        *n += 1;
        if *n > 1 {
            g.violations
                .push(format!("effect of {step} applied twice in {saga}"));
        }
        g.order.push((saga, step.to_owned(), "effect"));
    }

    fn enter(&self, resource: &str, saga: Uuid) {
        let mut g = self.inner.lock();
        match g.holders.get(resource) {
            Some(h) if *h != saga => {
                let msg = format!("{saga} entered {resource} held by {h}");
                g.violations.push(msg);
            }
            Some(_) => return,
            None => {}
        }
        g.holders.insert(resource.to_owned(), saga);
        g.resource_order
            .entry(resource.to_owned())
            .or_default()
            .push(saga);
    }

    /// Records that `saga` no longer uses `resource` (an operator settled its step).
    pub fn leave(&self, resource: &str, saga: Uuid) {
        let mut g = self.inner.lock();
        if g.holders.get(resource) == Some(&saga) {
            g.holders.remove(resource);
        }
    }
}

/// State of the scripted saga.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestState {
    /// Key the saga was started with (scripts are looked up by it).
    pub key: String,
    /// Steps that completed, in order (kept in the state to check it is persisted).
    pub done: Vec<String>,
    /// Resource of the resource step, if any.
    pub printer: Option<String>,
    /// Payload of the last delivered event.
    pub event: Option<String>,
}

/// A scripted step.
pub struct TestStep {
    /// Step name.
    pub name: &'static str,
    /// Step kind.
    pub kind: Kind,
    /// Forward policy.
    pub policy: RetryPolicy,
    /// Compensation policy.
    pub comp_policy: RetryPolicy,
    /// Whether `reconcile` asks the world (otherwise it answers unknown).
    pub reconciles: bool,
    /// Takes `state.printer` as resource and waits for `printed` (deadline 60 s).
    pub waits: bool,
    /// With `waits`: releases the resource when the wait starts.
    pub releases: bool,
    /// Writes a row in the step transaction.
    pub writes_row: bool,
    /// The world.
    pub world: Arc<World>,
    /// Step rows.
    pub rows: Arc<dyn EffectRows>,
}

impl std::fmt::Debug for TestStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestStep")
            .field("name", &self.name)
            .finish()
    }
}

impl TestStep {
    /// A step with default policies that reconciles and writes a row.
    pub fn new(
        name: &'static str,
        kind: Kind,
        world: &Arc<World>,
        rows: &Arc<dyn EffectRows>,
    ) -> Self {
        Self {
            name,
            kind,
            policy: RetryPolicy::default()
                .initial_backoff(Duration::from_secs(1))
                .max_attempts(3),
            comp_policy: RetryPolicy::default().max_attempts(3),
            reconciles: true,
            waits: false,
            releases: false,
            writes_row: true,
            world: world.clone(),
            rows: rows.clone(),
        }
    }
}

#[async_trait]
impl Step<TestState> for TestStep {
    fn name(&self) -> &str {
        self.name
    }

    fn kind(&self) -> Kind {
        self.kind
    }

    fn policy(&self) -> RetryPolicy {
        self.policy
    }

    fn compensation_policy(&self) -> RetryPolicy {
        self.comp_policy
    }

    fn resource(&self, state: &TestState) -> Option<String> {
        if self.waits {
            state.printer.clone()
        } else {
            None
        }
    }

    async fn run(&self, cx: &mut StepCx<'_, TestState>) -> Result<StepOutcome, StepError> {
        let id = cx.saga_id();
        if self.waits {
            match cx.wake().clone() {
                Wake::Start => {
                    if let Some(p) = cx.state().printer.clone() {
                        self.world.enter(&p, id);
                    }
                }
                Wake::Event(e) => {
                    cx.state_mut().event = Some(e.name);
                    if let Some(p) = cx.state().printer.clone() {
                        self.world.leave(&p, id);
                    }
                    return Ok(StepOutcome::Done);
                }
                Wake::DeadlineReached => {
                    cx.state_mut().event = Some("deadline".into());
                    if let Some(p) = cx.state().printer.clone() {
                        self.world.leave(&p, id);
                    }
                    return Ok(StepOutcome::Done);
                }
            }
        }
        let key = cx.state().key.clone();
        let behavior = self.world.next(&key, self.name);
        match behavior {
            Behavior::Ok | Behavior::InDoubtApplied => {
                self.world.apply(id, self.name);
                if self.writes_row {
                    let tx = cx.tx().await?;
                    self.rows.write(tx, id, self.name).await?;
                }
                if behavior == Behavior::InDoubtApplied {
                    return Err(StepError::in_doubt("provider timed out"));
                }
                cx.state_mut().done.push(self.name.to_owned());
                if self.waits {
                    let wait = StepOutcome::wait(["printed"], Duration::from_secs(60));
                    if !self.releases {
                        return Ok(wait);
                    }
                    if let Some(p) = cx.state().printer.clone() {
                        self.world.leave(&p, id);
                    }
                    return Ok(wait.releasing_resource());
                }
                Ok(StepOutcome::Done)
            }
            Behavior::Retry => Err(StepError::retry("transient")),
            Behavior::Fail => Err(StepError::fail("declined")),
            Behavior::InDoubtNotApplied => Err(StepError::in_doubt("no answer")),
            Behavior::Defer => Err(StepError::Defer(Duration::from_secs(2))),
        }
    }

    async fn compensate(&self, cx: &mut StepCx<'_, TestState>) -> Result<(), StepError> {
        let id = cx.saga_id();
        let key = (cx.state().key.clone(), self.name.to_owned());
        {
            let mut g = self.world.inner.lock();
            if let Some(n) = g.comp_failures.get_mut(&key)
                && *n > 0
            {
                *n -= 1;
                return Err(StepError::retry("void refused"));
            }
            if g.applied
                .get(&(id, self.name.to_owned()))
                .copied()
                .unwrap_or(0)
                == 0
            {
                g.violations.push(format!(
                    "compensation of {} without effect in {id}",
                    self.name
                ));
            }
            let c = g
                .compensations
                .entry((id, self.name.to_owned()))
                .or_default();
            if *c == 0 {
                *c = 1;
                g.order.push((id, self.name.to_owned(), "compensation"));
            }
        }
        Ok(())
    }

    async fn reconcile(&self, cx: &mut StepCx<'_, TestState>) -> Result<Resolution, StepError> {
        if !self.reconciles {
            return Ok(Resolution::Unknown);
        }
        if self.world.applied(cx.saga_id(), self.name) > 0 {
            cx.state_mut().done.push(self.name.to_owned());
            if self.waits
                && let Some(p) = cx.state().printer.clone()
            {
                self.world.leave(&p, cx.saga_id());
            }
            Ok(Resolution::Applied)
        } else {
            Ok(Resolution::NotApplied)
        }
    }
}

/// The payment-shaped test saga: `authorize` (compensatable) → `reserve` (compensatable) →
/// `capture` (pivot) → `print` (retriable, resource + wait when `print_waits`) → `notify`.
pub fn payment_saga(
    world: &Arc<World>,
    rows: &Arc<dyn EffectRows>,
    print_waits: bool,
    tweak: impl Fn(&mut TestStep),
) -> Definition<TestState> {
    let mut steps = vec![
        TestStep::new("authorize", Kind::Compensatable, world, rows),
        TestStep::new("reserve", Kind::Compensatable, world, rows),
        TestStep::new("capture", Kind::Pivot, world, rows),
        TestStep::new("print", Kind::Retriable, world, rows),
        TestStep::new("notify", Kind::Retriable, world, rows),
    ];
    steps[3].waits = print_waits;
    let mut b = Definition::builder("payment", 1);
    for mut s in steps {
        tweak(&mut s);
        b = b.step(s);
    }
    b.build().expect("valid test saga")
}

fn state(key: &str) -> TestState {
    TestState {
        key: key.into(),
        ..TestState::default()
    }
}

async fn harness(b: &Backend, def: &Definition<TestState>) -> Harness {
    Harness::new(
        Engine::builder(b.store.clone())
            .register(def.clone())
            .lease(Duration::from_secs(30))
            .resource_poll(Duration::from_secs(5)),
        b.clock.clone(),
    )
    .await
    .expect("engine builds")
}

fn world_and_rows(b: &Backend) -> (Arc<World>, Arc<dyn EffectRows>) {
    (Arc::new(World::default()), b.rows.clone())
}

async fn outcomes(h: &Harness, id: Uuid) -> Vec<String> {
    h.engine()
        .log(id)
        .await
        .expect("log")
        .into_iter()
        .map(|l| format!("{}:{}", l.step, l.outcome))
        .collect()
}

/// Runs every scenario, each on a fresh backend from `make`.
///
/// # Panics
/// When the backend breaks a promise.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Backend>,
{
    completes_and_persists_state(make().await).await;
    start_is_idempotent(make().await).await;
    failure_compensates_in_reverse(make().await).await;
    first_failure_is_failed(make().await).await;
    failure_after_pivot_parks(make().await).await;
    retry_waits_for_backoff(make().await).await;
    defer_spends_no_attempt(make().await).await;
    waits_for_events_and_deadlines(make().await).await;
    in_doubt_is_reconciled(make().await).await;
    unknown_parks_until_resolved(make().await).await;
    crash_after_effect_is_reconciled(make().await).await;
    crash_before_effect_runs_once(make().await).await;
    crash_mid_compensation_finishes(make().await).await;
    failing_compensation_parks(make().await).await;
    stale_epoch_is_fenced(make().await).await;
    resource_is_serialized_in_start_order(make().await).await;
    resource_released_while_waiting(make().await).await;
    released_step_crashing_when_woken_is_reconciled(make().await).await;
    versions_are_pinned(make().await).await;
    operator_actions(make().await).await;
    execute_on_start_runs_at_once(make().await).await;
    release_racing_a_queueing_hands_off(make().await).await;
    worker_wakes_on_start_delivery_and_release(make().await).await;
}

/// Every step runs once, state and step rows are persisted, the log tells the story.
pub async fn completes_and_persists_state(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    let id = h.start(&def, "k1", &state("k1")).await.expect("start");
    h.run_until_idle().await.expect("run");
    let rec = h.engine().get(id).await.expect("get");
    assert_eq!(rec.status, Status::Completed);
    let st: TestState = rec.state().expect("state");
    assert_eq!(
        st.done,
        ["authorize", "reserve", "capture", "print", "notify"]
    );
    for s in ["authorize", "reserve", "capture", "print", "notify"] {
        assert_eq!(world.applied(id, s), 1, "{s}");
    }
    assert_eq!(rows.count(id).await.expect("count"), 5);
    assert_eq!(
        outcomes(&h, id).await,
        [
            "authorize:completed",
            "reserve:completed",
            "capture:completed",
            "print:completed",
            "notify:completed"
        ]
    );
    assert!(world.violations().is_empty(), "{:?}", world.violations());
}

/// Starting twice with one key yields one saga.
pub async fn start_is_idempotent(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    let a = h
        .engine()
        .start(&def, "same", &state("same"))
        .await
        .expect("start");
    let c = h
        .engine()
        .start(&def, "same", &state("same"))
        .await
        .expect("start");
    assert!(a.created);
    assert!(!c.created);
    assert_eq!(a.id, c.id);
    h.run_until_idle().await.expect("run");
    assert_eq!(world.applied(a.id, "authorize"), 1);
}

/// A failure before the pivot compensates the applied steps in reverse order, once each.
pub async fn failure_compensates_in_reverse(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    world.script("k", "capture", &[Behavior::Fail]);
    let id = h.start(&def, "k", &state("k")).await.expect("start");
    let left = h.settle(50).await.expect("settle");
    assert!(left.is_empty());
    let rec = h.engine().get(id).await.expect("get");
    assert_eq!(rec.status, Status::Compensated);
    assert_eq!(
        world.order(id),
        [
            ("authorize".to_owned(), "effect"),
            ("reserve".to_owned(), "effect"),
            ("reserve".to_owned(), "compensation"),
            ("authorize".to_owned(), "compensation"),
        ]
    );
    assert_eq!(world.applied(id, "capture"), 0);
    assert!(
        rec.reason
            .as_deref()
            .is_some_and(|r| r.contains("declined"))
    );
    assert!(world.violations().is_empty(), "{:?}", world.violations());
}

/// The first step failing leaves nothing to compensate: `Failed`.
pub async fn first_failure_is_failed(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    world.script("k", "authorize", &[Behavior::Fail]);
    let id = h.start(&def, "k", &state("k")).await.expect("start");
    h.settle(10).await.expect("settle");
    assert_eq!(h.status(id).await.expect("status"), Status::Failed);
    assert!(world.order(id).is_empty());
}

/// After the pivot only forward recovery: a permanent failure parks, nothing is compensated.
pub async fn failure_after_pivot_parks(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    world.script(
        "k",
        "print",
        &[Behavior::Retry, Behavior::Retry, Behavior::Retry],
    );
    let id = h.start(&def, "k", &state("k")).await.expect("start");
    h.settle(50).await.expect("settle");
    let rec = h.engine().get(id).await.expect("get");
    assert_eq!(rec.status, Status::Parked);
    let reason = rec.reason.clone().unwrap_or_default();
    assert!(reason.contains("after pivot"), "{reason}");
    assert_eq!(world.compensated(id, "authorize"), 0);
    // Cancel is refused past the pivot.
    assert!(matches!(
        h.engine().cancel(id).await,
        Err(Error::InvalidState { .. })
    ));
    // The operator retries after fixing the printer: it completes.
    h.engine().retry_now(id).await.expect("retry now");
    h.settle(10).await.expect("settle");
    assert_eq!(h.status(id).await.expect("status"), Status::Completed);
    assert_eq!(world.applied(id, "print"), 1);
}

/// A retry is not due before its backoff; attempts are counted.
pub async fn retry_waits_for_backoff(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    world.script("k", "authorize", &[Behavior::Retry, Behavior::Retry]);
    let id = h.start(&def, "k", &state("k")).await.expect("start");
    h.run_until_idle().await.expect("run");
    let rec = h.engine().get(id).await.expect("get");
    assert_eq!((rec.status, rec.attempt), (Status::Running, 1));
    h.advance(Duration::from_millis(999));
    assert_eq!(h.run_until_idle().await.expect("run"), 0);
    h.advance(Duration::from_millis(1));
    h.run_until_idle().await.expect("run");
    assert_eq!(h.engine().get(id).await.expect("get").attempt, 2);
    h.advance(Duration::from_secs(2));
    h.run_until_idle().await.expect("run");
    assert_eq!(h.status(id).await.expect("status"), Status::Completed);
}

/// Deferring does not use up attempts.
pub async fn defer_spends_no_attempt(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |s| {
        s.policy = s.policy.max_attempts(1)
    });
    let h = harness(&b, &def).await;
    world.script("k", "authorize", &[Behavior::Defer; 5]);
    let id = h.start(&def, "k", &state("k")).await.expect("start");
    h.settle(20).await.expect("settle");
    assert_eq!(h.status(id).await.expect("status"), Status::Completed);
}

/// A waiting step resumes on its event; another on its deadline, even with no worker up
/// in between; late or wrong events are refused.
pub async fn waits_for_events_and_deadlines(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, true, |_| {});
    let h = harness(&b, &def).await;
    let mut s1 = state("a");
    s1.printer = Some("p1".into());
    let mut s2 = state("b");
    s2.printer = Some("p2".into());
    let a = h.start(&def, "a", &s1).await.expect("start");
    let c = h.start(&def, "b", &s2).await.expect("start");
    h.run_until_idle().await.expect("run");
    assert_eq!(h.status(a).await.expect("status"), Status::Waiting);
    assert_eq!(
        h.engine().deliver(a, "nope", &1).await.expect("deliver"),
        Delivery::NotWaiting
    );
    assert_eq!(
        h.engine()
            .deliver(a, "printed", &"ok")
            .await
            .expect("deliver"),
        Delivery::Accepted
    );
    assert_eq!(
        h.engine()
            .deliver(a, "printed", &"again")
            .await
            .expect("deliver"),
        Delivery::NotWaiting
    );
    assert!(matches!(
        h.engine().deliver(Uuid::new_v4(), "printed", &1).await,
        Err(Error::NotFound(_))
    ));
    // A name the wait list could not hold: refused before the store is asked.
    assert!(matches!(
        h.engine().deliver(a, "printed,nope", &1).await,
        Err(Error::InvalidEvent(_))
    ));
    h.run_until_idle().await.expect("run");
    let rec = h.engine().get(a).await.expect("get");
    assert_eq!(rec.status, Status::Completed);
    assert_eq!(
        rec.state::<TestState>().expect("state").event.as_deref(),
        Some("printed")
    );
    // b's deadline: nothing runs before it.
    h.advance(Duration::from_secs(59));
    h.run_until_idle().await.expect("run");
    assert_eq!(h.status(c).await.expect("status"), Status::Waiting);
    h.advance(Duration::from_secs(1));
    h.run_until_idle().await.expect("run");
    let rec = h.engine().get(c).await.expect("get");
    assert_eq!(rec.status, Status::Completed);
    assert_eq!(
        rec.state::<TestState>().expect("state").event.as_deref(),
        Some("deadline")
    );
}

/// In-doubt outcomes are reconciled, never re-run blindly.
pub async fn in_doubt_is_reconciled(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    world.script("a", "capture", &[Behavior::InDoubtApplied]);
    world.script("b", "capture", &[Behavior::InDoubtNotApplied]);
    let a = h.start(&def, "a", &state("a")).await.expect("start");
    let c = h.start(&def, "b", &state("b")).await.expect("start");
    h.settle(20).await.expect("settle");
    for id in [a, c] {
        assert_eq!(h.status(id).await.expect("status"), Status::Completed);
        assert_eq!(world.applied(id, "capture"), 1);
    }
    let log = outcomes(&h, a).await;
    assert!(log.contains(&"capture:in_doubt".to_owned()), "{log:?}");
    assert!(
        log.contains(&"capture:reconciled_applied".to_owned()),
        "{log:?}"
    );
    let log = outcomes(&h, c).await;
    assert!(
        log.contains(&"capture:reconciled_not_applied".to_owned()),
        "{log:?}"
    );
    assert!(world.violations().is_empty(), "{:?}", world.violations());
}

/// An unknown answer parks for an operator, who resolves it.
pub async fn unknown_parks_until_resolved(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |s| s.reconciles = false);
    let h = harness(&b, &def).await;
    world.script("a", "capture", &[Behavior::InDoubtApplied]);
    world.script("b", "capture", &[Behavior::InDoubtNotApplied]);
    let a = h.start(&def, "a", &state("a")).await.expect("start");
    let c = h.start(&def, "b", &state("b")).await.expect("start");
    h.settle(20).await.expect("settle");
    for id in [a, c] {
        let rec = h.engine().get(id).await.expect("get");
        assert_eq!(rec.status, Status::Parked);
        assert!(
            rec.reason
                .as_deref()
                .is_some_and(|r| r.contains("in doubt"))
        );
        // Cancelling an in-doubt pivot is not an answer: it parks again.
    }
    assert!(matches!(
        h.engine().resolve(a, Resolution::Unknown).await,
        Err(Error::InvalidState { .. })
    ));
    h.engine()
        .resolve(a, Resolution::Applied)
        .await
        .expect("resolve");
    h.engine()
        .resolve(c, Resolution::NotApplied)
        .await
        .expect("resolve");
    h.settle(20).await.expect("settle");
    for id in [a, c] {
        assert_eq!(h.status(id).await.expect("status"), Status::Completed);
        assert_eq!(world.applied(id, "capture"), 1);
    }
    assert!(
        outcomes(&h, a)
            .await
            .contains(&"capture:resolved_applied".to_owned())
    );
    // Resolving a saga that is not in doubt is refused.
    assert!(matches!(
        h.engine().resolve(a, Resolution::Applied).await,
        Err(Error::InvalidState { .. })
    ));
}

/// A worker dying after the effect and before the checkpoint: its transaction rows vanish,
/// the next worker reconciles instead of re-running.
pub async fn crash_after_effect_is_reconciled(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    h.crash_at("capture", 1, CrashPoint::AfterEffect);
    let id = h.start(&def, "k", &state("k")).await.expect("start");
    h.run_until_idle().await.expect("run");
    assert_eq!(world.applied(id, "capture"), 1);
    assert_eq!(
        rows.count(id).await.expect("count"),
        2,
        "capture's row rolled back"
    );
    // Nothing happens while the dead worker's lease runs.
    h.advance(Duration::from_secs(29));
    assert_eq!(h.run_until_idle().await.expect("run"), 0);
    h.advance(Duration::from_secs(1));
    h.run_until_idle().await.expect("run");
    assert_eq!(h.status(id).await.expect("status"), Status::Completed);
    assert_eq!(world.applied(id, "capture"), 1);
    assert!(
        outcomes(&h, id)
            .await
            .contains(&"capture:reconciled_applied".to_owned())
    );
    assert_eq!(h.crashes().fired().len(), 1);
}

/// A worker dying before the effect: reconcile says not applied, the step runs once.
pub async fn crash_before_effect_runs_once(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    h.crash_at("reserve", 1, CrashPoint::BeforeEffect);
    let id = h.start(&def, "k", &state("k")).await.expect("start");
    h.settle(10).await.expect("settle");
    assert_eq!(h.status(id).await.expect("status"), Status::Completed);
    assert_eq!(world.applied(id, "reserve"), 1);
    assert_eq!(rows.count(id).await.expect("count"), 5);
    assert!(
        outcomes(&h, id)
            .await
            .contains(&"reserve:reconciled_not_applied".to_owned())
    );
}

/// A worker dying in the middle of compensation: another finishes it.
pub async fn crash_mid_compensation_finishes(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    world.script("k", "capture", &[Behavior::Fail]);
    h.crash_at("reserve", 1, CrashPoint::AfterCompensation);
    h.crash_at("authorize", 1, CrashPoint::BeforeCompensation);
    let id = h.start(&def, "k", &state("k")).await.expect("start");
    h.settle(20).await.expect("settle");
    assert_eq!(h.status(id).await.expect("status"), Status::Compensated);
    assert_eq!(world.compensated(id, "reserve"), 1);
    assert_eq!(world.compensated(id, "authorize"), 1);
    assert_eq!(h.crashes().fired().len(), 2);
    assert!(world.violations().is_empty(), "{:?}", world.violations());
}

/// A compensation that keeps failing parks with its reason; retry-now resumes it.
pub async fn failing_compensation_parks(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    world.script("k", "capture", &[Behavior::Fail]);
    world.fail_compensation("k", "authorize", 4);
    let id = h.start(&def, "k", &state("k")).await.expect("start");
    h.settle(30).await.expect("settle");
    let rec = h.engine().get(id).await.expect("get");
    assert_eq!(rec.status, Status::Parked);
    let reason = rec.reason.unwrap_or_default();
    assert!(reason.contains("compensation of authorize"), "{reason}");
    assert_eq!(world.compensated(id, "reserve"), 1);
    assert_eq!(world.compensated(id, "authorize"), 0);
    h.engine().retry_now(id).await.expect("retry now");
    h.settle(30).await.expect("settle");
    assert_eq!(h.status(id).await.expect("status"), Status::Compensated);
    assert_eq!(world.compensated(id, "authorize"), 1);
}

/// A checkpoint with a superseded epoch changes nothing.
pub async fn stale_epoch_is_fenced(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    let id = h.start(&def, "k", &state("k")).await.expect("start");
    let store = h.store().clone();
    let now = b.clock.now_ms_for_tests();
    let req = |now: i64| crate::ClaimRequest {
        now,
        lease_until: now + 1000,
        limit: 10,
        known: vec!["payment@1".into()],
    };
    let first = store.claim(req(now)).await.expect("claim");
    assert_eq!(first.len(), 1);
    assert!(
        store.claim(req(now)).await.expect("claim").is_empty(),
        "leased"
    );
    b.clock.advance(Duration::from_secs(2));
    let second = store.claim(req(now + 2000)).await.expect("claim");
    assert_eq!(second.len(), 1);
    assert!(second[0].record.epoch > first[0].record.epoch);
    assert!(
        second[0].recovered,
        "the first claim left the step in flight"
    );
    let rec = &first[0].record;
    let cp = crate::Checkpoint {
        id,
        epoch: rec.epoch,
        status: Status::Completed,
        phase: rec.phase,
        cursor: 5,
        attempt: 0,
        in_flight: false,
        state: rec.state.clone(),
        wake_at: now,
        lease_until: 0,
        wait_events: vec![],
        reason: None,
        resource: None,
        resource_held: false,
        release: None,
        clear_cancel: false,
        now,
        log: crate::LogLine {
            step: "authorize".into(),
            phase: rec.phase,
            attempt: 1,
            outcome: "completed",
            detail: None,
        },
    };
    assert!(
        store
            .checkpoint(None, cp)
            .await
            .expect("checkpoint")
            .is_none()
    );
    assert_eq!(h.status(id).await.expect("status"), Status::Running);
    let log = store.log(id).await.expect("log");
    assert!(
        !log.iter()
            .any(|l| l.epoch == rec.epoch && l.step == "authorize" && l.outcome == "completed"),
        "a fenced checkpoint leaves no log line: {log:?}"
    );
}

/// One printer, one job: sagas take the resource one at a time, queued sagas in start
/// order, each holding it through its wait.
pub async fn resource_is_serialized_in_start_order(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, true, |_| {});
    let h = harness(&b, &def).await;
    let mut ids = Vec::new();
    for k in ["r1", "r2", "r3"] {
        let s = on_printer(k, "printer-7");
        ids.push(h.start(&def, k, &s).await.expect("start"));
        h.run_until_idle().await.expect("run");
    }
    assert_eq!(h.status(ids[0]).await.expect("status"), Status::Waiting);
    for id in &ids[1..] {
        let rec = h.engine().get(*id).await.expect("get");
        assert_eq!(rec.status, Status::Running);
        assert!(!rec.resource_held);
        assert_eq!(rec.resource.as_deref(), Some("printer-7"));
    }
    for (i, id) in ids.iter().enumerate() {
        h.engine()
            .deliver(*id, "printed", &i)
            .await
            .expect("deliver");
        h.run_until_idle().await.expect("run");
        assert_eq!(h.status(*id).await.expect("status"), Status::Completed);
        if let Some(next) = ids.get(i + 1) {
            assert_eq!(h.status(*next).await.expect("status"), Status::Waiting);
        }
    }
    assert_eq!(world.resource_order("printer-7"), ids);
    assert!(world.violations().is_empty(), "{:?}", world.violations());
}

/// A step that releases its resource when it starts waiting hands it to the next saga at
/// once: every saga queues its job in start order and waits without the resource; woken,
/// each finishes without taking it again, in any order.
pub async fn resource_released_while_waiting(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, true, |s| s.releases = true);
    let h = harness(&b, &def).await;
    let mut ids = Vec::new();
    for k in ["w1", "w2", "w3"] {
        let s = on_printer(k, "printer-8");
        ids.push(h.start(&def, k, &s).await.expect("start"));
        h.run_until_idle().await.expect("run");
    }
    // Each one queued its job and waits; none is blocked behind the one before.
    for id in &ids {
        let rec = h.engine().get(*id).await.expect("get");
        assert_eq!(rec.status, Status::Waiting, "{rec:?}");
        assert!(!rec.resource_held);
        assert_eq!(rec.resource, None);
    }
    assert_eq!(world.resource_order("printer-8"), ids);
    // Woken in reverse order: none waits for the resource again.
    for (i, id) in ids.iter().enumerate().rev() {
        h.engine()
            .deliver(*id, "printed", &i)
            .await
            .expect("deliver");
        h.run_until_idle().await.expect("run");
        assert_eq!(h.status(*id).await.expect("status"), Status::Completed);
    }
    assert_eq!(world.resource_order("printer-8"), ids);
    assert!(world.violations().is_empty(), "{:?}", world.violations());
    // A fourth saga takes the free resource at once.
    let s = on_printer("w4", "printer-8");
    let last = h.start(&def, "w4", &s).await.expect("start");
    h.run_until_idle().await.expect("run");
    assert_eq!(h.status(last).await.expect("status"), Status::Waiting);
    assert_eq!(world.resource_order("printer-8").len(), 4);
}

/// A step that released its resource and dies while handling its event is reconciled, not
/// run again, although it holds nothing; it never queues for the resource again.
pub async fn released_step_crashing_when_woken_is_reconciled(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, true, |s| s.releases = true);
    let h = harness(&b, &def).await;
    let id = h
        .start(&def, "c1", &on_printer("c1", "printer-6"))
        .await
        .expect("start");
    h.run_until_idle().await.expect("run");
    assert_eq!(h.status(id).await.expect("status"), Status::Waiting);
    h.crash_at("print", 1, CrashPoint::AfterEffect);
    h.engine()
        .deliver(id, "printed", &1)
        .await
        .expect("deliver");
    h.run_until_idle().await.expect("run");
    assert_eq!(h.crashes().fired().len(), 1);
    // The dead worker's lease runs out; the next one reconciles.
    h.advance(Duration::from_secs(30));
    h.run_until_idle().await.expect("run");
    assert_eq!(h.status(id).await.expect("status"), Status::Completed);
    assert_eq!(world.applied(id, "print"), 1);
    let log = outcomes(&h, id).await;
    assert!(
        log.contains(&"print:reconciled_applied".to_owned()),
        "{log:?}"
    );
    assert!(!log.contains(&"print:blocked".to_owned()), "{log:?}");
    assert_eq!(world.resource_order("printer-6"), vec![id]);
    assert!(world.violations().is_empty(), "{:?}", world.violations());
}

/// In-flight sagas finish on the version they started on; an unknown version in the
/// database stops start-up.
pub async fn versions_are_pinned(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let v1 = payment_saga(&world, &rows, false, |_| {});
    let h1 = harness(&b, &v1).await;
    world.script("old", "authorize", &[Behavior::Retry]);
    let old = h1.start(&v1, "old", &state("old")).await.expect("start");
    h1.run_until_idle().await.expect("run");
    drop(h1);
    // A binary that only knows v2 refuses to start.
    let v2 = Definition::<TestState>::builder("payment", 2)
        .step(TestStep::new("only", Kind::Retriable, &world, &rows))
        .build()
        .expect("valid");
    let err = Engine::builder(b.store.clone())
        .register(v2.clone())
        .build()
        .await
        .expect_err("unknown version");
    assert!(matches!(err, Error::UnknownVersion { ref name, version: 1 } if name == "payment"));
    // Both registered: the old saga finishes on v1, new ones start on v2.
    let h = Harness::new(
        Engine::builder(b.store.clone())
            .register(v1.clone())
            .register(v2.clone()),
        b.clock.clone(),
    )
    .await
    .expect("builds");
    assert_eq!(h.engine().latest_version("payment"), Some(2));
    let new = h.start(&v2, "new", &state("new")).await.expect("start");
    h.settle(10).await.expect("settle");
    assert_eq!(h.status(old).await.expect("status"), Status::Completed);
    assert_eq!(world.applied(old, "notify"), 1);
    assert_eq!(world.applied(new, "only"), 1);
    assert_eq!(world.applied(new, "authorize"), 0);
}

/// Pause, resume, cancel, list and inspect.
pub async fn operator_actions(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let h = harness(&b, &def).await;
    world.script("p", "reserve", &[Behavior::Retry]);
    let p = h.start(&def, "p", &state("p")).await.expect("start");
    h.run_until_idle().await.expect("run");
    h.engine().pause(p).await.expect("pause");
    h.advance(Duration::from_secs(10));
    assert_eq!(
        h.run_until_idle().await.expect("run"),
        0,
        "paused is not claimed"
    );
    assert!(matches!(
        h.engine().resume(Uuid::new_v4()).await,
        Err(Error::NotFound(_))
    ));
    // Cancel while paused: compensation happens after resume.
    h.engine().cancel(p).await.expect("cancel");
    assert_eq!(h.run_until_idle().await.expect("run"), 0);
    h.engine().resume(p).await.expect("resume");
    h.settle(10).await.expect("settle");
    let rec = h.engine().get(p).await.expect("get");
    assert_eq!(rec.status, Status::Compensated);
    assert_eq!(world.compensated(p, "authorize"), 1);
    assert_eq!(world.applied(p, "reserve"), 0);
    assert!(matches!(
        h.engine().pause(p).await,
        Err(Error::InvalidState { .. })
    ));
    let log = outcomes(&h, p).await;
    for o in [
        "-:paused",
        "-:cancel_requested",
        "-:resumed",
        "reserve:cancelled",
    ] {
        assert!(log.contains(&o.to_owned()), "{o} in {log:?}");
    }
    let listed = h
        .engine()
        .list(&crate::ListFilter {
            status: Some(Status::Compensated),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), [p]);
    assert!(world.violations().is_empty(), "{:?}", world.violations());
}

/// With `execute_on_start`, a started saga runs in the starting process with no claim.
pub async fn execute_on_start_runs_at_once(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = payment_saga(&world, &rows, false, |_| {});
    let engine = Engine::builder(b.store.clone())
        .register(def.clone())
        .execute_on_start(true)
        .build()
        .await
        .expect("builds");
    let id = engine
        .start(&def, "k", &state("k"))
        .await
        .expect("start")
        .id;
    tokio::time::timeout(Duration::from_secs(10), async {
        while engine.get(id).await.expect("get").status != Status::Completed {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("completes without a worker");
    assert_eq!(world.applied(id, "notify"), 1);
    let again = engine.start(&def, "k", &state("k")).await.expect("start");
    assert!(!again.created);
    assert_eq!(world.applied(id, "authorize"), 1);
}

impl ManualClock {
    fn now_ms_for_tests(&self) -> i64 {
        crate::Clock::now_ms(self)
    }
}

/// One step that takes `state.printer` and holds it until `printed` is delivered.
fn print_job(world: &Arc<World>, rows: &Arc<dyn EffectRows>) -> Definition<TestState> {
    let mut step = TestStep::new("print", Kind::Retriable, world, rows);
    step.waits = true;
    Definition::builder("printjob", 1)
        .step(step)
        .build()
        .expect("valid test saga")
}

fn on_printer(key: &str, printer: &str) -> TestState {
    let mut s = state(key);
    s.printer = Some(printer.into());
    s
}

/// The holder releases the resource between a queued saga's failed acquire and its queueing
/// write (the release finds nobody queued): the queueing write itself makes the saga due, so
/// it runs at once, with the clock standing still, not after `resource_poll`.
pub async fn release_racing_a_queueing_hands_off(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = print_job(&world, &rows);
    let h = harness(&b, &def).await;
    let store = h.store().clone();
    let t0 = b.clock.now_ms_for_tests();
    let a = h
        .start(&def, "a", &on_printer("a", "printer-9"))
        .await
        .expect("start");
    h.run_until_idle().await.expect("run");
    assert_eq!(h.status(a).await.expect("status"), Status::Waiting);
    let bid = h
        .start(&def, "b", &on_printer("b", "printer-9"))
        .await
        .expect("start");
    // A worker claims `b` and finds the printer busy...
    let claimed = store
        .claim(crate::ClaimRequest {
            now: t0,
            lease_until: t0 + 30_000,
            limit: 10,
            known: vec!["printjob@1".into()],
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let rec = claimed[0].record.clone();
    assert_eq!(rec.id, bid);
    assert!(
        !store
            .acquire(bid, rec.epoch, rec.seq, "printer-9")
            .await
            .expect("acquire")
    );
    // ...then `a` finishes and releases it before `b` is queued.
    h.engine().deliver(a, "printed", &0).await.expect("deliver");
    h.run_until_idle().await.expect("run");
    assert_eq!(h.status(a).await.expect("status"), Status::Completed);
    // The queueing write, as the driver makes it.
    let cp = crate::Checkpoint {
        id: bid,
        epoch: rec.epoch,
        status: Status::Running,
        phase: rec.phase,
        cursor: 0,
        attempt: 0,
        in_flight: false,
        state: rec.state.clone(),
        wake_at: t0 + 5_000,
        lease_until: 0,
        wait_events: vec![],
        reason: None,
        resource: Some("printer-9".into()),
        resource_held: false,
        release: Some("printer-9".into()),
        clear_cancel: false,
        now: t0,
        log: crate::LogLine {
            step: "print".into(),
            phase: rec.phase,
            attempt: 0,
            outcome: "blocked",
            detail: Some("printer-9".into()),
        },
    };
    assert!(
        store
            .checkpoint(None, cp)
            .await
            .expect("checkpoint")
            .is_some()
    );
    h.run_until_idle().await.expect("run");
    let rec = h.engine().get(bid).await.expect("get");
    assert_eq!(
        rec.status,
        Status::Waiting,
        "handed off without a clock advance"
    );
    assert!(rec.resource_held);
    h.engine()
        .deliver(bid, "printed", &1)
        .await
        .expect("deliver");
    h.run_until_idle().await.expect("run");
    assert_eq!(h.status(bid).await.expect("status"), Status::Completed);
    assert_eq!(b.clock.now_ms_for_tests(), t0, "the clock never moved");
    assert_eq!(world.resource_order("printer-9"), vec![a, bid]);
    assert!(world.violations().is_empty(), "{:?}", world.violations());
}

async fn until_status(engine: &Engine, id: Uuid, want: Status, what: &str) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while engine.get(id).await.expect("get").status != want {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("{what}: not {want:?} within 10 s");
    });
    settle().await;
}

/// Lets the worker finish the task that wrote the state just seen and go idle, so the next
/// action is found by a wake-up, not by the worker loop going round after that task.
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

/// A worker loop polling once an hour, with sagas queued on a resource re-checked once an
/// hour and a clock standing still, still runs a new start at once, resumes a saga when its
/// event is delivered, and hands the resource to the next saga the moment it is released.
pub async fn worker_wakes_on_start_delivery_and_release(b: Backend) {
    let (world, rows) = world_and_rows(&b);
    let def = print_job(&world, &rows);
    let engine = Engine::builder(b.store.clone())
        .register(def.clone())
        .resource_poll(Duration::from_secs(3600))
        .build()
        .await
        .expect("builds");
    let t0 = b.clock.now_ms_for_tests();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .run(
                    WorkerConfig::default().poll(Duration::from_secs(3600)),
                    async move {
                        let _ = stopped.await;
                    },
                )
                .await
        })
    };
    settle().await;
    // Started one by one: start order on a resource holds among sagas that have reached
    // their resource step (a saga's resource is known only when its step is about to run).
    let mut ids = Vec::new();
    for k in ["w1", "w2", "w3"] {
        let id = engine
            .start(&def, k, &on_printer(k, "printer-3"))
            .await
            .expect("start")
            .id;
        if ids.is_empty() {
            until_status(&engine, id, Status::Waiting, "a new start").await;
        } else {
            tokio::time::timeout(Duration::from_secs(10), async {
                while !engine
                    .log(id)
                    .await
                    .expect("log")
                    .iter()
                    .any(|l| l.outcome == "blocked")
                {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("a new start is queued on the busy printer within 10 s");
            settle().await;
        }
        ids.push(id);
    }
    for (i, id) in ids.iter().enumerate() {
        engine.deliver(*id, "printed", &i).await.expect("deliver");
        until_status(&engine, *id, Status::Completed, "a delivery").await;
        if let Some(next) = ids.get(i + 1) {
            until_status(&engine, *next, Status::Waiting, "a resource hand-off").await;
        }
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("worker stops")
        .expect("worker task")
        .expect("worker");
    assert_eq!(b.clock.now_ms_for_tests(), t0, "the clock never moved");
    assert_eq!(world.resource_order("printer-3"), ids);
    assert!(world.violations().is_empty(), "{:?}", world.violations());
}
