//! The errors a [`CircuitBreakerService`](super::CircuitBreakerService) returns: the crate's
//! [`Error`], whose [`Error::Rejected`] carries when to retry and whose [`Error::Inner`] is the
//! inner service's error.

pub use crate::error::{Error, Rejected};
