//! A tower [`Layer`](tower_layer::Layer) that makes HTTP handlers idempotent,
//! following the IETF `Idempotency-Key` draft.
//!
//! | situation | answer |
//! |---|---|
//! | no `Idempotency-Key` on a method that requires one (default `POST`, `PATCH`) | 400 problem+json |
//! | malformed key (empty, > 255 chars, non-printable, broken quoting) | 400 problem+json |
//! | body over the limit / unreadable / malformed JSON | 413 / 400 / 400 problem+json |
//! | first request | handler runs; its response is stored per [`ResponsePolicy`](crate::ResponsePolicy) |
//! | repeat after completion | stored response with `Idempotent-Replayed: true` |
//! | repeat while in flight | 409 problem+json with `Retry-After` (or wait, then replay) |
//! | same key, different request | 422 problem+json |
//! | store unavailable | 503 problem+json with `Retry-After`; the handler does not run |

mod context;
mod future;
mod layer;
mod problem;
mod service;

pub use context::{CompletedInTransaction, IdempotencyContext, IdempotencyScope};
pub use future::ResponseFuture;
pub use layer::{IdempotencyLayer, IdempotencyLayerBuilder};
pub use service::IdempotencyService;

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header marking a replay.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
