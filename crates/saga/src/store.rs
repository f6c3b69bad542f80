//! The backend trait every store implements, and the values that cross it.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::record::{
    Delivery, ListFilter, LogEntry, Phase, Resolution, SagaRecord, Started, Status,
};
use crate::{Clock, Error, MemoryTx};

/// A saga to insert.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewSaga {
    /// Fresh id.
    pub id: Uuid,
    /// Saga name.
    pub name: String,
    /// Definition version.
    pub version: u32,
    /// Idempotency key, unique per name.
    pub key: String,
    /// Initial state as JSON text.
    pub state: String,
    /// Start time; the saga is due at once.
    pub now: i64,
    /// Non-zero: the saga is inserted already claimed by the starting engine until this time
    /// (epoch 1, first step in flight), so it runs without a claim round trip.
    pub lease_until: i64,
}

/// A worker's request for due sagas.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// Current time.
    pub now: i64,
    /// Lease end for every claimed saga.
    pub lease_until: i64,
    /// Most sagas to claim.
    pub limit: u32,
    /// `name@version` of every registered definition: other sagas are left alone.
    pub known: Vec<String>,
}

/// A saga a worker now holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The row after the claim (epoch bumped, lease set).
    pub record: SagaRecord,
    /// The current step was in flight when claimed: a previous holder may have started its
    /// effect and died, so the outcome is unknown.
    pub recovered: bool,
}

/// The step-log line a checkpoint appends.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LogLine {
    /// Step name.
    pub step: String,
    /// Phase.
    pub phase: Phase,
    /// Attempt number.
    pub attempt: u32,
    /// Outcome (see [`LogEntry::outcome`]).
    pub outcome: &'static str,
    /// Detail.
    pub detail: Option<String>,
}

/// A fenced write of a saga's progress, with its step-log line.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Checkpoint {
    /// Saga id.
    pub id: Uuid,
    /// Epoch the writer claimed with: the write applies only if it is still current.
    pub epoch: i64,
    /// New status.
    pub status: Status,
    /// New phase.
    pub phase: Phase,
    /// New cursor.
    pub cursor: u32,
    /// New attempt count.
    pub attempt: u32,
    /// Whether the next step is about to run in this worker (intent recorded).
    pub in_flight: bool,
    /// New state JSON.
    pub state: String,
    /// Next due time.
    pub wake_at: i64,
    /// Lease end (0 releases the saga).
    pub lease_until: i64,
    /// Events the step now waits for.
    pub wait_events: Vec<String>,
    /// Last error or park reason.
    pub reason: Option<String>,
    /// Resource the saga holds or queues for after this write.
    pub resource: Option<String>,
    /// Whether `resource` is held.
    pub resource_held: bool,
    /// A resource this write gives up: the next saga queued for it is woken.
    pub release: Option<String>,
    /// Clears the operator's cancel request (it has been acted on or refused).
    pub clear_cancel: bool,
    /// Write time.
    pub now: i64,
    /// Step-log line.
    pub log: LogLine,
}

/// Operator flags read back by a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointAck {
    /// An operator paused the saga.
    pub paused: bool,
    /// An operator asked to cancel.
    pub cancel_requested: bool,
}

/// An operator action as the store applies it (the engine checks pivots first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OperatorOp {
    /// Stop claiming the saga.
    Pause,
    /// Claim it again.
    Resume,
    /// Make a backing-off or parked saga due now, with a fresh attempt budget if parked.
    RetryNow,
    /// Compensate at the next step boundary.
    Cancel,
    /// Answer for a parked in-doubt step.
    Resolve(Resolution),
}

impl OperatorOp {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Pause => "paused",
            Self::Resume => "resumed",
            Self::RetryNow => "retry_now",
            Self::Cancel => "cancel_requested",
            Self::Resolve(Resolution::Applied) => "resolved_applied",
            Self::Resolve(Resolution::NotApplied) => "resolved_not_applied",
            Self::Resolve(Resolution::Unknown) => "resolved_unknown",
        }
    }
}

/// The transaction a step's writes and its checkpoint commit in.
///
/// Match on the backend to write business and outbox rows atomically with the checkpoint:
/// `StepTx::Postgres(tx)` gives the `sqlx::Transaction` the engine commits.
#[non_exhaustive]
pub enum StepTx {
    /// A PostgreSQL transaction.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    /// A SQLite transaction (begun with `BEGIN IMMEDIATE`).
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    /// The in-memory store's staged rows.
    Memory(MemoryTx),
}

impl Debug for StepTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => f.write_str("StepTx::Postgres"),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => f.write_str("StepTx::Sqlite"),
            Self::Memory(m) => f.debug_tuple("StepTx::Memory").field(m).finish(),
        }
    }
}

impl StepTx {
    /// The PostgreSQL transaction, if this is one.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn postgres(&mut self) -> Option<&mut sqlx::Transaction<'static, sqlx::Postgres>> {
        match self {
            Self::Postgres(t) => Some(t),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The SQLite transaction, if this is one.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn sqlite(&mut self) -> Option<&mut sqlx::Transaction<'static, sqlx::Sqlite>> {
        match self {
            Self::Sqlite(t) => Some(t),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The in-memory staged rows, if this is the in-memory store.
    pub fn memory(&mut self) -> Option<&mut MemoryTx> {
        match self {
            Self::Memory(t) => Some(t),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

/// Durable storage of sagas: what every backend can do.
///
/// The engine is the only writer; callers use [`Engine`](crate::Engine). Work that must join
/// the caller's transaction is an inherent method of the backend type
/// (`PgSagaStore::start_in`, `SqliteSagaStore::start_in`).
#[async_trait]
pub trait SagaStore: Send + Sync + Debug {
    /// The clock every timestamp of this store comes from.
    fn clock(&self) -> Arc<dyn Clock>;

    /// Creates or upgrades the tables. Safe to run from many processes at once.
    ///
    /// # Errors
    /// [`Error::Backend`] when the database fails.
    async fn migrate(&self) -> Result<(), Error>;

    /// Inserts a saga, or returns the existing one with the same name and key.
    ///
    /// # Errors
    /// [`Error::Backend`] when the database fails.
    async fn start(&self, new: NewSaga) -> Result<Started, Error>;

    /// `(name, version)` of every saga that has not ended.
    ///
    /// # Errors
    /// [`Error::Backend`] when the database fails.
    async fn active_versions(&self) -> Result<Vec<(String, u32)>, Error>;

    /// Claims up to `limit` due, unleased, unpaused sagas of known versions, oldest due first,
    /// bumping each one's epoch.
    ///
    /// # Errors
    /// [`Error::Backend`] when the database fails.
    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>, Error>;

    /// Begins the transaction a step writes in.
    ///
    /// # Errors
    /// [`Error::Backend`] when the database fails.
    async fn begin(&self) -> Result<StepTx, Error>;

    /// Writes a checkpoint fenced by its epoch, inside `tx` when given, and commits.
    /// Returns `None` (and rolls `tx` back) when the epoch is no longer current.
    ///
    /// # Errors
    /// [`Error::Backend`] when the database fails.
    async fn checkpoint(
        &self,
        tx: Option<StepTx>,
        cp: Checkpoint,
    ) -> Result<Option<CheckpointAck>, Error>;

    /// Takes `resource` for the saga if nobody holds it and no saga started earlier queues
    /// for it. Fenced by epoch.
    ///
    /// # Errors
    /// [`Error::Backend`] when the database fails.
    async fn acquire(&self, id: Uuid, epoch: i64, seq: i64, resource: &str) -> Result<bool, Error>;

    /// Hands an event to a saga waiting for it.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown saga; [`Error::Backend`] when the database fails.
    async fn deliver(
        &self,
        id: Uuid,
        event: &str,
        payload: &str,
        now: i64,
    ) -> Result<Delivery, Error>;

    /// One saga.
    ///
    /// # Errors
    /// [`Error::Backend`] when the database fails.
    async fn get(&self, id: Uuid) -> Result<Option<SagaRecord>, Error>;

    /// Sagas matching `filter`, in start order.
    ///
    /// # Errors
    /// [`Error::Backend`] when the database fails.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>, Error>;

    /// A saga's step log, oldest first.
    ///
    /// # Errors
    /// [`Error::Backend`] when the database fails.
    async fn log(&self, id: Uuid) -> Result<Vec<LogEntry>, Error>;

    /// Applies an operator action if the saga is in a state it applies to; returns whether it
    /// did.
    ///
    /// # Errors
    /// [`Error::Backend`] when the database fails.
    async fn operate(&self, id: Uuid, op: OperatorOp, now: i64) -> Result<bool, Error>;

    /// Number of sagas running, waiting and parked.
    ///
    /// # Errors
    /// [`Error::Backend`] when the database fails.
    async fn counts(&self) -> Result<Vec<(Status, u64)>, Error>;
}

fn _obj_safe(_: &dyn SagaStore) {}

/// Encodes wait events for storage: `,a,b,` so a lookup of `,a,` is exact.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn encode_events(events: &[String]) -> Option<String> {
    if events.is_empty() {
        None
    } else {
        Some(format!(",{},", events.join(",")))
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn decode_events(s: Option<&str>) -> Vec<String> {
    s.map(|s| {
        s.split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}
