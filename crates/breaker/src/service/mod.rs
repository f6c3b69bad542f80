//! The breaker as tower middleware: [`CircuitBreakerLayer`] wraps a service in a
//! [`CircuitBreakerService`].
//!
//! A rejected request fails at once with [`Error::Rejected`] without reaching the inner
//! service; every other response is classified (by default `Ok` is a success) and recorded.

mod error;
mod future;
mod layer;
#[allow(clippy::module_inception)]
mod service;

pub use error::{Error, Rejected};
pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreakerService;
