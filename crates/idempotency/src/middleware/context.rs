//! Request and response extensions shared with handlers.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};

use crate::lease::Lease;
use crate::response::StoredResponse;

/// Who the key belongs to; put it in the request's extensions (e.g. in the
/// authentication middleware, from the API key) before the idempotency layer
/// runs. Without it, keys are scoped to the operation only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdempotencyScope {
    /// The tenant, e.g. the restaurant id.
    pub tenant: String,
    /// The principal, e.g. the API key id.
    pub principal: String,
}

impl IdempotencyScope {
    /// A scope.
    pub fn new(tenant: impl Into<String>, principal: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            principal: principal.into(),
        }
    }
}

/// The lease the layer holds for this request, in the request's extensions
/// while the handler runs.
///
/// A handler that wants its response stored in the same database transaction
/// as its business rows completes the key itself with the SQL store's
/// `complete_in`, then returns [`respond`](Self::respond)'s response: the
/// layer then writes nothing.
#[derive(Debug, Clone)]
pub struct IdempotencyContext {
    pub(crate) lease: Lease,
    pub(crate) ttl: Duration,
}

impl IdempotencyContext {
    /// The lease (with the recovery point of a previous holder, if any).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// How long the response will be kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The HTTP response for a `stored` response that the handler completed
    /// itself, marked with [`CompletedInTransaction`]; replays return the
    /// same status, headers and body.
    pub fn respond<B: From<Bytes>>(&self, stored: &StoredResponse) -> Response<B> {
        let mut resp = to_http::<B>(stored);
        resp.extensions_mut().insert(CompletedInTransaction);
        resp
    }
}

/// Response extension: the handler completed the key in its own transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompletedInTransaction;

/// Builds an HTTP response from a stored one (invalid status or headers are skipped).
pub(crate) fn to_http<B: From<Bytes>>(stored: &StoredResponse) -> Response<B> {
    let mut resp = Response::new(B::from(stored.body.clone()));
    *resp.status_mut() =
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &stored.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}
