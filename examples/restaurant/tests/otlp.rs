//! OTLP trace export (`--otlp-endpoint`): the server process sends its
//! request spans to a small OTLP/HTTP receiver run by the test, joined to
//! the caller's `traceparent`; without the flag it sends nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use parking_lot::Mutex;
use prost::Message;

/// What the receiver got: one protobuf body per `POST /v1/traces`, and a
/// signal as each arrives.
#[derive(Clone, Default)]
struct Bodies {
    got: Arc<Mutex<Vec<Bytes>>>,
    arrived: Arc<tokio::sync::Notify>,
}

impl Bodies {
    fn is_empty(&self) -> bool {
        self.got.lock().is_empty()
    }

    /// Waits (at most `secs`) until `found` picks something out of the
    /// spans received so far, checking again as each body arrives.
    async fn until<T>(
        &self,
        secs: u64,
        mut found: impl FnMut(Vec<Exported>) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            // Registered before looking, so a body arriving meanwhile wakes us.
            arrived.as_mut().enable();
            if let Some(t) = found(spans(self)) {
                return Some(t);
            }
            tokio::time::timeout_at(deadline, arrived).await.ok()?;
        }
    }
}

/// Starts an OTLP/HTTP receiver on a free loopback port.
async fn receiver() -> (String, Bodies) {
    let bodies = Bodies::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(|State(b): State<Bodies>, body: Bytes| async move {
                b.got.lock().push(body);
                b.arrived.notify_waiters();
                // An empty ExportTraceServiceResponse.
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }),
        )
        .with_state(bodies.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), bodies)
}

/// An exported span with its resource's `service.name`.
#[derive(Debug)]
struct Exported {
    service: String,
    span: Span,
}

/// Every span in the bodies received so far.
fn spans(bodies: &Bodies) -> Vec<Exported> {
    let mut out = Vec::new();
    for body in bodies.got.lock().iter() {
        let req = ExportTraceServiceRequest::decode(body.as_ref()).expect("an OTLP protobuf body");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.clone())
                .map(|v| match v {
                    Value::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push(Exported {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }
    out
}

/// Waits (at most `secs`) for the request span of trace `trace_id`.
async fn wait_for(bodies: &Bodies, trace_id: &[u8], secs: u64) -> Option<Exported> {
    bodies
        .until(secs, |all| {
            all.into_iter()
                .find(|e| e.span.trace_id == trace_id && e.span.kind == SpanKind::Server as i32)
        })
        .await
}

/// A fresh caller trace: `(traceparent, trace id bytes, parent span id bytes)`.
fn caller_trace() -> (String, Vec<u8>, Vec<u8>) {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let parent = &uuid::Uuid::new_v4().simple().to_string()[..16];
    (
        format!("00-{trace}-{parent}-01"),
        hex::decode(&trace).unwrap(),
        hex::decode(parent).unwrap(),
    )
}

/// Sends `GET /health/ready` with `traceparent`; returns the response's.
async fn ready(s: &Server, traceparent: &str) -> String {
    let resp = s
        .http
        .get(s.url("/health/ready"))
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.headers()["traceparent"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn request_spans_are_exported_and_join_the_callers_trace() {
    let (url, bodies) = receiver().await;
    let service = format!("restaurant-otlp-{}", uuid::Uuid::new_v4().simple());
    let dir = temp_dir("otlp");
    let s = spawn(
        &dir,
        &["--otlp-endpoint", &url, "--otlp-service-name", &service],
        &[("OTEL_BSP_SCHEDULE_DELAY", "200")],
        true,
    );
    let (traceparent, trace_id, parent_id) = caller_trace();
    let downstream = ready(&s, &traceparent).await;

    let e = wait_for(&bodies, &trace_id, 20)
        .await
        .expect("the request span was exported in the caller's trace");
    assert_eq!(e.service, service);
    assert_eq!(e.span.name, "GET /health/ready");
    assert_eq!(
        e.span.parent_span_id, parent_id,
        "a child of the caller's span"
    );
    let status = e
        .span
        .attributes
        .iter()
        .find(|a| a.key == "http.response.status_code")
        .and_then(|a| a.value.as_ref()?.value.clone());
    assert_eq!(
        status,
        Some(Value::IntValue(200)),
        "{:?}",
        e.span.attributes
    );
    // The traceparent sent downstream is the exported span's.
    let parts: Vec<&str> = downstream.split('-').collect();
    assert_eq!(parts.len(), 4, "{downstream}");
    assert_eq!(hex::decode(parts[1]).unwrap(), trace_id, "{downstream}");
    assert_eq!(
        hex::decode(parts[2]).unwrap(),
        e.span.span_id,
        "{downstream}"
    );
    assert_eq!(parts[3], "01", "{downstream}");
}

#[tokio::test]
async fn buffered_spans_are_flushed_on_shutdown() {
    let (url, bodies) = receiver().await;
    let dir = temp_dir("otlp-flush");
    // A batch delay far beyond the test: only the shutdown sends the span.
    let mut s = spawn(
        &dir,
        &["--otlp-endpoint", &url],
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
        true,
    );
    let (traceparent, trace_id, _) = caller_trace();
    ready(&s, &traceparent).await;
    assert_eq!(s.terminate(Duration::from_secs(30)), Some(0), "clean exit");
    let e = wait_for(&bodies, &trace_id, 5)
        .await
        .expect("the span was sent before the process exited");
    assert_eq!(e.service, "restaurant", "the default service.name");
}

#[tokio::test]
async fn nothing_is_sent_without_the_flag() {
    let (url, bodies) = receiver().await;
    let dir = temp_dir("otlp-off");
    // The standard OpenTelemetry variables alone do not turn export on.
    let mut s = spawn(
        &dir,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
        true,
    );
    let (traceparent, trace_id, _) = caller_trace();
    let downstream = ready(&s, &traceparent).await;
    // The trace id still travels on, as before.
    assert_eq!(
        hex::decode(downstream.split('-').nth(1).unwrap()).unwrap(),
        trace_id
    );
    assert_eq!(s.terminate(Duration::from_secs(30)), Some(0), "clean exit");
    assert!(bodies.is_empty(), "nothing was exported");
}

/// The value of string attribute `key` of `span`.
fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

#[tokio::test]
async fn a_payment_is_one_trace_from_the_request_through_its_saga_to_the_printed_receipt() {
    let (url, bodies) = receiver().await;
    let dir = temp_dir("otlp-saga");
    let s = spawn(
        &dir,
        &["--otlp-endpoint", &url],
        &[("OTEL_BSP_SCHEDULE_DELAY", "200")],
        true,
    );
    let (traceparent, trace_id, parent_id) = caller_trace();
    let (status, p) = s
        .post(
            KEY1,
            "/v1/payments",
            &order("demo-1", "demo-1-p1", 2500),
            &[
                ("idempotency-key", "traced-1"),
                ("prefer", "wait=20"),
                ("traceparent", &traceparent),
            ],
        )
        .await;
    assert!(status == 200 || status == 202, "{status}: {p}");
    let id = p["id"].as_str().unwrap().to_owned();
    s.wait_payment(KEY1, &id, 30, |p| p["status"] == "fiscalized")
        .await;

    // The request span, the saga's runs and steps, and the agent's print
    // job: all in the caller's trace, each under the one that caused it.
    let in_trace = |all: Vec<Exported>| -> Vec<Span> {
        all.into_iter()
            .map(|e| e.span)
            .filter(|s| s.trace_id == trace_id)
            .collect()
    };
    let complete = |mine: &[Span]| {
        let steps: Vec<String> = mine
            .iter()
            .filter(|s| s.name == "saga_step")
            .filter_map(|s| attr(s, "step"))
            .collect();
        ["authorize", "capture", "fiscalize", "notify"]
            .iter()
            .all(|n| steps.iter().any(|s| s == n))
            && mine.iter().any(|s| s.name == "print")
    };
    let Some(mine) = bodies
        .until(20, |all| Some(in_trace(all)).filter(|m| complete(m)))
        .await
    else {
        panic!(
            "not all spans of the payment arrived in its trace: {:?}",
            in_trace(spans(&bodies))
                .iter()
                .map(|s| &s.name)
                .collect::<Vec<_>>()
        );
    };
    let by_id = |id: &[u8]| mine.iter().find(|s| s.span_id == id);
    let request = mine
        .iter()
        .find(|s| s.name == "POST /v1/payments")
        .expect("the request span");
    assert_eq!(request.parent_span_id, parent_id, "a child of the caller");
    let runs: Vec<&Span> = mine.iter().filter(|s| s.name == "saga").collect();
    assert!(!runs.is_empty());
    for run in &runs {
        assert_eq!(
            run.parent_span_id, request.span_id,
            "each run of the saga is a child of the request that started it"
        );
        assert_eq!(attr(run, "saga").as_deref(), Some("payment"));
    }
    for step in mine.iter().filter(|s| s.name == "saga_step") {
        let parent = by_id(&step.parent_span_id).expect("a step's parent is in the trace");
        assert_eq!(parent.name, "saga", "a step is a child of its run");
    }
    // The provider was called from the step's span: its ledger records the
    // traceparent each operation came with.
    let ops: Vec<_> = s
        .ledger()
        .await
        .into_iter()
        .filter(|op| op["reference"] == id.as_str())
        .collect();
    assert_eq!(ops.len(), 2, "authorize and capture: {ops:?}");
    for op in &ops {
        let tp = op["traceparent"].as_str().expect("a traceparent");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(hex::decode(parts[1]).unwrap(), trace_id, "{tp}");
        let caller =
            by_id(&hex::decode(parts[2]).unwrap()).expect("the caller's span is in the trace");
        assert_eq!(caller.name, "saga_step", "{tp}");
        assert_eq!(attr(caller, "step").as_deref(), op["kind"].as_str(), "{tp}");
    }
    let print = mine.iter().find(|s| s.name == "print").unwrap();
    assert_eq!(attr(print, "printer").as_deref(), Some("demo-1-p1"));
    let parent = by_id(&print.parent_span_id).expect("the print job's parent is in the trace");
    assert_eq!(
        attr(parent, "step").as_deref(),
        Some("fiscalize"),
        "the print job is a child of the step that queued it"
    );
}
