//! RFC 9457 problem details.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// A problem+json response: `type`, `title`, `status`, `detail`.
pub(crate) fn problem<B: From<Bytes>>(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: &str,
) -> Response<B> {
    let body = serde_json::json!({
        "type": format!("urn:problem-type:counterfoil:idempotency:{kind}"),
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
