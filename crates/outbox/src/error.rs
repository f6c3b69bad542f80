//! The crate's error types.

use std::error::Error as StdError;

/// A boxed foreign error (database driver, broker client).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong in the outbox, the relay and the inbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed or could not be reached.
    #[error("outbox storage failed")]
    Backend(#[source] BoxError),
    /// The message broker failed or could not be reached.
    #[error("message broker failed")]
    Broker(#[source] BoxError),
    /// A message could not be stored as given (bad header, payload too large, ...).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// A stored row could not be decoded.
    #[error("corrupt stored row: {0}")]
    Corrupt(String),
    /// A schema migration failed.
    #[error("migration {version} failed")]
    Migration {
        /// The migration version that failed.
        version: i64,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
}

impl Error {
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn db(e: sqlx::Error) -> Self {
        Error::Backend(Box::new(e))
    }
}

/// A builder was given settings that cannot work together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is out of range or inconsistent with another one.
    #[error("invalid setting `{name}`: {reason}")]
    Invalid {
        /// The setting's name.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },
}

impl BuildError {
    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        BuildError::Invalid {
            name,
            reason: reason.into(),
        }
    }
}
