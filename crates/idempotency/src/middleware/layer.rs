//! The layer and its builder.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use tower_layer::Layer;

use super::problem::DEFAULT_TYPE_BASE;
use super::service::IdempotencyService;
use crate::error::BuildError;
use crate::fingerprint::Fingerprinter;
use crate::key::{KeyError, MAX_KEY_LEN};
use crate::lease::BeginOptions;
use crate::policy::{InFlightPolicy, ResponsePolicy};
use crate::store::IdempotencyStore;

#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) store: Arc<dyn IdempotencyStore>,
    pub(crate) operation: Option<String>,
    pub(crate) route: Option<String>,
    pub(crate) methods: Vec<Method>,
    pub(crate) require_for: Vec<Method>,
    pub(crate) opts: BeginOptions,
    /// How often a running request renews its lease; `None`: never.
    pub(crate) renew_every: Option<Duration>,
    pub(crate) in_flight: InFlightPolicy,
    pub(crate) responses: ResponsePolicy,
    pub(crate) fingerprinter: Fingerprinter,
    pub(crate) max_request_body: usize,
    pub(crate) max_response_body: usize,
    pub(crate) replay_headers: Vec<HeaderName>,
    pub(crate) min_key_len: usize,
    pub(crate) problem_type_base: String,
}

/// Applies [`IdempotencyService`] to a service.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use axum::{Router, routing::post};
/// use counterfoil_idempotency::{IdempotencyLayer, InMemoryIdempotencyStore};
///
/// let layer = IdempotencyLayer::builder(Arc::new(InMemoryIdempotencyStore::new()))
///     .operation("create_payment")
///     .build()?;
/// let app: Router = Router::new().route("/v1/payments", post(|| async { "ok" }).layer(layer));
/// # Ok::<(), counterfoil_idempotency::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct IdempotencyLayer {
    config: Arc<Config>,
}

impl IdempotencyLayer {
    /// A layer with the defaults (see [`IdempotencyLayerBuilder`]).
    pub fn new(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            config: Arc::new(IdempotencyLayerBuilder::new(store).config()),
        }
    }

    /// A builder.
    pub fn builder(store: Arc<dyn IdempotencyStore>) -> IdempotencyLayerBuilder {
        IdempotencyLayerBuilder::new(store)
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService::from_parts(inner, self.config.clone())
    }
}

/// Configures an [`IdempotencyLayer`].
#[derive(Debug)]
pub struct IdempotencyLayerBuilder {
    store: Arc<dyn IdempotencyStore>,
    operation: Option<String>,
    route: Option<String>,
    methods: Vec<Method>,
    require_for: Vec<Method>,
    opts: BeginOptions,
    renew: Renew,
    in_flight: InFlightPolicy,
    responses: ResponsePolicy,
    fingerprinter: Fingerprinter,
    max_request_body: usize,
    max_response_body: usize,
    replay_headers: Vec<HeaderName>,
    min_key_len: usize,
    problem_type_base: String,
}

/// The lease renewal chosen on the builder.
#[derive(Debug, Clone, Copy)]
enum Renew {
    /// Every third of the lease.
    ThirdOfLease,
    /// At this interval.
    Every(Duration),
    /// Never.
    Off,
}

impl IdempotencyLayerBuilder {
    fn new(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            store,
            operation: None,
            route: None,
            methods: vec![Method::POST, Method::PUT, Method::PATCH, Method::DELETE],
            require_for: vec![Method::POST, Method::PATCH],
            opts: BeginOptions::default(),
            renew: Renew::ThirdOfLease,
            in_flight: InFlightPolicy::default(),
            responses: ResponsePolicy::default(),
            fingerprinter: Fingerprinter::default(),
            max_request_body: 1 << 20,
            max_response_body: 1 << 20,
            replay_headers: vec![
                http::header::CONTENT_TYPE,
                http::header::LOCATION,
                http::header::CONTENT_LANGUAGE,
            ],
            min_key_len: 1,
            problem_type_base: DEFAULT_TYPE_BASE.to_owned(),
        }
    }

    fn config(self) -> Config {
        Config {
            store: self.store,
            operation: self.operation,
            route: self.route,
            methods: self.methods,
            require_for: self.require_for,
            opts: self.opts,
            renew_every: match self.renew {
                Renew::ThirdOfLease => Some((self.opts.lease / 3).max(Duration::from_millis(1))),
                Renew::Every(every) => Some(every),
                Renew::Off => None,
            },
            in_flight: self.in_flight,
            responses: self.responses,
            fingerprinter: self.fingerprinter,
            max_request_body: self.max_request_body,
            max_response_body: self.max_response_body,
            replay_headers: self.replay_headers,
            min_key_len: self.min_key_len,
            problem_type_base: self.problem_type_base,
        }
    }

    /// The operation in the key's scope. Default: method and route, e.g.
    /// `POST /v1/payments/{id}/refunds`.
    pub fn operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }

    /// The route template counted in the fingerprint. Default: the request path.
    /// The concrete path and query always count too.
    pub fn route(mut self, template: impl Into<String>) -> Self {
        self.route = Some(template.into());
        self
    }

    /// Methods on which a key is honoured; others pass through. Default:
    /// `POST`, `PUT`, `PATCH`, `DELETE`.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Methods that must carry a key (400 otherwise). Default: `POST`, `PATCH`.
    pub fn require_for(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.require_for = methods.into_iter().collect();
        self
    }

    /// How long a claim holds the key without being renewed. While the
    /// handler runs, the lease is renewed (see
    /// [`renew_every`](Self::renew_every)), so this bounds how long a retry
    /// waits (or gets 409) after the process holding the key died, not how
    /// long a handler may run. Default: 30 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.opts.lease = lease;
        self
    }

    /// How often a running request renews its lease: a heartbeat, so that a
    /// short lease covers a long handler while its process is alive, and
    /// runs out soon after it dies. Default: a third of the lease.
    ///
    /// The renewals run in the request's own task, while its handler (and
    /// then its response body) is polled, and stop when it finishes; a handler
    /// that finishes at its first poll arms no timer. They need a Tokio
    /// runtime with the time driver (as an axum server has). If a renewal
    /// finds the key taken over ([`Error::LeaseLost`](crate::Error::LeaseLost)),
    /// a warning is logged, renewing stops and the handler runs on; its
    /// response is then not stored. Other renewal errors are logged and
    /// retried at the next interval.
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew = Renew::Every(every);
        self
    }

    /// Turns lease renewal off: the lease fixed at claim time must then cover
    /// the longest handler (see [`lease`](Self::lease)).
    pub fn without_renewal(mut self) -> Self {
        self.renew = Renew::Off;
        self
    }

    /// How long a response is replayed. Default: 24 h.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.opts.ttl = ttl;
        self
    }

    /// What a duplicate does while the first is in flight. Default: 409.
    pub fn in_flight(mut self, policy: InFlightPolicy) -> Self {
        self.in_flight = policy;
        self
    }

    /// Which responses are stored. Default: [`ResponsePolicy::default`].
    pub fn responses(mut self, policy: ResponsePolicy) -> Self {
        self.responses = policy;
        self
    }

    /// How request bodies are fingerprinted. Default: the whole JSON body.
    pub fn fingerprinter(mut self, fingerprinter: Fingerprinter) -> Self {
        self.fingerprinter = fingerprinter;
        self
    }

    /// Largest request body read (413 above). Default: 1 MiB.
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.max_request_body = bytes;
        self
    }

    /// Largest response body stored; a larger one is passed through, and its
    /// replay carries the status and headers with an empty body and
    /// `Idempotent-Body-Omitted: true`. Default: 1 MiB.
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.max_response_body = bytes;
        self
    }

    /// Adds a response header kept for replay. Default: `content-type`,
    /// `location`, `content-language`.
    pub fn replay_header(mut self, name: HeaderName) -> Self {
        if !self.replay_headers.contains(&name) {
            self.replay_headers.push(name);
        }
        self
    }

    /// Shortest key accepted (an entropy floor; Brandur's sample uses 20).
    /// Default: 1.
    pub fn min_key_len(mut self, len: usize) -> Self {
        self.min_key_len = len;
        self
    }

    /// The base of the `type` URI of the layer's problem+json answers
    /// (RFC 9457): the problem's kind is appended to it, so a base of
    /// `https://errors.example.com/idempotency/` gives
    /// `https://errors.example.com/idempotency/key-missing`. The kinds are
    /// `key-missing`, `key-malformed`, `body-too-large`, `body-unreadable`,
    /// `body-malformed`, `in-flight`, `key-reused`, `store-unavailable` and
    /// `response-failed`. Default: `urn:problem-type:counterfoil:idempotency:`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use counterfoil_idempotency::{IdempotencyLayer, InMemoryIdempotencyStore};
    ///
    /// let layer = IdempotencyLayer::builder(Arc::new(InMemoryIdempotencyStore::new()))
    ///     .problem_type_base("https://errors.example.com/idempotency/")
    ///     .build()?;
    /// # Ok::<(), counterfoil_idempotency::BuildError>(())
    /// ```
    pub fn problem_type_base(mut self, base: impl Into<String>) -> Self {
        self.problem_type_base = base.into();
        self
    }

    /// The layer.
    ///
    /// # Errors
    ///
    /// [`BuildError`] for a zero lease, TTL or renewal interval, a renewal
    /// interval not shorter than the lease, an empty operation or a minimum
    /// key length over 255.
    pub fn build(self) -> Result<IdempotencyLayer, BuildError> {
        if self.opts.lease.is_zero() {
            return Err(BuildError::ZeroDuration("lease"));
        }
        if let Renew::Every(every) = self.renew {
            if every.is_zero() {
                return Err(BuildError::ZeroDuration("renew_every"));
            }
            if every >= self.opts.lease {
                return Err(BuildError::RenewNotShorterThanLease {
                    every,
                    lease: self.opts.lease,
                });
            }
        }
        if self.opts.ttl.is_zero() {
            return Err(BuildError::ZeroDuration("ttl"));
        }
        if self.operation.as_deref().is_some_and(str::is_empty) {
            return Err(KeyError::Scope("operation").into());
        }
        if self.min_key_len > MAX_KEY_LEN {
            return Err(KeyError::TooShort {
                len: MAX_KEY_LEN,
                min: self.min_key_len,
            }
            .into());
        }
        Ok(IdempotencyLayer {
            config: Arc::new(self.config()),
        })
    }
}
