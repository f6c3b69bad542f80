#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod crash;
mod definition;
mod driver;
mod engine;
mod error;
mod memory;
mod policy;
mod record;
mod step;
mod store;
mod wakeup;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod conformance;
#[cfg(feature = "test-util")]
mod harness;

pub use async_trait::async_trait;
pub use clock::{Clock, ManualClock, SystemClock};
pub use crash::{CrashHook, CrashPoint};
pub use definition::{Definition, DefinitionBuilder, SagaState};
pub use engine::{Engine, EngineBuilder, WorkerConfig};
pub use error::{BoxError, BuildError, Error};
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use harness::{CountingStore, CrashPlan, Harness};
pub use memory::{InMemorySagaStore, MemoryTx};
pub use policy::RetryPolicy;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PgSagaStore;
pub use record::{
    DeliveredEvent, Delivery, ListFilter, LogEntry, Phase, Resolution, SagaRecord, Started, Status,
};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteSagaStore;
pub use step::{Kind, Step, StepCx, StepError, StepOutcome, Wake};
pub use store::{
    Checkpoint, CheckpointAck, ClaimRequest, Claimed, LogLine, NewSaga, OperatorOp, SagaStore,
    StepTx,
};
