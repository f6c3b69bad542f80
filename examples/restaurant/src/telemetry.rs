//! Observability: JSON logs, a correlation id and W3C trace context on every
//! request (carried on to the provider and into print jobs), Prometheus
//! metrics, and (with `--otlp-endpoint`) trace spans exported over OTLP/HTTP.
//! Libraries only emit `tracing` and `metrics`; this is the one place that
//! installs subscribers and exporters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};

/// Set once the OTLP layer is installed; until then the request middleware
/// does no OpenTelemetry work at all.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The OTLP trace pipeline, when `--otlp-endpoint` is set. Spans are
/// batched on the tokio runtime; [`Otlp::shutdown`] sends what is buffered.
#[derive(Debug)]
pub(crate) struct Otlp {
    provider: SdkTracerProvider,
}

impl Otlp {
    /// Flushes the buffered spans and stops the exporter, waiting at most
    /// `within` (a collector that does not answer must not hold up the
    /// shutdown). Call it while the runtime still runs, outside of it.
    pub(crate) fn shutdown(self, within: Duration) {
        EXPORTING.store(false, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        let provider = self.provider;
        let spawned = std::thread::Builder::new()
            .name("otlp-shutdown".into())
            .spawn(move || {
                let _ = tx.send(provider.shutdown());
            });
        if spawned.is_err() {
            tracing::warn!("cannot flush the OTLP exporter: no thread");
            return;
        }
        match rx.recv_timeout(within) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "OTLP exporter shutdown"),
            Err(_) => tracing::warn!(?within, "OTLP exporter did not flush in time"),
        }
    }
}

/// Installs the log subscriber (JSON by default) and, with
/// `--otlp-endpoint`, the layer that exports spans. With an endpoint it
/// must be called inside the tokio runtime (the batch exporter runs on it).
pub(crate) fn init_logging(config: &Config) -> Result<Option<Otlp>, String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let Some(endpoint) = &config.otlp_endpoint else {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match config.log_format {
            LogFormat::Json => builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .try_init(),
            LogFormat::Text => builder.try_init(),
        };
        return Ok(None);
    };
    // With export, logs and spans are filtered apart: `--log warn` still
    // exports the request spans.
    let otlp_filter = tracing_subscriber::EnvFilter::try_new(&config.otlp_filter)
        .map_err(|e| format!("--otlp-filter `{}`: {e}", config.otlp_filter))?;
    let provider = otlp_provider(endpoint, config)?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match config.log_format {
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("restaurant"))
        .with_filter(otlp_filter);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(spans)
        .try_init();
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Some(Otlp { provider }))
}

/// The tracer provider: OTLP/HTTP protobuf to `<endpoint>/v1/traces`,
/// batched on the tokio runtime (the `OTEL_BSP_*` variables tune the batch,
/// `OTEL_EXPORTER_OTLP_TIMEOUT` the request, `OTEL_RESOURCE_ATTRIBUTES` adds
/// resource attributes).
fn otlp_provider(endpoint: &str, config: &Config) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let role = clap::ValueEnum::to_possible_value(&config.role)
        .map_or_else(|| "unknown".to_owned(), |v| v.get_name().to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.otlp_service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new("restaurant.role", role))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// Installs the Prometheus recorder; the handle renders `/metrics`.
pub(crate) fn init_metrics() -> Result<PrometheusHandle, String> {
    let handle = install_recorder()?;
    describe_metrics();
    Ok(handle)
}

/// The server's own metrics, with their help text (docs/operations.md says
/// what to alert on).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "http_requests_total",
        "HTTP requests by method, route and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route"
    );
    describe_counter!(
        "http_rate_limited_total",
        "Requests refused by the per-key rate limit"
    );
    describe_gauge!("payments", "Payments by status");
    describe_counter!(
        "sqlite_group_syncs_total",
        "Syncs of the SQLite write-ahead log made by group commit"
    );
    describe_counter!("payments_accepted_total", "New payments accepted");
    describe_counter!(
        "payments_replayed_total",
        "Payment requests answered from an earlier one with the same Idempotency-Key"
    );
    describe_counter!(
        "payments_transitions_total",
        "Payment status changes by new status"
    );
    // Recorded by counterfoil-saga.
    describe_gauge!(
        "saga_sagas",
        "Sagas by status: running, waiting, parked, completed, compensated, failed"
    );
    describe_counter!("saga_started_total", "Sagas started, by saga");
    describe_counter!(
        "saga_step_outcomes_total",
        "Saga step outcomes by saga, step and outcome"
    );
    describe_histogram!(
        "saga_step_duration_seconds",
        Unit::Seconds,
        "Time to run one saga step"
    );
    describe_counter!(
        "provider_in_doubt_total",
        "Provider calls whose outcome was unknown and had to be reconciled"
    );
    describe_counter!(
        "print_jobs_total",
        "Print jobs finished by printer and result"
    );
    describe_gauge!("printer_online", "1 when the printer answers, 0 when not");
    describe_counter!(
        "fiscal_jobs_total",
        "Fiscal device jobs finished by the printers' device actors, by printer, kind and outcome"
    );
    describe_histogram!(
        "fiscal_job_seconds",
        Unit::Seconds,
        "Time a fiscal device job took, by printer"
    );
    describe_gauge!("printer_queue_depth", "Print jobs waiting for the printer");
    describe_gauge!("print_jobs_backlog", "Print jobs queued for all agents");
    describe_gauge!(
        "print_jobs_oldest_age_seconds",
        Unit::Seconds,
        "Age of the oldest queued print job"
    );
    describe_gauge!("websocket_clients", "Open /v1/events WebSocket connections");
    // Recorded by counterfoil-outbox's relays.
    use counterfoil_outbox::metric_names as outbox;
    describe_gauge!(outbox::BACKLOG, "Outbox messages not yet delivered");
    describe_gauge!(
        outbox::OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest undelivered outbox message"
    );
    describe_gauge!(outbox::DEAD, "Outbox messages in the dead-letter table");
    describe_histogram!(
        outbox::PUBLISH_SECONDS,
        Unit::Seconds,
        "Time to publish a batch and get its confirms"
    );
    describe_histogram!(
        outbox::DELIVERY_LAG_SECONDS,
        Unit::Seconds,
        "Time from enqueue to confirmed delivery"
    );
    describe_histogram!(outbox::ATTEMPTS, "Attempts a message took to be delivered");
    describe_counter!(outbox::PUBLISHED, "Outbox messages delivered");
    describe_counter!(outbox::FAILED, "Failed outbox publish attempts");
    describe_counter!(
        outbox::DEAD_LETTERED,
        "Outbox messages moved to the dead-letter table"
    );
}

fn install_recorder() -> Result<PrometheusHandle, String> {
    let buckets = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// The trace context of one request.
#[derive(Debug, Clone)]
pub(crate) struct Trace {
    /// Correlation id: the caller's `X-Correlation-Id`, or a fresh one.
    pub(crate) correlation_id: String,
    /// The `traceparent` to send downstream: the caller's trace id with a
    /// span id of ours.
    pub(crate) traceparent: String,
}

pub(crate) const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::rng(), b.as_mut_slice());
    hex::encode(b)
}

/// Parses a W3C `traceparent` (version 00) and returns its trace id and
/// flags; `None` when malformed (then a new trace starts).
pub(crate) fn parse_traceparent(v: &str) -> Option<(&str, &str)> {
    let mut it = v.split('-');
    let (version, trace, parent, flags) = (it.next()?, it.next()?, it.next()?, it.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    if it.next().is_some()
        || version != "00"
        || !hex(trace, 32)
        || !hex(parent, 16)
        || !hex(flags, 2)
        || trace.bytes().all(|b| b == b'0')
        || parent.bytes().all(|b| b == b'0')
    {
        return None;
    }
    Some((trace, flags))
}

fn valid_correlation_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

/// Reads trace context headers for the OpenTelemetry propagator.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// The request span when spans are exported: a child of the caller's
/// `traceparent` (and `tracestate`) when given, else the root of a new
/// trace. Returns it with the `traceparent` to send downstream (the
/// exported span's own ids), or `None` when the span is not exported.
fn exported_span(
    headers: &HeaderMap,
    method: &str,
    route: &str,
    correlation_id: &str,
) -> Option<(tracing::Span, String)> {
    use opentelemetry::propagation::TextMapPropagator;

    let span = tracing::info_span!(
        "request",
        %method,
        %route,
        correlation_id = %correlation_id,
        trace_id = tracing::field::Empty,
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
    );
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract(&HeaderExtractor(headers));
    // No parent (or an invalid one) leaves the span a root.
    let _ = span.set_parent(parent);
    let cx = span.context();
    let ids = cx.span().span_context().clone();
    if !ids.is_valid() {
        return None;
    }
    span.record("trace_id", ids.trace_id().to_string().as_str());
    Some((span, format_traceparent(&ids)))
}

/// A W3C `traceparent` naming the span `ids`.
fn format_traceparent(ids: &opentelemetry::trace::SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        ids.trace_id(),
        ids.span_id(),
        ids.trace_flags().to_u8()
    )
}

/// One stored `traceparent` as a carrier for the propagator.
struct StoredTraceparent<'a>(&'a str);

impl opentelemetry::propagation::Extractor for StoredTraceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// When spans are exported, makes `span` (not yet entered) a child of the
/// span a stored `traceparent` names: how a saga run in any process, or a
/// print job on an agent, joins the trace of the request that started it.
/// A missing or malformed value leaves the span where it is.
pub(crate) fn join_trace(span: &tracing::Span, traceparent: Option<&str>) {
    use opentelemetry::propagation::TextMapPropagator;

    let Some(tp) = traceparent.filter(|_| EXPORTING.load(Ordering::Relaxed)) else {
        return;
    };
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract(&StoredTraceparent(tp));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// With spans exported, makes every run of a saga of `def` a child of the
/// request span its state names ([`join_trace`]); otherwise leaves `def`
/// as it is, so a saga's state is not decoded again for nothing.
pub(crate) fn traced<S: counterfoil_saga::SagaState>(
    def: counterfoil_saga::DefinitionBuilder<S>,
    traceparent: fn(&S) -> Option<&str>,
) -> counterfoil_saga::DefinitionBuilder<S> {
    if EXPORTING.load(Ordering::Relaxed) {
        def.on_span(move |span, state| join_trace(span, traceparent(state)))
    } else {
        def
    }
}

/// The `traceparent` to send on from where the code runs now: the current
/// exported span's, so the callee's spans hang under it, or `stored` when
/// spans are not exported.
pub(crate) fn traceparent_here(stored: Option<&str>) -> Option<String> {
    if EXPORTING.load(Ordering::Relaxed) {
        let cx = tracing::Span::current().context();
        let ids = cx.span().span_context().clone();
        if ids.is_valid() {
            return Some(format_traceparent(&ids));
        }
    }
    stored.map(str::to_owned)
}

/// Middleware: trace context, a span with the correlation id, request
/// metrics, and the ids echoed on the response.
pub(crate) async fn trace_layer(mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let correlation_id = headers
        .get(&CORRELATION_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_correlation_id(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let otel = if EXPORTING.load(Ordering::Relaxed) {
        exported_span(req.headers(), &method, &route, &correlation_id)
    } else {
        None
    };
    let exported = otel.is_some();
    let (span, traceparent) = otel.unwrap_or_else(|| {
        let (trace_id, flags) = req
            .headers()
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent)
            .map_or_else(
                || (random_hex(16), "01".to_owned()),
                |(t, f)| (t.to_owned(), f.to_owned()),
            );
        let traceparent = format!("00-{trace_id}-{}-{flags}", random_hex(8));
        let span = tracing::info_span!("request", %method, %route, correlation_id = %correlation_id, trace_id = %trace_id);
        (span, traceparent)
    });
    req.extensions_mut().insert(Trace {
        correlation_id: correlation_id.clone(),
        traceparent: traceparent.clone(),
    });
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let secs = started.elapsed().as_secs_f64();
    if exported {
        span.set_attribute("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.set_status(opentelemetry::trace::Status::error(""));
        }
    }
    span.in_scope(|| {
        if route != "/metrics" && !route.starts_with("/health") {
            tracing::info!(status, duration_ms = secs * 1000.0, "request");
        }
    });
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(secs);
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        resp.headers_mut().insert(CORRELATION_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(&traceparent) {
        resp.headers_mut().insert(TRACEPARENT, v);
    }
    resp
}

/// Refreshes the gauges that come from the database (payments per status,
/// print queue; the saga engine keeps its own `saga_sagas` gauge) every few seconds until `stop`.
pub(crate) async fn refresh_gauges(db: crate::db::Db, stop: tokio_util::sync::CancellationToken) {
    while !stop.is_cancelled() {
        if let Ok(counts) = crate::store::payments::count_by_status(&db).await {
            for s in crate::domain::PaymentStatus::ALL {
                let n = counts
                    .iter()
                    .find(|(k, _)| k == s.as_str())
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("payments", "status" => s.as_str()).set(n as f64);
            }
        }
        if let Ok(q) = crate::store::print_jobs::backlog(&db).await {
            metrics::gauge!("print_jobs_backlog").set(q.0 as f64);
            metrics::gauge!("print_jobs_oldest_age_seconds").set(q.1 as f64 / 1000.0);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_traceparent;

    #[test]
    fn traceparent_is_validated() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(ok),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "01"))
        );
        assert_eq!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(parse_traceparent("garbage"), None);
    }
}
