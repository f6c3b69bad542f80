//! RFC 9457 problem details.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// The default base of the problem `type` URIs; the problem's kind follows it.
pub(crate) const DEFAULT_TYPE_BASE: &str = "urn:problem-type:counterfoil:idempotency:";

/// A problem+json response: `type` (`base` then `kind`), `title`, `status`, `detail`.
pub(crate) fn problem<B: From<Bytes>>(
    base: &str,
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: &str,
) -> Response<B> {
    let body = serde_json::json!({
        "type": format!("{base}{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = Response::new(B::from(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

/// Adds `Retry-After` in whole seconds, rounded up, at least 1.
pub(crate) fn with_retry_after<B>(mut resp: Response<B>, after: Duration) -> Response<B> {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}
