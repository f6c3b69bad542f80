//! What the store keeps about a saga: its row, its step log, and the answers of store calls.

use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::Error;

/// Where a saga is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Due for work at `wake_at` (first run, retry backoff, defer, waiting for a resource).
    Running,
    /// Waiting for an external event until a deadline.
    Waiting,
    /// Stopped for an operator; `reason` says why.
    Parked,
    /// Every step succeeded.
    Completed,
    /// A step failed or an operator cancelled, and every applied step was compensated.
    Compensated,
    /// The first step with an effect failed: there was nothing to compensate.
    Failed,
}

impl Status {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Parked => "parked",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored name.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an unknown name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "running" => Self::Running,
            "waiting" => Self::Waiting,
            "parked" => Self::Parked,
            "completed" => Self::Completed,
            "compensated" => Self::Compensated,
            "failed" => Self::Failed,
            other => return Err(Error::Corrupt(format!("status {other:?}"))),
        })
    }

    /// Whether the saga has ended for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }

    /// Every status, for metrics.
    pub const ALL: [Status; 6] = [
        Self::Running,
        Self::Waiting,
        Self::Parked,
        Self::Completed,
        Self::Compensated,
        Self::Failed,
    ];
}

/// Direction the saga moves in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Running steps forward.
    Forward,
    /// Compensating applied steps in reverse order.
    Compensating,
}

impl Phase {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Compensating => "compensating",
        }
    }

    /// Parses a stored name.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an unknown name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "forward" => Ok(Self::Forward),
            "compensating" => Ok(Self::Compensating),
            other => Err(Error::Corrupt(format!("phase {other:?}"))),
        }
    }
}

/// What `reconcile` (or an operator) found out about an in-doubt step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// The effect happened: the step counts as done.
    Applied,
    /// The effect did not happen: the step may run again.
    NotApplied,
    /// Nobody knows: the saga parks for an operator.
    Unknown,
}

impl Resolution {
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::NotApplied => "not_applied",
            Self::Unknown => "unknown",
        }
    }

    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "applied" => Ok(Self::Applied),
            "not_applied" => Ok(Self::NotApplied),
            "unknown" => Ok(Self::Unknown),
            other => Err(Error::Corrupt(format!("resolution {other:?}"))),
        }
    }
}

/// An event delivered to a waiting saga, not yet seen by its step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredEvent {
    /// Event name, one of those the step waits for.
    pub name: String,
    /// Payload as JSON text.
    pub payload: String,
}

/// One saga instance as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaRecord {
    /// Saga id.
    pub id: Uuid,
    /// Saga name.
    pub name: String,
    /// Definition version the saga started on and finishes on.
    pub version: u32,
    /// Caller's idempotency key (unique per name).
    pub key: String,
    /// Start order, increasing.
    pub seq: i64,
    /// Life stage.
    pub status: Status,
    /// Forward or compensating.
    pub phase: Phase,
    /// Index of the current step (forward) or of the next step to compensate.
    pub cursor: u32,
    /// Attempts spent on the current step in the current phase.
    pub attempt: u32,
    /// The current step may have started its effect and has no recorded outcome.
    pub in_flight: bool,
    /// An operator paused the saga.
    pub paused: bool,
    /// An operator asked to cancel; the engine compensates at the next step boundary.
    pub cancel_requested: bool,
    /// State as JSON text.
    pub state: String,
    /// When the saga is next due (ms since the Unix epoch).
    pub wake_at: i64,
    /// Lease end of the worker holding the saga; 0 when none holds it.
    pub lease_until: i64,
    /// Fencing epoch, bumped by every claim.
    pub epoch: i64,
    /// Events the current step waits for.
    pub wait_events: Vec<String>,
    /// An event delivered and not yet consumed.
    pub event: Option<DeliveredEvent>,
    /// An operator's answer for the in-doubt current step.
    pub resolution: Option<Resolution>,
    /// Last error, or why the saga is parked.
    pub reason: Option<String>,
    /// Resource the current step holds or queues for.
    pub resource: Option<String>,
    /// Whether `resource` is held (otherwise queued for).
    pub resource_held: bool,
    /// Start time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

impl SagaRecord {
    /// Deserializes the state.
    ///
    /// # Errors
    /// [`Error::Serde`] when the stored JSON does not fit `S`.
    pub fn state<S: DeserializeOwned>(&self) -> Result<S, Error> {
        Ok(serde_json::from_str(&self.state)?)
    }
}

/// One line of a saga's append-only step log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogEntry {
    /// Saga id.
    pub saga_id: Uuid,
    /// When (ms since the Unix epoch).
    pub at: i64,
    /// Step name (or `-` for saga-level entries).
    pub step: String,
    /// Phase the entry belongs to.
    pub phase: Phase,
    /// Attempt number, starting at 1.
    pub attempt: u32,
    /// What happened: `completed`, `retry`, `failed`, `in_doubt`, `deferred`, `waiting`,
    /// `blocked`, `reconciled_applied`, `reconciled_not_applied`, `compensated`, `parked`,
    /// `cancelled`, `resolved_applied`, `resolved_not_applied`.
    pub outcome: String,
    /// Error text or other detail.
    pub detail: Option<String>,
    /// Fencing epoch of the write.
    pub epoch: i64,
}

/// Result of starting a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Started {
    /// The saga's id (the existing one when `created` is false).
    pub id: Uuid,
    /// Its start order.
    pub seq: i64,
    /// False when a saga with the same name and key already existed.
    pub created: bool,
}

/// Result of delivering an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The saga was waiting for this event and is now due.
    Accepted,
    /// The saga is not waiting for this event (already resumed, timed out or never waited):
    /// nothing changed.
    NotWaiting,
}

/// Which sagas [`list`](crate::Engine::list) returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this status. Default: any.
    pub status: Option<Status>,
    /// Only this saga name. Default: any.
    pub name: Option<String>,
    /// Only sagas started at or after this start order. Default: from the first.
    pub after_seq: Option<i64>,
    /// At most this many, in start order. Default: 100.
    pub limit: Option<u32>,
}
