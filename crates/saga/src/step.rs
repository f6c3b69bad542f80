//! Steps: what a saga does, how it undoes it, and how it finds out what happened.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::record::{DeliveredEvent, Phase, Resolution};
use crate::store::{SagaStore, StepTx};
use crate::{BoxError, Error, RetryPolicy};

/// Where a step sits in the pivot taxonomy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Has a compensation; comes before the pivot.
    Compensatable,
    /// The point of no return (a card capture): once it commits, only forward recovery exists.
    Pivot,
    /// Never compensated; after the pivot it is retried (or parked) until it succeeds.
    Retriable,
}

/// What a successful run asks the engine to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepOutcome {
    /// The step is done; its state changes and transaction commit with the checkpoint.
    Done,
    /// Commit the state and transaction, then wait for one of `events` until `deadline`
    /// passes; then run the step again with [`StepCx::wake`] telling which.
    Wait {
        /// Event names that resume the step (no `,` in them).
        events: Vec<String>,
        /// How long to wait from now.
        deadline: Duration,
        /// Hand the step's [resource](Step::resource) to the next saga while waiting; see
        /// [`StepOutcome::releasing_resource`].
        release_resource: bool,
    },
}

/// Checks that `event` can be waited for and delivered.
pub(crate) fn check_event(event: &str) -> Result<(), crate::Error> {
    if event.is_empty() || event.contains(',') {
        Err(crate::Error::InvalidEvent(event.to_owned()))
    } else {
        Ok(())
    }
}

impl StepOutcome {
    /// Waits for any of `events` for at most `deadline`, keeping the step's resource.
    ///
    /// An event name is any non-empty string without a comma. A step that asks for another
    /// one is parked, as is a saga whose step is broken.
    ///
    /// A step that may send its request more than once (it runs again after a refusal,
    /// and the earlier request's answer can still come) can name the request in the event,
    /// e.g. `printed#job-2`: an answer to the earlier request, delivered as `printed#job-1`,
    /// then finds the saga [not waiting](crate::Delivery::NotWaiting) and changes nothing.
    pub fn wait<I, E>(events: I, deadline: Duration) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<String>,
    {
        Self::Wait {
            events: events.into_iter().map(Into::into).collect(),
            deadline,
            release_resource: false,
        }
    }

    /// Releases the step's [resource](Step::resource) in the same commit that starts the
    /// wait, handing it to the next saga queued on it; no effect on [`StepOutcome::Done`].
    ///
    /// For a step whose use of the resource ends before the wait: it queued a job for a
    /// device that serializes its own work (a fiscal printer's driver prints one document at
    /// a time), and waits only for the device's answer. Holding the resource through that
    /// wait would pass one job per round trip to the device; releasing it passes jobs as fast
    /// as they can be queued, still in start order. From then on the step runs without the
    /// resource until it is done: when woken, after a retry, and when reconciled (an
    /// operator's retry of a parked saga takes it again).
    #[must_use]
    pub fn releasing_resource(self) -> Self {
        match self {
            Self::Wait {
                events, deadline, ..
            } => Self::Wait {
                events,
                deadline,
                release_resource: true,
            },
            other => other,
        }
    }
}

/// Why a step (or compensation, or reconcile) did not succeed. State changes and the
/// transaction of the attempt are discarded.
///
/// Any error converts into [`StepError::Retry`] with `?`.
#[non_exhaustive]
pub enum StepError {
    /// A transient failure: try again after the policy's backoff, spending an attempt.
    ///
    /// Until the step runs again the saga waits for no event: a delivery in between is
    /// [`Delivery::NotWaiting`](crate::Delivery::NotWaiting). A step woken by an event it
    /// cannot use (an answer to an earlier request, say) should return
    /// [`StepOutcome::wait`] again rather than retry, or name its request in the event so
    /// that such an answer never wakes it.
    Retry(BoxError),
    /// The effect did not happen and never will: compensate (before the pivot) or park
    /// (after it).
    Fail(BoxError),
    /// The effect may or may not have happened: `reconcile` decides.
    InDoubt(BoxError),
    /// Come back after this long without spending an attempt (circuit open, device busy).
    Defer(Duration),
}

impl StepError {
    /// A [`StepError::Retry`] with a message.
    pub fn retry(msg: impl Into<BoxError>) -> Self {
        Self::Retry(msg.into())
    }

    /// A [`StepError::Fail`] with a message.
    pub fn fail(msg: impl Into<BoxError>) -> Self {
        Self::Fail(msg.into())
    }

    /// A [`StepError::InDoubt`] with a message.
    pub fn in_doubt(msg: impl Into<BoxError>) -> Self {
        Self::InDoubt(msg.into())
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retry(e) => write!(f, "Retry({e})"),
            Self::Fail(e) => write!(f, "Fail({e})"),
            Self::InDoubt(e) => write!(f, "InDoubt({e})"),
            Self::Defer(d) => write!(f, "Defer({d:?})"),
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retry(e) => write!(f, "retry: {e}"),
            Self::Fail(e) => write!(f, "failed: {e}"),
            Self::InDoubt(e) => write!(f, "in doubt: {e}"),
            Self::Defer(d) => write!(f, "deferred for {d:?}"),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for StepError {
    fn from(e: E) -> Self {
        Self::Retry(Box::new(e))
    }
}

/// Why a step runs this time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wake {
    /// A fresh attempt.
    Start,
    /// An event the step waited for arrived.
    Event(DeliveredEvent),
    /// The wait's deadline passed with no event.
    DeadlineReached,
}

/// What a step sees while it runs: the saga's state, a stable idempotency key, and the
/// transaction its checkpoint commits in.
pub struct StepCx<'a, S> {
    pub(crate) saga_id: Uuid,
    pub(crate) saga_name: &'a str,
    pub(crate) step: &'a str,
    pub(crate) phase: Phase,
    pub(crate) attempt: u32,
    pub(crate) now_ms: i64,
    pub(crate) state: &'a mut S,
    pub(crate) wake: Wake,
    pub(crate) tx: &'a mut Option<StepTx>,
    pub(crate) store: &'a dyn SagaStore,
}

impl<S> fmt::Debug for StepCx<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepCx")
            .field("saga_id", &self.saga_id)
            .field("saga", &self.saga_name)
            .field("step", &self.step)
            .field("phase", &self.phase)
            .field("attempt", &self.attempt)
            .field("wake", &self.wake)
            .finish_non_exhaustive()
    }
}

impl<'a, S> StepCx<'a, S> {
    /// The saga's id.
    pub fn saga_id(&self) -> Uuid {
        self.saga_id
    }

    /// The step's name.
    pub fn step(&self) -> &str {
        self.step
    }

    /// Idempotency key of the step's effect, stable across attempts and workers:
    /// `{saga_id}/{step}`. Pass it to the provider so a repeated call is deduplicated.
    pub fn key(&self) -> String {
        format!("{}/{}", self.saga_id, self.step)
    }

    /// Idempotency key of the step's compensation: `{saga_id}/{step}/compensate`.
    pub fn compensation_key(&self) -> String {
        format!("{}/{}/compensate", self.saga_id, self.step)
    }

    /// Attempt number in the current phase, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this is the forward run or a compensation.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The engine clock's time (ms since the Unix epoch).
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// The saga's state.
    pub fn state(&self) -> &S {
        self.state
    }

    /// The saga's state, to change; changes commit only if the step succeeds.
    pub fn state_mut(&mut self) -> &mut S {
        self.state
    }

    /// Why the step runs this time.
    pub fn wake(&self) -> &Wake {
        &self.wake
    }

    /// The delivered event's name and payload, if the step was woken by one.
    ///
    /// # Errors
    /// [`Error::Serde`] when the payload does not fit `T`.
    pub fn event<T: DeserializeOwned>(&self) -> Result<Option<(&str, T)>, Error> {
        match &self.wake {
            Wake::Event(e) => Ok(Some((e.name.as_str(), serde_json::from_str(&e.payload)?))),
            _ => Ok(None),
        }
    }

    /// The transaction the engine commits this step's checkpoint in, begun on first use.
    /// Write business and outbox rows here to commit them atomically with the step.
    ///
    /// # Errors
    /// [`Error::Backend`] when the transaction cannot begin.
    pub async fn tx(&mut self) -> Result<&mut StepTx, Error> {
        if self.tx.is_none() {
            *self.tx = Some(self.store.begin().await?);
        }
        match self.tx.as_mut() {
            Some(t) => Ok(t),
            None => Err(Error::Corrupt("transaction vanished".to_owned())),
        }
    }
}

/// One step of a saga over state `S`.
///
/// Only [`name`](Step::name), [`kind`](Step::kind) and [`run`](Step::run) are required.
#[async_trait]
pub trait Step<S: Send + Sync + 'static>: Send + Sync + 'static {
    /// Unique name within the saga; stored in the step log and in keys.
    fn name(&self) -> &str;

    /// Compensatable, pivot or retriable.
    fn kind(&self) -> Kind;

    /// Retry policy of `run`. Default: [`RetryPolicy::default`].
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// Retry policy of `compensate`; exhausting it parks the saga. Default:
    /// [`RetryPolicy::compensation`].
    fn compensation_policy(&self) -> RetryPolicy {
        RetryPolicy::compensation()
    }

    /// Longest one attempt of `run` may take; past it the attempt is in doubt.
    /// Keep it below the worker lease. Default: none.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// A resource the step needs alone (a printer's serial): at most one step per resource
    /// runs at a time, sagas taking turns in start order. Held from the first attempt until
    /// the step is done (waits included, unless the step waits with
    /// [`StepOutcome::releasing_resource`]); a step parked in doubt keeps it until an
    /// operator resolves it, since the device's state is unknown. Default: none.
    fn resource(&self, _state: &S) -> Option<String> {
        None
    }

    /// Whether running the step again after a crash or an in-doubt attempt cannot apply its
    /// effect twice: it writes only in [`StepCx::tx`], or the outside system deduplicates by
    /// [`StepCx::key`]. Such steps skip `reconcile`. Default: false.
    fn idempotent(&self) -> bool {
        false
    }

    /// Does the step's work.
    ///
    /// # Errors
    /// A [`StepError`] saying how to go on.
    async fn run(&self, cx: &mut StepCx<'_, S>) -> Result<StepOutcome, StepError>;

    /// Undoes an applied step (only [`Kind::Compensatable`] steps are compensated). Called
    /// again after a crash, so it must be idempotent (use [`StepCx::compensation_key`]).
    /// Default: nothing to undo.
    ///
    /// # Errors
    /// A [`StepError`]; every kind but `Defer` spends an attempt of the compensation policy.
    async fn compensate(&self, _cx: &mut StepCx<'_, S>) -> Result<(), StepError> {
        Ok(())
    }

    /// Asks the outside world whether an in-doubt attempt took effect. State changes made
    /// here are kept when the answer is [`Resolution::Applied`]. Default: unknown, which parks
    /// the saga for an operator.
    ///
    /// # Errors
    /// A [`StepError`]: `Retry`/`Defer` ask again later, the others park the saga.
    async fn reconcile(&self, _cx: &mut StepCx<'_, S>) -> Result<Resolution, StepError> {
        Ok(Resolution::Unknown)
    }
}
