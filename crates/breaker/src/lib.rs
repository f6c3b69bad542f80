#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod breaker;
mod budget;
mod call;
mod clock;
mod config;
mod error;
mod event;
mod outcome;
mod permit;
mod registry;
mod retry;
mod retry_after;
mod retry_policy;
pub mod service;
mod snapshot;
mod state;
mod window;

pub use backoff::{Backoff, Jitter};
pub use breaker::{CircuitBreaker, CircuitBreakerBuilder};
pub use budget::RetryBudget;
pub use call::Call;
pub use clock::{Clock, ManualClock, MonotonicClock, TokioClock};
pub use config::{Config, ConfigBuilder, OpenDuration, Window};
pub use error::{BuildError, Error, Rejected};
pub use event::{Event, Listener};
pub use outcome::{Classify, OkIsSuccess, Outcome};
pub use permit::{OwnedPermit, Permit};
pub use registry::{BreakerRegistry, BreakerRegistryBuilder};
pub use retry::{Retry, RetryBuilder, Transience};
pub use retry_after::parse_retry_after;
pub use retry_policy::RetryPolicy;
pub use service::{CircuitBreakerLayer, CircuitBreakerService};
pub use snapshot::Snapshot;
pub use state::State;
