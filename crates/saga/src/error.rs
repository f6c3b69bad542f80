//! The crate's error types.

use uuid::Uuid;

/// A boxed error from a foreign library or from step code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the engine or a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database holds in-flight sagas of a name and version that are not registered.
    #[error("database holds in-flight saga {name} version {version} that is not registered")]
    UnknownVersion {
        /// Saga name.
        name: String,
        /// Saga version.
        version: u32,
    },
    /// No saga definition of that name is registered.
    #[error("saga {0} is not registered")]
    NotRegistered(String),
    /// No saga with that id exists.
    #[error("saga {0} not found")]
    NotFound(Uuid),
    /// The operator action does not apply to the saga in its present state.
    #[error("saga {id} is {state}: {action} does not apply")]
    InvalidState {
        /// The saga.
        id: Uuid,
        /// The action that was refused.
        action: &'static str,
        /// What the saga is doing.
        state: String,
    },
    /// Another worker took over the saga (its lease lapsed); this worker's write was fenced out.
    #[error("lease lost on saga {0}")]
    LeaseLost(Uuid),
    /// The saga state or an event payload could not be (de)serialized.
    #[error("state serialization")]
    Serde(#[source] serde_json::Error),
    /// An event name that cannot be waited for or delivered: empty, or holding a comma
    /// (a saga's wait list is stored comma-separated).
    #[error("invalid event name {0:?}: it must be non-empty and hold no comma")]
    InvalidEvent(String),
    /// A row read from the database is not what this crate wrote.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A saga definition is invalid.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The database failed.
    #[error("database")]
    Backend(#[source] BoxError),
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl Error {
    pub(crate) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(e))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::Serde(e)
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::backend(e)
    }
}

/// Why a saga definition or an engine could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A compensatable step comes after the pivot: it could never be compensated.
    #[error("compensatable step {step} comes after pivot {pivot}")]
    CompensatableAfterPivot {
        /// The offending step.
        step: String,
        /// The pivot step.
        pivot: String,
    },
    /// More than one step is a pivot.
    #[error("saga has two pivots: {0} and {1}")]
    TwoPivots(String, String),
    /// Two steps share a name.
    #[error("duplicate step name {0}")]
    DuplicateStep(String),
    /// The saga has no steps.
    #[error("saga {0} has no steps")]
    NoSteps(String),
    /// A name is empty or holds a character the store reserves (`,` or `@`).
    #[error("invalid name {0:?}")]
    InvalidName(String),
    /// The same name and version were registered twice.
    #[error("saga {name} version {version} registered twice")]
    DuplicateVersion {
        /// Saga name.
        name: String,
        /// Saga version.
        version: u32,
    },
}
