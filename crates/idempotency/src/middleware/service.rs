//! The service.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{LengthLimitError, Limited};
use tower_service::Service;

use super::context::{CompletedInTransaction, IdempotencyContext, IdempotencyScope, to_http};
use super::future::ResponseFuture;
use super::layer::Config;
use super::problem::{problem, with_retry_after};
use super::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use crate::begin::Begin;
use crate::error::{BoxError, Error};
use crate::key::{IdempotencyKey, Scope, parse_header_value};
use crate::lease::Lease;
use crate::policy::{Disposition, InFlightPolicy};
use crate::response::StoredResponse;
use crate::store::IdempotencyStore;

/// [`IDEMPOTENCY_KEY`] as a header name, so that looking it up parses nothing.
static KEY_HEADER: HeaderName = HeaderName::from_static(IDEMPOTENCY_KEY);
/// [`IDEMPOTENT_REPLAYED`] as a header name.
static REPLAYED_HEADER: HeaderName = HeaderName::from_static(IDEMPOTENT_REPLAYED);

/// Makes the inner service idempotent per `Idempotency-Key`; see the
/// [module docs](super) for the answers it gives.
#[derive(Debug, Clone)]
pub struct IdempotencyService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> IdempotencyService<S> {
    pub(crate) fn from_parts(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn is_json(req_headers: &http::HeaderMap) -> bool {
    req_headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().as_bytes();
            let (app, json) = (b"application/", b"+json");
            m.eq_ignore_ascii_case(b"application/json")
                || (m.len() >= app.len() + json.len()
                    && m[..app.len()].eq_ignore_ascii_case(app)
                    && m[m.len() - json.len()..].eq_ignore_ascii_case(json))
        })
        .unwrap_or(false)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IdempotencyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + From<Bytes> + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        ResponseFuture {
            inner: Box::pin(handle(config, inner, req)),
        }
    }
}

async fn handle<S, ReqBody, ResBody>(
    config: Arc<Config>,
    mut inner: S,
    req: Request<ReqBody>,
) -> Result<Response<ResBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Body + From<Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + From<Bytes>,
    ResBody::Error: Into<BoxError>,
{
    if !config.methods.contains(req.method()) {
        return inner.call(req).await;
    }
    let mut values = req.headers().get_all(&KEY_HEADER).iter();
    let raw = match (values.next(), values.next()) {
        (None, _) if config.require_for.contains(req.method()) => {
            return Ok(problem(
                &config.problem_type_base,
                StatusCode::BAD_REQUEST,
                "key-missing",
                "Idempotency-Key is missing",
                &format!(
                    "{} requests to this resource need an Idempotency-Key header",
                    req.method()
                ),
            ));
        }
        (None, _) => return inner.call(req).await,
        (Some(_), Some(_)) => {
            return Ok(problem(
                &config.problem_type_base,
                StatusCode::BAD_REQUEST,
                "key-malformed",
                "Idempotency-Key is malformed",
                "the Idempotency-Key header appears more than once",
            ));
        }
        (Some(v), None) => parse_header_value(v.as_bytes(), config.min_key_len),
    };
    let client_key = match raw {
        Ok(k) => k,
        Err(e) => {
            return Ok(problem(
                &config.problem_type_base,
                StatusCode::BAD_REQUEST,
                "key-malformed",
                "Idempotency-Key is malformed",
                &e.to_string(),
            ));
        }
    };

    let (mut parts, body) = req.into_parts();
    let route = config.route.as_deref().unwrap_or(parts.uri.path());
    let operation = match &config.operation {
        Some(op) => op.clone(),
        None => {
            let method = parts.method.as_str();
            let mut op = String::with_capacity(method.len() + 1 + route.len());
            op.push_str(method);
            op.push(' ');
            op.push_str(route);
            op
        }
    };
    let (tenant, principal) = match parts.extensions.get::<IdempotencyScope>() {
        Some(who) => (who.tenant.clone(), who.principal.clone()),
        None => (String::new(), String::new()),
    };
    let key = match Scope::new(tenant, principal, operation)
        .and_then(|s| IdempotencyKey::new(s, client_key))
    {
        Ok(k) => k,
        Err(e) => {
            return Ok(problem(
                &config.problem_type_base,
                StatusCode::BAD_REQUEST,
                "key-malformed",
                "Idempotency-Key is malformed",
                &e.to_string(),
            ));
        }
    };

    let bytes = match read_body(Limited::new(body, config.max_request_body)).await {
        Ok(b) => b,
        Err(e) if e.is::<LengthLimitError>() => {
            return Ok(problem(
                &config.problem_type_base,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body is too large",
                &format!("at most {} bytes are accepted", config.max_request_body),
            ));
        }
        Err(e) => {
            return Ok(problem(
                &config.problem_type_base,
                StatusCode::BAD_REQUEST,
                "body-unreadable",
                "Request body could not be read",
                &e.to_string(),
            ));
        }
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    let method = parts.method.as_str();
    let fp = if is_json(&parts.headers) || bytes.is_empty() {
        match config.fingerprinter.request(method, route, target, &bytes) {
            Ok(fp) => fp,
            Err(e) => {
                return Ok(problem(
                    &config.problem_type_base,
                    StatusCode::BAD_REQUEST,
                    "body-malformed",
                    "Request body is not valid JSON",
                    &e.to_string(),
                ));
            }
        }
    } else {
        config
            .fingerprinter
            .request_raw(method, route, target, &bytes)
    };

    let store = &*config.store;
    let mut answer = store.begin(&key, &fp, &config.opts).await;
    if let (Ok(Begin::InFlight { retry_after }), InFlightPolicy::Wait(bound)) =
        (&answer, config.in_flight)
    {
        answer = crate::run::wait_for(store, &key, &fp, &config.opts, bound, *retry_after).await;
    }
    let lease = match answer {
        Ok(Begin::Execute(lease)) => lease,
        Ok(Begin::Replay(stored)) => {
            let mut resp = to_http::<ResBody>(&stored);
            resp.headers_mut()
                .insert(REPLAYED_HEADER.clone(), HeaderValue::from_static("true"));
            return Ok(resp);
        }
        Ok(Begin::InFlight { retry_after }) => {
            return Ok(with_retry_after(
                problem(
                    &config.problem_type_base,
                    StatusCode::CONFLICT,
                    "in-flight",
                    "A request with this Idempotency-Key is being processed",
                    "retry after the original request has finished",
                ),
                retry_after,
            ));
        }
        Ok(Begin::Mismatch) => {
            return Ok(problem(
                &config.problem_type_base,
                StatusCode::UNPROCESSABLE_ENTITY,
                "key-reused",
                "Idempotency-Key was used for a different request",
                "this key was first used with a different method, path or body",
            ));
        }
        Err(e) => return Ok(unavailable(&config.problem_type_base, &e)),
    };

    parts.extensions.insert(IdempotencyContext {
        lease: lease.clone(),
        ttl: config.opts.ttl,
    });
    let req = Request::from_parts(parts, ReqBody::from(bytes));
    let resp = match renewing(&config, &lease, inner.call(req)).await {
        Ok(r) => r,
        Err(e) => {
            release(&config, &lease).await;
            return Err(e);
        }
    };
    if resp.extensions().get::<CompletedInTransaction>().is_some() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    if config.responses.disposition(status) == Disposition::Release {
        release(&config, &lease).await;
        return Ok(resp);
    }
    let (parts, body) = resp.into_parts();
    let collected = renewing(&config, &lease, read_body(body))
        .await
        .map_err(|e| Into::<BoxError>::into(e).to_string());
    let bytes = match collected {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(key = %lease.key(), error = %e, "response body failed; releasing idempotency key");
            release(&config, &lease).await;
            return Ok(problem(
                &config.problem_type_base,
                StatusCode::INTERNAL_SERVER_ERROR,
                "response-failed",
                "The response could not be produced",
                "retry with the same Idempotency-Key",
            ));
        }
    };
    let mut stored = StoredResponse {
        status,
        headers: Vec::new(),
        body: bytes.clone(),
    };
    for name in &config.replay_headers {
        for v in parts.headers.get_all(name) {
            stored
                .headers
                .push((name.as_str().to_owned(), v.as_bytes().to_vec()));
        }
    }
    if bytes.len() > config.max_response_body {
        stored.body = Bytes::new();
        stored
            .headers
            .push(("idempotent-body-omitted".to_owned(), b"true".to_vec()));
    }
    match store.complete(&lease, &stored, config.opts.ttl).await {
        Ok(()) => {}
        Err(Error::LeaseLost) => {
            tracing::warn!(key = %lease.key(), "idempotency lease lost before completion; response not stored");
        }
        Err(e) => {
            tracing::error!(key = %lease.key(), error = %e, "could not store idempotent response");
        }
    }
    Ok(Response::from_parts(parts, ResBody::from(bytes)))
}

/// Reads a whole body into one buffer, as `collect().to_bytes()` does
/// (trailers are dropped), without its queue of frames: a body of a single
/// data frame (the usual case) is handed over without a copy.
async fn read_body<B: Body>(body: B) -> Result<Bytes, B::Error> {
    let mut body = pin!(body);
    let mut first = Bytes::new();
    let mut more: Option<BytesMut> = None;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let Ok(mut data) = frame?.into_data() else {
            continue;
        };
        let chunk = data.copy_to_bytes(data.remaining());
        if chunk.is_empty() {
            continue;
        }
        if let Some(m) = &mut more {
            m.extend_from_slice(&chunk);
        } else if first.is_empty() {
            first = chunk;
        } else {
            let mut m = BytesMut::with_capacity(first.len() + chunk.len());
            m.extend_from_slice(&first);
            m.extend_from_slice(&chunk);
            more = Some(m);
        }
    }
    Ok(more.map_or(first, BytesMut::freeze))
}

/// Runs `work` and, while it runs, renews `lease` every
/// `config.renew_every`, in the same task; stops when `work` finishes.
///
/// `work` is polled first, so work that finishes at once neither allocates
/// the heartbeat nor arms its timer.
async fn renewing<F: Future>(config: &Config, lease: &Lease, work: F) -> F::Output {
    let Some(every) = config.renew_every else {
        return work.await;
    };
    let mut work = pin!(work);
    // Made (boxed, off the fast path) once `work` first returns `Pending`.
    let mut beat = None;
    let mut beating = true;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if beating {
            let b = beat.get_or_insert_with(|| Box::pin(heartbeat(&*config.store, lease, every)));
            if b.as_mut().poll(cx).is_ready() {
                beating = false;
                beat = None;
            }
        }
        Poll::Pending
    })
    .await
}

/// Renews a copy of `lease` every `every` until the key is lost.
async fn heartbeat(store: &dyn IdempotencyStore, lease: &Lease, every: Duration) {
    let mut next = tokio::time::Instant::now() + every;
    let mut held: Option<Lease> = None;
    loop {
        tokio::time::sleep_until(next).await;
        next = tokio::time::Instant::now() + every;
        let held = held.get_or_insert_with(|| lease.clone());
        match store.renew(held).await {
            Ok(()) => {}
            Err(Error::LeaseLost) => {
                tracing::warn!(key = %lease.key(), "idempotency lease lost while the request ran; its response will not be stored");
                return;
            }
            Err(e) => {
                tracing::warn!(key = %lease.key(), error = %e, "could not renew idempotency lease; retrying");
            }
        }
    }
}

async fn release(config: &Config, lease: &Lease) {
    if let Err(e) = config.store.release(lease).await {
        tracing::warn!(key = %lease.key(), error = %e, "could not release idempotency key");
    }
}

fn unavailable<B: From<Bytes>>(base: &str, e: &Error) -> Response<B> {
    tracing::error!(error = %e, "idempotency store failed");
    with_retry_after(
        problem(
            base,
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Idempotency store unavailable",
            "the request was not processed; retry with the same Idempotency-Key",
        ),
        Duration::from_secs(1),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;

    use http::HeaderMap;
    use http_body::Frame;

    use super::*;

    /// A body made of the given frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn read(frames: Vec<Frame<Bytes>>) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        match rt.block_on(read_body(Frames(frames.into()))) {
            Ok(b) => b,
            Err(e) => match e {},
        }
    }

    #[test]
    fn read_body_joins_frames_and_drops_trailers() {
        let data = |s: &'static str| Frame::data(Bytes::from_static(s.as_bytes()));
        assert_eq!(read(vec![]), Bytes::new());
        assert_eq!(read(vec![data("")]), Bytes::new());
        let one = Bytes::from_static(b"{\"a\":1}");
        let got = read(vec![Frame::data(one.clone())]);
        assert_eq!(got, one);
        // A single frame is handed over, not copied.
        assert_eq!(got.as_ptr(), one.as_ptr());
        assert_eq!(
            read(vec![
                data("ab"),
                data(""),
                data("cd"),
                Frame::trailers(HeaderMap::new()),
                data("e"),
            ]),
            Bytes::from_static(b"abcde")
        );
    }
}
