//! The state machine that moves one claimed saga forward or back, step by step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::Instrument;

use crate::Error;
use crate::clock::{Clock, duration_ms};
use crate::crash::{CrashHook, CrashPoint};
use crate::definition::{Definition, SagaState};
use crate::record::{Phase, Resolution, SagaRecord, Status};
use crate::step::{Kind, Step, StepCx, StepError, StepOutcome, Wake, check_event};
use crate::store::{Checkpoint, Claimed, LogLine, SagaStore, StepTx};
use crate::wakeup::Wakeup;

/// What the engine hands the driver.
#[derive(Debug, Clone)]
pub(crate) struct Runtime {
    pub(crate) store: Arc<dyn SagaStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) lease: Duration,
    pub(crate) resource_poll: Duration,
    pub(crate) crash: Option<Arc<dyn CrashHook>>,
    /// Wakes this engine's worker loops.
    pub(crate) wakeup: Arc<Wakeup>,
}

/// A registered definition with its state type erased.
#[async_trait]
pub(crate) trait ErasedSaga: Send + Sync {
    fn name(&self) -> &str;
    fn version(&self) -> u32;
    /// Whether the pivot step of this saga has committed.
    fn pivot_committed(&self, rec: &SagaRecord) -> bool;
    async fn drive(&self, rt: &Runtime, claimed: Claimed) -> Result<(), Error>;
}

/// How a step boundary ends.
enum Next {
    /// Keep going with the same lease.
    Continue,
    /// The saga is released (or finished) by a checkpoint.
    Stop,
}

/// A worker death injected at a boundary, or a lost lease: stop writing.
struct Abandon;

type Flow = Result<Next, Result<Abandon, Error>>;

fn abandon() -> Result<Abandon, Error> {
    Ok(Abandon)
}

struct Run<'a, S: SagaState> {
    def: &'a Definition<S>,
    rt: &'a Runtime,
    rec: SagaRecord,
    recovered: bool,
    clear_cancel: bool,
}

fn outcome_counter(saga: &str, step: &str, outcome: &'static str) {
    metrics::counter!(
        "saga_step_outcomes_total",
        "saga" => saga.to_owned(),
        "step" => step.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

impl<'a, S: SagaState> Run<'a, S> {
    fn now(&self) -> i64 {
        self.rt.clock.now_ms()
    }

    fn step(&self, i: usize) -> Option<&'a dyn Step<S>> {
        self.def.inner.steps.get(i).map(|b| b.as_ref())
    }

    fn crash(&self, step: &str, attempt: u32, point: CrashPoint) -> bool {
        self.rt
            .crash
            .as_ref()
            .is_some_and(|c| c.crash(self.rec.id, step, attempt, point))
    }

    fn pivot_committed(&self) -> bool {
        self.def
            .inner
            .pivot
            .is_some_and(|p| self.rec.phase == Phase::Forward && (p as u32) < self.rec.cursor)
    }

    /// Writes the record as it now stands, with a log line; stops on a lost lease.
    async fn write(
        &mut self,
        tx: Option<StepTx>,
        release: Option<String>,
        step: &str,
        attempt: u32,
        outcome: &'static str,
        detail: Option<String>,
    ) -> Result<(), Result<Abandon, Error>> {
        let now = self.now();
        let cp = Checkpoint {
            id: self.rec.id,
            epoch: self.rec.epoch,
            status: self.rec.status,
            phase: self.rec.phase,
            cursor: self.rec.cursor,
            attempt: self.rec.attempt,
            in_flight: self.rec.in_flight,
            state: self.rec.state.clone(),
            wake_at: self.rec.wake_at,
            lease_until: self.rec.lease_until,
            wait_events: self.rec.wait_events.clone(),
            reason: self.rec.reason.clone(),
            resource: self.rec.resource.clone(),
            resource_held: self.rec.resource_held,
            release,
            clear_cancel: std::mem::take(&mut self.clear_cancel),
            now,
            log: LogLine {
                step: step.to_owned(),
                phase: self.rec.phase,
                attempt,
                outcome,
                detail,
            },
        };
        outcome_counter(&self.rec.name, step, outcome);
        let releases = cp.release.is_some();
        let due = (cp.lease_until == 0 && matches!(cp.status, Status::Running | Status::Waiting))
            .then_some(cp.wake_at);
        match self.rt.store.checkpoint(tx, cp).await {
            Ok(Some(ack)) => {
                // A released resource may have made the next saga due; a saga let go to run
                // now or later is due then: wake this process's workers at that moment.
                match due {
                    Some(at) if at > now => self.rt.wakeup.schedule(at),
                    Some(_) => self.rt.wakeup.wake(),
                    None => {}
                }
                if releases {
                    self.rt.wakeup.wake();
                }
                self.rec.paused = ack.paused;
                self.rec.cancel_requested = ack.cancel_requested;
                self.rec.event = None;
                self.rec.resolution = None;
                Ok(())
            }
            Ok(None) => {
                tracing::warn!(saga_id = %self.rec.id, "lease lost; abandoning saga");
                Err(abandon())
            }
            Err(e) => Err(Err(e)),
        }
    }

    /// Releases the saga to be due at `wake_at`.
    fn release_at(&mut self, wake_at: i64) {
        self.rec.wake_at = wake_at;
        self.rec.lease_until = 0;
    }

    /// Keeps the lease to go on at once. `wake_at` stays as it is (in the past), so the write
    /// touches no indexed column and PostgreSQL can update the row in place (HOT); if this
    /// worker dies, the saga is due as soon as the lease ends.
    fn keep(&mut self) {
        let now = self.now();
        self.rec.lease_until = now.saturating_add(duration_ms(self.rt.lease));
    }

    fn take_resource(&mut self) -> Option<String> {
        let r = if self.rec.resource_held {
            self.rec.resource.clone()
        } else {
            None
        };
        self.rec.resource = None;
        self.rec.resource_held = false;
        r
    }

    async fn park(
        &mut self,
        tx: Option<StepTx>,
        step: &str,
        attempt: u32,
        reason: String,
        keep_resource: bool,
    ) -> Flow {
        tracing::warn!(saga_id = %self.rec.id, step, %reason, "saga parked");
        self.rec.status = Status::Parked;
        self.rec.reason = Some(reason.clone());
        self.rec.wait_events.clear();
        let release = if keep_resource {
            None
        } else {
            self.take_resource()
        };
        let now = self.now();
        self.release_at(now);
        self.write(tx, release, step, attempt, "parked", Some(reason))
            .await?;
        Ok(Next::Stop)
    }

    /// Turns to compensation from the current forward cursor; `include_current` when the
    /// current step had started (a waiting step being cancelled).
    async fn begin_compensation(
        &mut self,
        step: &str,
        attempt: u32,
        outcome: &'static str,
        reason: String,
        include_current: bool,
        by_failure: bool,
    ) -> Flow {
        let from = self.rec.cursor + u32::from(include_current);
        let anything = (0..from as usize).any(|i| {
            self.step(i)
                .is_some_and(|s| s.kind() == Kind::Compensatable)
        });
        let release = self.take_resource();
        self.rec.phase = Phase::Compensating;
        self.rec.cursor = from;
        self.rec.attempt = 0;
        self.rec.in_flight = false;
        self.rec.wait_events.clear();
        self.rec.reason = Some(reason.clone());
        if anything {
            self.keep();
            self.write(None, release, step, attempt, outcome, Some(reason))
                .await?;
            Ok(Next::Continue)
        } else {
            self.rec.status = if by_failure {
                Status::Failed
            } else {
                Status::Compensated
            };
            let now = self.now();
            self.release_at(now);
            self.write(None, release, step, attempt, outcome, Some(reason))
                .await?;
            Ok(Next::Stop)
        }
    }

    fn state(&self) -> Result<S, Result<Abandon, Error>> {
        serde_json::from_str(&self.rec.state).map_err(|e| Err(Error::Serde(e)))
    }

    fn cx<'c>(
        &'c self,
        step: &'c str,
        attempt: u32,
        state: &'c mut S,
        wake: Wake,
        tx: &'c mut Option<StepTx>,
    ) -> StepCx<'c, S> {
        StepCx {
            saga_id: self.rec.id,
            saga_name: &self.rec.name,
            step,
            phase: self.rec.phase,
            attempt,
            now_ms: self.now(),
            state,
            wake,
            tx,
            store: self.rt.store.as_ref(),
        }
    }

    /// Marks the current forward step done with `state` and moves on.
    async fn step_done(
        &mut self,
        tx: Option<StepTx>,
        state: &S,
        step: &str,
        attempt: u32,
        outcome: &'static str,
    ) -> Flow {
        self.rec.state = serde_json::to_string(state).map_err(|e| Err(Error::Serde(e)))?;
        self.rec.cursor += 1;
        self.rec.attempt = 0;
        self.rec.wait_events.clear();
        self.rec.reason = None;
        let release = self.take_resource();
        let finished = self.rec.cursor as usize >= self.def.inner.steps.len();
        if finished {
            self.rec.status = Status::Completed;
            self.rec.in_flight = false;
            let now = self.now();
            self.release_at(now);
        } else {
            self.rec.in_flight = true;
            self.keep();
        }
        self.write(tx, release, step, attempt, outcome, None)
            .await?;
        Ok(if finished { Next::Stop } else { Next::Continue })
    }

    async fn forward(&mut self) -> Flow {
        let idx = self.rec.cursor as usize;
        let Some(step) = self.step(idx) else {
            // Cursor past the end: finish.
            self.rec.status = Status::Completed;
            self.rec.in_flight = false;
            let now = self.now();
            self.release_at(now);
            self.write(None, None, "-", 0, "completed", None).await?;
            return Ok(Next::Stop);
        };
        let name = step.name().to_owned();
        let mut state = self.state()?;
        let resource = step.resource(&state);
        let holds = match &resource {
            // A step that has run (attempt > 0) without a resource recorded gave it back
            // when it started waiting (`releasing_resource`): it goes on without it. Any
            // other step with a resource holds it from its first attempt until it is done.
            Some(r) => {
                (self.rec.resource_held && self.rec.resource.as_deref() == Some(r))
                    || (self.rec.attempt > 0 && self.rec.resource.is_none())
            }
            None => true,
        };
        // A step that needs a resource cannot have started without holding it.
        let in_doubt = std::mem::take(&mut self.recovered) && holds;

        if in_doubt && !step.idempotent() {
            let attempt = self.rec.attempt.max(1);
            let answer = match self.rec.resolution {
                Some(r) => Ok((r, "resolved")),
                None => {
                    let mut tx = None;
                    let r = {
                        let mut cx = self.cx(&name, attempt, &mut state, Wake::Start, &mut tx);
                        step.reconcile(&mut cx).await
                    };
                    drop(tx);
                    r.map(|r| (r, "reconciled"))
                }
            };
            match answer {
                Ok((Resolution::Applied, how)) => {
                    let outcome = if how == "resolved" {
                        "resolved_applied"
                    } else {
                        "reconciled_applied"
                    };
                    return self.step_done(None, &state, &name, attempt, outcome).await;
                }
                Ok((Resolution::NotApplied, how)) => {
                    // Record it, so a crash during the re-run is judged afresh.
                    let outcome = if how == "resolved" {
                        "resolved_not_applied"
                    } else {
                        "reconciled_not_applied"
                    };
                    self.rec.in_flight = true;
                    self.keep();
                    self.write(None, None, &name, attempt, outcome, None)
                        .await?;
                }
                Ok((Resolution::Unknown, _)) => {
                    let reason = format!(
                        "in doubt: step {name} attempt {attempt}: {}",
                        self.rec
                            .reason
                            .clone()
                            .unwrap_or_else(|| "worker lost".into())
                    );
                    return self.park(None, &name, attempt, reason, true).await;
                }
                Err(StepError::Retry(e)) => {
                    let wake = self.now() + duration_ms(step.policy().backoff(1));
                    self.rec.reason = Some(format!("reconcile: {e}"));
                    self.release_at(wake);
                    self.write(
                        None,
                        None,
                        &name,
                        attempt,
                        "reconcile_retry",
                        self.rec.reason.clone(),
                    )
                    .await?;
                    return Ok(Next::Stop);
                }
                Err(StepError::Defer(d)) => {
                    let wake = self.now() + duration_ms(d);
                    self.release_at(wake);
                    self.write(None, None, &name, attempt, "deferred", None)
                        .await?;
                    return Ok(Next::Stop);
                }
                Err(e) => {
                    let reason = format!("in doubt: step {name}: reconcile {e}");
                    return self.park(None, &name, attempt, reason, true).await;
                }
            }
        }

        if self.rec.cancel_requested {
            self.rec.cancel_requested = false;
            if self.pivot_committed() {
                self.clear_cancel = true;
                tracing::info!(saga_id = %self.rec.id, "cancel refused: pivot committed");
            } else {
                self.clear_cancel = true;
                let started =
                    !self.rec.wait_events.is_empty() && step.kind() == Kind::Compensatable;
                return self
                    .begin_compensation(
                        &name,
                        self.rec.attempt,
                        "cancelled",
                        "cancelled by operator".into(),
                        started,
                        false,
                    )
                    .await;
            }
        }

        if let (Some(r), false) = (&resource, holds) {
            let ok = self
                .rt
                .store
                .acquire(self.rec.id, self.rec.epoch, self.rec.seq, r)
                .await
                .map_err(Err)?;
            if !ok {
                self.rec.resource = Some(r.clone());
                self.rec.resource_held = false;
                self.rec.in_flight = false;
                let wake = self.now() + duration_ms(self.rt.resource_poll);
                self.release_at(wake);
                // Queued with a release of the same resource: if its holder let go after
                // the acquire above, the queue's head is made due in this write.
                self.write(
                    None,
                    Some(r.clone()),
                    &name,
                    self.rec.attempt,
                    "blocked",
                    Some(r.clone()),
                )
                .await?;
                return Ok(Next::Stop);
            }
            self.rec.resource = Some(r.clone());
            self.rec.resource_held = true;
        }

        let wake = match (&self.rec.event, self.rec.wait_events.is_empty()) {
            (Some(e), _) => Wake::Event(e.clone()),
            (None, false) => Wake::DeadlineReached,
            (None, true) => Wake::Start,
        };
        let attempt = if wake == Wake::Start {
            self.rec.attempt + 1
        } else {
            self.rec.attempt.max(1)
        };
        if self.crash(&name, attempt, CrashPoint::BeforeEffect) {
            return Err(abandon());
        }
        let mut tx = None;
        let started = Instant::now();
        let result = {
            let span = tracing::info_span!("saga_step", step = %name, attempt, phase = "forward");
            let mut cx = self.cx(&name, attempt, &mut state, wake, &mut tx);
            let fut = step.run(&mut cx).instrument(span);
            match step.timeout() {
                Some(t) => tokio::time::timeout(t, fut)
                    .await
                    .unwrap_or_else(|_| Err(StepError::in_doubt(format!("timed out after {t:?}")))),
                None => fut.await,
            }
        };
        metrics::histogram!(
            "saga_step_duration_seconds",
            "saga" => self.rec.name.clone(),
            "step" => name.clone()
        )
        .record(started.elapsed().as_secs_f64());
        if self.crash(&name, attempt, CrashPoint::AfterEffect) {
            return Err(abandon());
        }
        let now = self.now();
        match result {
            Ok(StepOutcome::Done) => {
                self.step_done(tx, &state, &name, attempt, "completed")
                    .await
            }
            Ok(StepOutcome::Wait { events, .. })
                if events.iter().any(|e| check_event(e).is_err()) =>
            {
                // A bug in the step: no delivery could ever wake it. Its writes are
                // dropped and a person looks at it.
                drop(tx);
                self.rec.attempt = attempt;
                self.rec.in_flight = false;
                let bad = events
                    .into_iter()
                    .find_map(|e| check_event(&e).err())
                    .map_or_else(String::new, |e| e.to_string());
                self.park(None, &name, attempt, format!("step {name}: {bad}"), false)
                    .await
            }
            Ok(StepOutcome::Wait {
                events,
                deadline,
                release_resource,
            }) => {
                self.rec.state = serde_json::to_string(&state).map_err(|e| Err(Error::Serde(e)))?;
                self.rec.status = Status::Waiting;
                self.rec.attempt = attempt;
                self.rec.in_flight = false;
                self.rec.wait_events = events;
                self.release_at(now.saturating_add(duration_ms(deadline)));
                let release = if release_resource {
                    self.take_resource()
                } else {
                    None
                };
                let detail = Some(self.rec.wait_events.join(","));
                self.write(tx, release, &name, attempt, "waiting", detail)
                    .await?;
                Ok(Next::Stop)
            }
            Err(StepError::Defer(d)) => {
                drop(tx);
                self.rec.in_flight = false;
                self.rec.wait_events.clear();
                self.release_at(now.saturating_add(duration_ms(d)));
                self.write(None, None, &name, attempt, "deferred", None)
                    .await?;
                Ok(Next::Stop)
            }
            Err(StepError::InDoubt(e)) if !step.idempotent() => {
                drop(tx);
                self.rec.attempt = attempt;
                self.rec.in_flight = true;
                self.rec.reason = Some(e.to_string());
                self.rec.wait_events.clear();
                self.keep();
                self.write(None, None, &name, attempt, "in_doubt", Some(e.to_string()))
                    .await?;
                self.recovered = true;
                Ok(Next::Continue)
            }
            Err(StepError::Retry(e) | StepError::InDoubt(e)) => {
                drop(tx);
                self.rec.attempt = attempt;
                self.rec.wait_events.clear();
                if step.policy().exhausted(attempt) {
                    let reason = format!("step {name}: retries exhausted: {e}");
                    return self.fail(&name, attempt, reason).await;
                }
                self.rec.in_flight = false;
                self.rec.reason = Some(e.to_string());
                self.release_at(now.saturating_add(duration_ms(step.policy().backoff(attempt))));
                self.write(None, None, &name, attempt, "retry", Some(e.to_string()))
                    .await?;
                Ok(Next::Stop)
            }
            Err(StepError::Fail(e)) => {
                drop(tx);
                self.rec.attempt = attempt;
                self.rec.wait_events.clear();
                self.fail(&name, attempt, format!("step {name}: {e}")).await
            }
        }
    }

    /// A forward step failed for good: compensate before the pivot, park after it.
    async fn fail(&mut self, name: &str, attempt: u32, reason: String) -> Flow {
        self.rec.in_flight = false;
        if self.pivot_committed() {
            return self
                .park(
                    None,
                    name,
                    attempt,
                    format!("failed after pivot: {reason}"),
                    false,
                )
                .await;
        }
        self.begin_compensation(name, attempt, "failed", reason, false, true)
            .await
    }

    async fn backward(&mut self) -> Flow {
        let below = self.rec.cursor as usize;
        let target = (0..below).rev().find(|&i| {
            self.step(i)
                .is_some_and(|s| s.kind() == Kind::Compensatable)
        });
        let Some(idx) = target else {
            self.rec.status = Status::Compensated;
            self.rec.in_flight = false;
            self.rec.cursor = 0;
            let now = self.now();
            self.release_at(now);
            self.write(None, None, "-", 0, "compensated", None).await?;
            return Ok(Next::Stop);
        };
        let Some(step) = self.step(idx) else {
            return Err(Err(Error::Corrupt("compensation index".into())));
        };
        let name = step.name().to_owned();
        let attempt = self.rec.attempt + 1;
        if self.crash(&name, attempt, CrashPoint::BeforeCompensation) {
            return Err(abandon());
        }
        let mut state = self.state()?;
        let mut tx = None;
        let result = {
            let span =
                tracing::info_span!("saga_step", step = %name, attempt, phase = "compensating");
            let mut cx = self.cx(&name, attempt, &mut state, Wake::Start, &mut tx);
            step.compensate(&mut cx).instrument(span).await
        };
        if self.crash(&name, attempt, CrashPoint::AfterCompensation) {
            return Err(abandon());
        }
        let now = self.now();
        match result {
            Ok(()) => {
                self.rec.state = serde_json::to_string(&state).map_err(|e| Err(Error::Serde(e)))?;
                self.rec.cursor = idx as u32;
                self.rec.attempt = 0;
                self.rec.in_flight = true;
                self.keep();
                self.write(tx, None, &name, attempt, "compensated", None)
                    .await?;
                Ok(Next::Continue)
            }
            Err(StepError::Defer(d)) => {
                drop(tx);
                self.rec.in_flight = false;
                self.release_at(now.saturating_add(duration_ms(d)));
                self.write(None, None, &name, attempt, "deferred", None)
                    .await?;
                Ok(Next::Stop)
            }
            Err(e) => {
                drop(tx);
                self.rec.attempt = attempt;
                self.rec.in_flight = false;
                let policy = step.compensation_policy();
                if policy.exhausted(attempt) {
                    let reason = format!("compensation of {name} keeps failing: {e}");
                    return self.park(None, &name, attempt, reason, false).await;
                }
                self.rec.reason = Some(e.to_string());
                self.release_at(now.saturating_add(duration_ms(policy.backoff(attempt))));
                self.write(
                    None,
                    None,
                    &name,
                    attempt,
                    "compensation_retry",
                    Some(e.to_string()),
                )
                .await?;
                Ok(Next::Stop)
            }
        }
    }

    async fn go(&mut self) -> Result<(), Error> {
        loop {
            let flow = match self.rec.phase {
                Phase::Forward => self.forward().await,
                Phase::Compensating => self.backward().await,
            };
            match flow {
                Ok(Next::Continue) => {
                    if self.rec.paused {
                        self.rec.in_flight = false;
                        let now = self.now();
                        self.release_at(now);
                        match self.write(None, None, "-", 0, "paused", None).await {
                            Ok(()) | Err(Ok(Abandon)) => return Ok(()),
                            Err(Err(e)) => return Err(e),
                        }
                    }
                }
                Ok(Next::Stop) | Err(Ok(Abandon)) => return Ok(()),
                Err(Err(Error::Serde(e))) => {
                    // A state this binary cannot read will not get better by retrying.
                    let reason = format!("state does not fit the definition: {e}");
                    self.rec.in_flight = false;
                    return match self.park(None, "-", 0, reason, false).await {
                        Ok(_) | Err(Ok(Abandon)) => Ok(()),
                        Err(Err(e)) => Err(e),
                    };
                }
                Err(Err(e)) => return Err(e),
            }
        }
    }
}

#[async_trait]
impl<S: SagaState> ErasedSaga for Definition<S> {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn version(&self) -> u32 {
        self.inner.version
    }

    fn pivot_committed(&self, rec: &SagaRecord) -> bool {
        self.inner
            .pivot
            .is_some_and(|p| rec.phase == Phase::Forward && (p as u32) < rec.cursor)
    }

    async fn drive(&self, rt: &Runtime, claimed: Claimed) -> Result<(), Error> {
        let span = tracing::info_span!(
            "saga",
            saga_id = %claimed.record.id,
            saga = %claimed.record.name,
            version = claimed.record.version,
            epoch = claimed.record.epoch
        );
        if let Some(hook) = &self.inner.on_span
            && let Ok(state) = serde_json::from_str::<S>(&claimed.record.state)
        {
            hook(&span, &state);
        }
        let mut run = Run {
            def: self,
            rt,
            recovered: claimed.recovered,
            rec: claimed.record,
            clear_cancel: false,
        };
        run.go().instrument(span).await
    }
}
