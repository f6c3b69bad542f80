//! The layer on a real axum router: status codes, problem bodies, replay,
//! in-flight handling, release on server errors, scoping and malformed input.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use counterfoil_idempotency::{
    Begin, BeginOptions, Clock, Error, Fingerprint, IdempotencyKey, IdempotencyLayer,
    IdempotencyScope, IdempotencyStore, InFlightPolicy, InMemoryIdempotencyStore, Lease,
    ManualClock, RecoveryPoint, StoredResponse,
};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tower::ServiceExt;

#[derive(Clone, Default)]
struct Counter(Arc<AtomicUsize>);

impl Counter {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn app(layer: IdempotencyLayer, calls: Counter, gate: Option<Arc<Semaphore>>) -> Router {
    let c2 = calls.clone();
    let payments = post(move |body: String| {
        let calls = calls.clone();
        let gate = gate.clone();
        async move {
            let n = calls.0.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(g) = gate {
                let _permit = g.acquire().await.expect("gate");
            }
            if body.contains("\"fail\"") {
                return (StatusCode::SERVICE_UNAVAILABLE, "psp down").into_response();
            }
            let mut resp = (
                StatusCode::CREATED,
                [
                    ("content-type", "application/json"),
                    ("x-internal", "not replayed"),
                ],
                format!("{{\"payment\":{n}}}"),
            )
                .into_response();
            resp.headers_mut().insert(
                "location",
                HeaderValue::from_str(&format!("/v1/payments/{n}")).expect("hv"),
            );
            resp
        }
    })
    .layer(layer.clone());
    let refunds = post(move |Path(id): Path<u64>| {
        let calls = c2.clone();
        async move {
            calls.0.fetch_add(1, Ordering::SeqCst);
            (StatusCode::CREATED, format!("refund of {id}"))
        }
    })
    .layer(layer);
    Router::new()
        .route("/v1/payments", payments)
        .route("/v1/payments/{id}/refunds", refunds)
        .layer(middleware::from_fn(
            |mut req: Request, next: Next| async move {
                // Stands in for API-key authentication.
                if let Some(t) = req
                    .headers()
                    .get("x-restaurant")
                    .and_then(|v| v.to_str().ok())
                {
                    let scope = IdempotencyScope::new(t, "api-key-1");
                    req.extensions_mut().insert(scope);
                }
                next.run(req).await
            },
        ))
}

fn store() -> Arc<InMemoryIdempotencyStore> {
    Arc::new(InMemoryIdempotencyStore::new())
}

fn layer(store: Arc<InMemoryIdempotencyStore>) -> IdempotencyLayer {
    IdempotencyLayer::builder(store)
        .route("/v1/payments")
        .build()
        .expect("layer")
}

fn req(key: Option<&[u8]>, body: &str) -> Request {
    let mut b =
        axum::http::Request::post("/v1/payments").header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header(
            "idempotency-key",
            HeaderValue::from_bytes(k).expect("header"),
        );
    }
    b.body(Body::from(body.to_owned())).expect("request")
}

async fn send(app: &Router, r: Request) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.clone().oneshot(r).await.expect("infallible");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn assert_problem(
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    body: &str,
    expected: StatusCode,
    kind: &str,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    let v: serde_json::Value = serde_json::from_str(body).expect("problem json");
    assert_eq!(v["status"], expected.as_u16());
    assert!(v["type"].as_str().expect("type").ends_with(kind), "{v}");
    assert!(v["title"].is_string() && v["detail"].is_string());
}

#[tokio::test]
async fn first_request_executes_and_repeat_replays() {
    let calls = Counter::default();
    let app = app(layer(store()), calls.clone(), None);
    let body = r#"{"amount":1250,"currency":"EUR"}"#;
    let (s1, h1, b1) = send(&app, req(Some(b"\"k-1\""), body)).await;
    assert_eq!(s1, StatusCode::CREATED);
    assert!(h1.get("idempotent-replayed").is_none());
    // Key order and whitespace do not make a different request; quoted and
    // bare keys are the same key.
    let (s2, h2, b2) = send(
        &app,
        req(Some(b"k-1"), r#"{ "currency": "EUR", "amount": 1250 }"#),
    )
    .await;
    assert_eq!((s2, b2.as_str()), (StatusCode::CREATED, b1.as_str()));
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(h2["content-type"], "application/json");
    assert_eq!(h2["location"], h1["location"]);
    assert!(
        h2.get("x-internal").is_none(),
        "only allow-listed headers are replayed"
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn missing_key_is_400_only_where_required() {
    let calls = Counter::default();
    let app = app(layer(store()), calls.clone(), None);
    let (s, h, b) = send(&app, req(None, "{}")).await;
    assert_problem(s, &h, &b, StatusCode::BAD_REQUEST, "key-missing");
    assert_eq!(calls.get(), 0);

    // PUT honours a key but does not require one.
    let calls = Counter::default();
    let handler = post(|| async { "x" }).put(|| async { "put ok" });
    let app2 = Router::new().route("/r", handler.layer(layer(store())));
    let r = axum::http::Request::put("/r")
        .body(Body::empty())
        .expect("req");
    let (s, _, b) = send(&app2, r).await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, "put ok"));
    assert_eq!(calls.get(), 0);
}

#[tokio::test]
async fn malformed_keys_are_400() {
    let calls = Counter::default();
    let app = app(layer(store()), calls.clone(), None);
    let long = vec![b'a'; 256];
    for bad in [
        &b"\"\""[..],
        b"\"unterminated",
        b"\"a\"b",
        b"a\tb",
        &[b'a', 0xff],
        &long,
    ] {
        let (s, h, b) = send(&app, req(Some(bad), "{}")).await;
        assert_problem(s, &h, &b, StatusCode::BAD_REQUEST, "key-malformed");
    }
    let mut twice = req(Some(b"k"), "{}");
    twice
        .headers_mut()
        .append("idempotency-key", HeaderValue::from_static("k2"));
    let (s, h, b) = send(&app, twice).await;
    assert_problem(s, &h, &b, StatusCode::BAD_REQUEST, "key-malformed");
    // 255 characters is fine.
    let ok = vec![b'a'; 255];
    assert_eq!(
        send(&app, req(Some(&ok), "{}")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_rejected_without_using_the_key() {
    let calls = Counter::default();
    let l = IdempotencyLayer::builder(store())
        .max_request_body(64)
        .build()
        .expect("layer");
    let app = app(l, calls.clone(), None);
    let (s, h, b) = send(&app, req(Some(b"k"), r#"{"amount": 12"#)).await;
    assert_problem(s, &h, &b, StatusCode::BAD_REQUEST, "body-malformed");
    let (s, h, b) = send(
        &app,
        req(Some(b"k"), &format!("{{\"x\":\"{}\"}}", "y".repeat(100))),
    )
    .await;
    assert_problem(s, &h, &b, StatusCode::PAYLOAD_TOO_LARGE, "body-too-large");
    assert_eq!(calls.get(), 0);
    // The key was not consumed.
    assert_eq!(
        send(&app, req(Some(b"k"), r#"{"amount":12}"#)).await.0,
        StatusCode::CREATED
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn reuse_with_another_body_or_resource_is_422() {
    let calls = Counter::default();
    let app = app(layer(store()), calls.clone(), None);
    assert_eq!(
        send(&app, req(Some(b"k"), r#"{"amount":1}"#)).await.0,
        StatusCode::CREATED
    );
    let (s, h, b) = send(&app, req(Some(b"k"), r#"{"amount":2}"#)).await;
    assert_problem(s, &h, &b, StatusCode::UNPROCESSABLE_ENTITY, "key-reused");

    // One route template, two resources: the path is part of the fingerprint.
    let l = IdempotencyLayer::builder(store())
        .route("/v1/payments/{id}/refunds")
        .build()
        .expect("layer");
    let app = app_refunds(l, calls.clone());
    let refund = |id: u32| {
        axum::http::Request::post(format!("/v1/payments/{id}/refunds"))
            .header("idempotency-key", "r-1")
            .body(Body::empty())
            .expect("req")
    };
    assert_eq!(send(&app, refund(1)).await.0, StatusCode::CREATED);
    let (s, h, b) = send(&app, refund(2)).await;
    assert_problem(s, &h, &b, StatusCode::UNPROCESSABLE_ENTITY, "key-reused");
}

fn app_refunds(layer: IdempotencyLayer, calls: Counter) -> Router {
    app(layer, calls, None)
}

#[tokio::test]
async fn in_flight_duplicate_gets_409_with_retry_after() {
    let calls = Counter::default();
    let gate = Arc::new(Semaphore::new(0));
    let app = app(layer(store()), calls.clone(), Some(gate.clone()));
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, req(Some(b"slow"), "{}")).await }
    });
    while calls.get() == 0 {
        tokio::task::yield_now().await;
    }
    let (s, h, b) = send(&app, req(Some(b"slow"), "{}")).await;
    assert_problem(s, &h, &b, StatusCode::CONFLICT, "in-flight");
    let retry: u64 = h["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=30).contains(&retry));
    gate.add_permits(1);
    assert_eq!(first.await.expect("task").0, StatusCode::CREATED);
    assert_eq!(
        send(&app, req(Some(b"slow"), "{}")).await.1["idempotent-replayed"],
        "true"
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn wait_policy_replays_once_the_original_finishes() {
    let calls = Counter::default();
    let gate = Arc::new(Semaphore::new(0));
    let l = IdempotencyLayer::builder(store())
        .in_flight(InFlightPolicy::Wait(Duration::from_secs(20)))
        .build()
        .expect("layer");
    let app = app(l, calls.clone(), Some(gate.clone()));
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, req(Some(b"w"), "{}")).await }
    });
    while calls.get() == 0 {
        tokio::task::yield_now().await;
    }
    let second = tokio::spawn({
        let app = app.clone();
        async move { send(&app, req(Some(b"w"), "{}")).await }
    });
    tokio::task::yield_now().await;
    gate.add_permits(1);
    let (s1, _, b1) = first.await.expect("task");
    let (s2, h2, b2) = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("bounded")
        .expect("task");
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(b1, b2);
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn server_errors_release_the_key() {
    let calls = Counter::default();
    let app = app(layer(store()), calls.clone(), None);
    let body = r#"{"mode":"fail"}"#;
    assert_eq!(
        send(&app, req(Some(b"e"), body)).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (s, h, _) = send(&app, req(Some(b"e"), body)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.get("idempotent-replayed").is_none());
    assert_eq!(calls.get(), 2, "a 5xx is retried, not replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_requests_execute_once() {
    let calls = Counter::default();
    let app = app(layer(store()), calls.clone(), None);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            send(&app, req(Some(b"same"), r#"{"amount":1250}"#)).await
        }));
    }
    let (mut created, mut replayed, mut conflict) = (0, 0, 0);
    for t in tasks {
        let (s, h, _) = t.await.expect("task");
        match (s, h.get("idempotent-replayed").is_some()) {
            (StatusCode::CREATED, false) => created += 1,
            (StatusCode::CREATED, true) => replayed += 1,
            (StatusCode::CONFLICT, _) => conflict += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(replayed + conflict, 63);
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn keys_are_scoped_by_tenant() {
    let calls = Counter::default();
    let app = app(layer(store()), calls.clone(), None);
    let for_tenant = |t: &'static str| {
        let mut r = req(Some(b"shared-key"), "{}");
        r.headers_mut()
            .insert("x-restaurant", HeaderValue::from_static(t));
        r
    };
    let (_, _, a) = send(&app, for_tenant("r-1")).await;
    let (_, h, b) = send(&app, for_tenant("r-2")).await;
    assert!(h.get("idempotent-replayed").is_none());
    assert_ne!(a, b);
    assert_eq!(calls.get(), 2);
    assert_eq!(send(&app, for_tenant("r-1")).await.2, a);
}

/// A store that always fails, to check the layer fails closed.
#[derive(Debug)]
struct Down;

#[async_trait]
impl IdempotencyStore for Down {
    async fn begin(
        &self,
        _: &IdempotencyKey,
        _: &Fingerprint,
        _: &BeginOptions,
    ) -> Result<Begin, Error> {
        Err(Error::Backend("connection refused".into()))
    }
    async fn checkpoint(&self, _: &mut Lease, _: &RecoveryPoint) -> Result<(), Error> {
        Err(Error::Backend("connection refused".into()))
    }
    async fn renew(&self, _: &mut Lease) -> Result<(), Error> {
        Err(Error::Backend("connection refused".into()))
    }
    async fn complete(&self, _: &Lease, _: &StoredResponse, _: Duration) -> Result<(), Error> {
        Err(Error::Backend("connection refused".into()))
    }
    async fn release(&self, _: &Lease) -> Result<(), Error> {
        Err(Error::Backend("connection refused".into()))
    }
    async fn reap_expired(&self, _: u32) -> Result<u64, Error> {
        Err(Error::Backend("connection refused".into()))
    }
}

#[tokio::test]
async fn store_outage_is_503_and_the_handler_does_not_run() {
    let calls = Counter::default();
    let l = IdempotencyLayer::builder(Arc::new(Down))
        .build()
        .expect("layer");
    let app = app(l, calls.clone(), None);
    let (s, h, b) = send(&app, req(Some(b"k"), "{}")).await;
    assert_problem(
        s,
        &h,
        &b,
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
    );
    assert!(h.contains_key("retry-after"));
    assert_eq!(calls.get(), 0);
}

#[tokio::test]
async fn oversized_responses_are_passed_through_and_replayed_without_body() {
    let l = IdempotencyLayer::builder(store())
        .max_response_body(4)
        .build()
        .expect("layer");
    let calls = Counter::default();
    let app = app(l, calls.clone(), None);
    let (s, _, b) = send(&app, req(Some(b"big"), "{}")).await;
    assert_eq!((s, b.as_str()), (StatusCode::CREATED, "{\"payment\":1}"));
    let (s, h, b) = send(&app, req(Some(b"big"), "{}")).await;
    assert_eq!((s, b.as_str()), (StatusCode::CREATED, ""));
    assert_eq!(h["idempotent-body-omitted"], "true");
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn non_json_bodies_are_fingerprinted_as_bytes() {
    let calls = Counter::default();
    let app = app(layer(store()), calls.clone(), None);
    let plain = |body: &'static str| {
        axum::http::Request::post("/v1/payments")
            .header("idempotency-key", "p")
            .header("content-type", "text/plain")
            .body(Body::from(body))
            .expect("req")
    };
    assert_eq!(send(&app, plain("not { json")).await.0, StatusCode::CREATED);
    assert_eq!(
        send(&app, plain("not { json")).await.1["idempotent-replayed"],
        "true"
    );
    assert_eq!(
        send(&app, plain("other")).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[test]
fn builder_rejects_bad_config() {
    assert!(
        IdempotencyLayer::builder(store())
            .lease(Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(
        IdempotencyLayer::builder(store())
            .ttl(Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(
        IdempotencyLayer::builder(store())
            .operation("")
            .build()
            .is_err()
    );
    assert!(
        IdempotencyLayer::builder(store())
            .min_key_len(300)
            .build()
            .is_err()
    );
    for every in [
        Duration::ZERO,
        Duration::from_secs(30),
        Duration::from_secs(31),
    ] {
        assert!(
            IdempotencyLayer::builder(store())
                .renew_every(every)
                .build()
                .is_err()
        );
    }
    assert!(
        IdempotencyLayer::builder(store())
            .renew_every(Duration::from_secs(10))
            .lease(Duration::from_secs(15))
            .build()
            .is_ok()
    );
}

/// Wall-clock time that follows Tokio's clock, so that paused Tokio time
/// drives both the layer's renewals and the store's leases.
#[derive(Debug)]
struct TokioClock(tokio::time::Instant);

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        1_700_000_000_000 + i64::try_from(self.0.elapsed().as_millis()).expect("ms")
    }
}

/// The in-memory store, counting renewals.
#[derive(Debug)]
struct Renewals(InMemoryIdempotencyStore, AtomicUsize);

impl Renewals {
    fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self(
            InMemoryIdempotencyStore::new().with_clock(clock),
            AtomicUsize::new(0),
        ))
    }

    fn count(&self) -> usize {
        self.1.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl IdempotencyStore for Renewals {
    async fn begin(
        &self,
        k: &IdempotencyKey,
        fp: &Fingerprint,
        o: &BeginOptions,
    ) -> Result<Begin, Error> {
        self.0.begin(k, fp, o).await
    }
    async fn checkpoint(&self, l: &mut Lease, p: &RecoveryPoint) -> Result<(), Error> {
        self.0.checkpoint(l, p).await
    }
    async fn renew(&self, l: &mut Lease) -> Result<(), Error> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.renew(l).await
    }
    async fn complete(&self, l: &Lease, r: &StoredResponse, ttl: Duration) -> Result<(), Error> {
        self.0.complete(l, r, ttl).await
    }
    async fn release(&self, l: &Lease) -> Result<(), Error> {
        self.0.release(l).await
    }
    async fn reap_expired(&self, batch: u32) -> Result<u64, Error> {
        self.0.reap_expired(batch).await
    }
}

/// A handler that takes 10 s (of Tokio time), behind a 3 s lease on `store`,
/// renewed (every second) or not.
fn slow_app(store: Arc<Renewals>, renew: bool, calls: Counter) -> Router {
    let mut builder = IdempotencyLayer::builder(store).lease(Duration::from_secs(3));
    if !renew {
        builder = builder.without_renewal();
    }
    let layer = builder.build().expect("layer");
    let handler = post(move || {
        let calls = calls.clone();
        async move {
            let n = calls.0.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_secs(10)).await;
            (StatusCode::CREATED, format!("payment {n}"))
        }
    });
    Router::new().route("/v1/payments", handler.layer(layer))
}

fn spawn_send(app: &Router, key: &'static [u8]) -> tokio::task::JoinHandle<(StatusCode, String)> {
    let app = app.clone();
    tokio::spawn(async move {
        let (s, _, b) = send(&app, req(Some(key), "{}")).await;
        (s, b)
    })
}

/// A handler running longer than its 3 s lease keeps the key: the lease is
/// renewed every second while it runs, and no longer once it finished.
#[tokio::test(start_paused = true)]
async fn a_renewed_lease_outlives_a_slow_handler() {
    let store = Renewals::new(Arc::new(TokioClock(tokio::time::Instant::now())));
    let calls = Counter::default();
    let app = slow_app(store.clone(), true, calls.clone());
    let first = spawn_send(&app, b"slow");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (s, h, b) = send(&app, req(Some(b"slow"), "{}")).await;
    assert_problem(s, &h, &b, StatusCode::CONFLICT, "in-flight");
    let (s, b) = first.await.expect("task");
    assert_eq!((s, b.as_str()), (StatusCode::CREATED, "payment 1"));
    assert_eq!(calls.get(), 1);
    // Renewed at 1 s, 2 s, ... 9 s; the handler finished at 10 s.
    assert_eq!(store.count(), 9);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(store.count(), 9, "no renewal after the request");
    let (s, h, b) = send(&app, req(Some(b"slow"), "{}")).await;
    assert_eq!((s, b.as_str()), (StatusCode::CREATED, "payment 1"));
    assert_eq!(h["idempotent-replayed"], "true");
}

/// The same handler without renewal: after 3 s a duplicate takes the key
/// over and runs the handler again; the first response is not stored.
#[tokio::test(start_paused = true)]
async fn without_renewal_a_slow_handler_is_taken_over() {
    let store = Renewals::new(Arc::new(TokioClock(tokio::time::Instant::now())));
    let calls = Counter::default();
    let app = slow_app(store.clone(), false, calls.clone());
    let first = spawn_send(&app, b"slow");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (s, _, b) = send(&app, req(Some(b"slow"), "{}")).await;
    assert_eq!((s, b.as_str()), (StatusCode::CREATED, "payment 2"));
    assert_eq!(first.await.expect("task").1, "payment 1");
    assert_eq!(calls.get(), 2);
    assert_eq!(store.count(), 0);
    let (_, _, b) = send(&app, req(Some(b"slow"), "{}")).await;
    assert_eq!(b, "payment 2");
}

/// A renewal that finds the key taken over (here: the store's clock jumped
/// past the lease) stops renewing; the handler still finishes and answers,
/// and only the new holder's response is stored.
#[tokio::test(start_paused = true)]
async fn a_lost_lease_stops_renewal_and_the_handler_finishes() {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = Renewals::new(Arc::new(clock.clone()));
    let calls = Counter::default();
    let app = slow_app(store.clone(), true, calls.clone());
    let first = spawn_send(&app, b"slow");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(store.count(), 1);
    clock.advance(Duration::from_secs(10));
    let second = spawn_send(&app, b"slow");
    let (s, b) = first.await.expect("task");
    assert_eq!((s, b.as_str()), (StatusCode::CREATED, "payment 1"));
    assert_eq!(second.await.expect("task").1, "payment 2");
    assert_eq!(calls.get(), 2);
    let (_, _, b) = send(&app, req(Some(b"slow"), "{}")).await;
    assert_eq!(b, "payment 2");
}

#[tokio::test]
async fn min_key_length_is_enforced() {
    let l = IdempotencyLayer::builder(store())
        .min_key_len(16)
        .build()
        .expect("layer");
    let app = app(l, Counter::default(), None);
    let (s, h, b) = send(&app, req(Some(b"short"), "{}")).await;
    assert_problem(s, &h, &b, StatusCode::BAD_REQUEST, "key-malformed");
    let _: Response = Response::new(Body::empty());
}

#[tokio::test]
async fn problem_type_base_is_configurable() {
    // Default base.
    let plain = app(layer(store()), Counter::default(), None);
    let (_, _, b) = send(&plain, req(None, "{}")).await;
    let v: serde_json::Value = serde_json::from_str(&b).expect("problem json");
    assert_eq!(
        v["type"],
        "urn:problem-type:counterfoil:idempotency:key-missing"
    );

    // A custom base, on every kind of problem.
    let custom = IdempotencyLayer::builder(store())
        .route("/v1/payments")
        .problem_type_base("https://errors.example.com/idempotency/")
        .build()
        .expect("layer");
    let with_base = app(custom, Counter::default(), None);
    let (s, h, b) = send(&with_base, req(None, "{}")).await;
    assert_problem(s, &h, &b, StatusCode::BAD_REQUEST, "key-missing");
    let v: serde_json::Value = serde_json::from_str(&b).expect("problem json");
    assert_eq!(
        v["type"],
        "https://errors.example.com/idempotency/key-missing"
    );
    let (_, _, b) = send(&with_base, req(Some(b"k"), "{\"a\":")).await;
    let v: serde_json::Value = serde_json::from_str(&b).expect("problem json");
    assert_eq!(
        v["type"],
        "https://errors.example.com/idempotency/body-malformed"
    );
    send(&with_base, req(Some(b"k2"), "{\"a\":1}")).await;
    let (s, _, b) = send(&with_base, req(Some(b"k2"), "{\"a\":2}")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let v: serde_json::Value = serde_json::from_str(&b).expect("problem json");
    assert_eq!(
        v["type"],
        "https://errors.example.com/idempotency/key-reused"
    );
}
