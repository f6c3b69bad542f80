//! The payment provider (PSP): a dyn-compatible trait, an HTTP client for it
//! and a simulator served over HTTP on loopback, so even the embedded default
//! crosses a real network hop with real timeouts.
//!
//! Every call carries an idempotency key that is stable across retries of a
//! saga step (`{payment}/authorize`, `{payment}/capture`, ...), and
//! [`PaymentProvider::lookup`] answers "did the operation with this key
//! happen?", which is how an in-doubt step is reconciled.

mod client;
mod guarded;
pub(crate) mod simulator;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::db::Durability;

pub(crate) use client::HttpProvider;
pub(crate) use guarded::GuardedProvider;

/// An operation the provider recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Operation {
    /// The provider's id for it (an authorization, capture or refund id).
    pub(crate) id: String,
    /// `authorize`, `capture`, `void` or `refund`.
    pub(crate) kind: String,
    /// `approved` or `declined`.
    pub(crate) status: String,
    /// The idempotency key it was made with.
    pub(crate) key: String,
    pub(crate) amount: i64,
    pub(crate) currency: String,
    /// For capture, void and refund: the operation it applies to.
    pub(crate) parent: Option<String>,
    /// The merchant's reference (a payment or refund id, never card data).
    pub(crate) reference: String,
    pub(crate) at: i64,
    /// The W3C `traceparent` the first request for it came with (the
    /// simulator records it, so a test can see whose span called).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) traceparent: Option<String>,
}

impl Operation {
    pub(crate) fn approved(&self) -> bool {
        self.status == "approved"
    }
}

/// What the provider is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    /// `authorize`, `capture`, `void` or `refund`.
    pub(crate) kind: String,
    pub(crate) amount: i64,
    pub(crate) currency: String,
    /// For capture, void and refund: the operation it applies to.
    pub(crate) parent: Option<String>,
    pub(crate) reference: String,
}

/// Why a provider call did not give an answer we can act on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProviderError {
    /// The call may or may not have taken effect (timeout, connection lost
    /// after sending): reconcile with [`PaymentProvider::lookup`].
    #[error("provider outcome unknown: {0}")]
    InDoubt(String),
    /// The provider is unreachable or failing (5xx, connection refused):
    /// nothing happened, try again later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider rejected the request itself (4xx other than a decline):
    /// retrying will not help.
    #[error("provider rejected the request: {0}")]
    Rejected(String),
}

/// A payment service provider.
#[async_trait]
pub(crate) trait PaymentProvider: Send + Sync + std::fmt::Debug {
    /// Executes `req` once per `key`: a retry with the same key returns the
    /// recorded operation (approved or declined) without repeating it.
    async fn execute(
        &self,
        key: &str,
        req: &Request,
        traceparent: Option<&str>,
    ) -> Result<Operation, ProviderError>;

    /// The operation made with `key`, if the provider has it.
    async fn lookup(&self, key: &str) -> Result<Option<Operation>, ProviderError>;
}

fn _obj_safe(_: &dyn PaymentProvider) {}

/// A provider called only once the commits before the call are on disk
/// (group commit, see [`Durability`]): a step's state that a power failure
/// could take back never meets the provider.
#[derive(Debug)]
pub(crate) struct AfterSync {
    inner: Arc<dyn PaymentProvider>,
    durable: Durability,
}

impl AfterSync {
    pub(crate) fn new(inner: Arc<dyn PaymentProvider>, durable: Durability) -> Self {
        Self { inner, durable }
    }
}

#[async_trait]
impl PaymentProvider for AfterSync {
    async fn execute(
        &self,
        key: &str,
        req: &Request,
        traceparent: Option<&str>,
    ) -> Result<Operation, ProviderError> {
        self.durable
            .barrier()
            .await
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        self.inner.execute(key, req, traceparent).await
    }

    async fn lookup(&self, key: &str) -> Result<Option<Operation>, ProviderError> {
        self.inner.lookup(key).await
    }
}
