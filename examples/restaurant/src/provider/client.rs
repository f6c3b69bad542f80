//! [`PaymentProvider`] over HTTP (the simulator's API, shaped like a real
//! PSP's: `Idempotency-Key` on every write, lookup by key).

use std::time::Duration;

use async_trait::async_trait;

use super::{Operation, PaymentProvider, ProviderError, Request};

/// An HTTP payment provider client.
#[derive(Debug, Clone)]
pub(crate) struct HttpProvider {
    base: String,
    http: reqwest::Client,
}

impl HttpProvider {
    /// A client for the provider at `base` with a per-call `timeout`.
    pub(crate) fn new(base: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }
}

fn transport(e: reqwest::Error) -> ProviderError {
    // A refused connection never reached the provider; anything after the
    // request was sent may have taken effect.
    if e.is_connect() {
        ProviderError::Unavailable(e.to_string())
    } else {
        ProviderError::InDoubt(e.to_string())
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl PaymentProvider for HttpProvider {
    async fn execute(
        &self,
        key: &str,
        req: &Request,
        traceparent: Option<&str>,
    ) -> Result<Operation, ProviderError> {
        let mut call = self
            .http
            .post(format!("{}/v1/operations", self.base))
            .header("idempotency-key", key)
            .json(req);
        if let Some(tp) = traceparent {
            call = call.header("traceparent", tp);
        }
        let resp = call.send().await.map_err(transport)?;
        let status = resp.status();
        if status.is_success() || status.as_u16() == 402 {
            // 402: declined; the body is the recorded (declined) operation.
            return resp.json::<Operation>().await.map_err(transport);
        }
        let body = resp.text().await.unwrap_or_default();
        if status.is_server_error() {
            Err(ProviderError::Unavailable(format!("{status}: {body}")))
        } else {
            Err(ProviderError::Rejected(format!("{status}: {body}")))
        }
    }

    async fn lookup(&self, key: &str) -> Result<Option<Operation>, ProviderError> {
        let resp = self
            .http
            .get(format!("{}/v1/operations?key={}", self.base, encode(key)))
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(e.to_string()))?;
        match resp.status().as_u16() {
            200 => resp
                .json::<Operation>()
                .await
                .map(Some)
                .map_err(|e| ProviderError::Unavailable(e.to_string())),
            404 => Ok(None),
            s => Err(ProviderError::Unavailable(format!("lookup answered {s}"))),
        }
    }
}
