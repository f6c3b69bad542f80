#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod begin;
mod clock;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod conformance;
mod error;
mod fast_json;
mod fingerprint;
mod key;
mod lease;
mod memory;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod middleware;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod migrate;
mod policy;
#[cfg(feature = "postgres")]
mod postgres;
mod reaper;
mod record;
#[cfg(feature = "redis")]
mod redis;
mod response;
mod run;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;

pub use begin::Begin;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{BoxError, BuildError, Error, RunError};
pub use fingerprint::{Fingerprint, Fingerprinter, FingerprinterBuilder};
pub use key::{
    IdempotencyKey, KeyError, MAX_KEY_LEN, MAX_SCOPE_LEN, Scope, parse_header_value,
    validate_client_key,
};
pub use lease::{BeginOptions, Lease, RecoveryPoint};
pub use memory::InMemoryIdempotencyStore;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use middleware::{
    CompletedInTransaction, IdempotencyContext, IdempotencyLayer, IdempotencyLayerBuilder,
    IdempotencyScope, IdempotencyService,
};
pub use policy::{Disposition, InFlightPolicy, ResponsePolicy};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PgIdempotencyStore;
pub use reaper::{reap_all, spawn_reaper};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::RedisIdempotencyStore;
pub use response::StoredResponse;
pub use run::{Idempotency, Run};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteIdempotencyStore;
pub use store::IdempotencyStore;
