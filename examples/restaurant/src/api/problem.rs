//! RFC 9457 problem details: every error the API returns is
//! `application/problem+json` with a stable `type`, a `title`, the HTTP
//! `status` and a `detail` for people. Internal errors never leak their
//! cause (it goes to the log with the correlation id instead).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A problem details object.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Problem {
    /// A URI reference naming the problem type.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) title: String,
    pub(crate) status: u16,
    pub(crate) detail: String,
    /// Seconds to wait before retrying (429, 503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retry_after: Option<u64>,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub(crate) fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail)
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no such {what}"),
        )
    }

    pub(crate) fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub(crate) fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the log has details under this request's correlation id",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut resp = (status, Json(self)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        Problem::internal()
    }
}

impl From<counterfoil_saga::Error> for Problem {
    fn from(e: counterfoil_saga::Error) -> Self {
        match e {
            counterfoil_saga::Error::NotFound(_) => Problem::not_found("saga"),
            e @ counterfoil_saga::Error::InvalidState { .. } => Problem::conflict(e.to_string()),
            other => {
                tracing::error!(error = %other, "saga engine error");
                Problem::internal()
            }
        }
    }
}

/// A JSON body whose rejections are problems (malformed JSON 400, wrong
/// shape 422, wrong content type 415, too large 413).
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => Problem::unprocessable(e.body_text()),
                JsonRejection::JsonSyntaxError(e) => Problem::bad_request(e.body_text()),
                JsonRejection::MissingJsonContentType(_) => Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "content-type",
                    "expected Content-Type: application/json",
                ),
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    Problem::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too-large",
                        "request body too large",
                    )
                }
                other => Problem::bad_request(other.body_text()),
            }),
        }
    }
}
