//! HTTP calls to the server, spread over every `serve` instance, with
//! bounded retries that reuse the request's Idempotency-Key (exactly what a
//! till does when a reply is lost).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::stats::Counters;

/// The server's HTTP API.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    counters: Arc<Counters>,
}

/// A call's answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

/// How long one call may keep retrying.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Patience {
    pub(crate) attempts: u32,
    pub(crate) total: Duration,
}

impl Patience {
    /// Long enough to outlast an idempotency key's lease left behind by a
    /// killed `serve` process (15 s in the server, renewed while a request
    /// runs), with a wide margin for restarts under chaos.
    pub(crate) const DEFAULT: Patience = Patience {
        attempts: 300,
        total: Duration::from_secs(240),
    };
}

impl Api {
    pub(crate) fn new(bases: Vec<String>, counters: Arc<Counters>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        if bases.is_empty() {
            return Err("no server address".into());
        }
        Ok(Self {
            http,
            bases: Arc::new(
                bases
                    .into_iter()
                    .map(|b| b.trim_end_matches('/').to_owned())
                    .collect(),
            ),
            next: Arc::default(),
            counters,
        })
    }

    pub(crate) fn bases(&self) -> Vec<String> {
        self.bases.to_vec()
    }

    fn base(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.bases[i % self.bases.len()]
    }

    /// One attempt.
    pub(crate) async fn once(
        &self,
        method: reqwest::Method,
        key: &str,
        path: &str,
        idem: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base()))
            .bearer_auth(key);
        if let Some(k) = idem {
            req = req.header("idempotency-key", k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Calls until an answer that is not a transport error, a 5xx, a 408, a
    /// 429 or a 409 "in flight" (the original request with the same key is
    /// still being processed, or its holder died and its lease has not yet
    /// lapsed), within `patience`. The same Idempotency-Key is sent each time.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        key: &str,
        path: &str,
        idem: Option<&str>,
        body: Option<&Value>,
        patience: Patience,
    ) -> Result<Answer, String> {
        let started = Instant::now();
        let mut last = String::new();
        for attempt in 1..=patience.attempts {
            if attempt > 1 {
                Counters::inc(&self.counters.http_retries);
            }
            match self.once(method.clone(), key, path, idem, body).await {
                Ok((status, body))
                    if !(status >= 500
                        || status == 408
                        || status == 429
                        || in_flight(status, &body)) =>
                {
                    return Ok(Answer { status, body });
                }
                Ok((status, body)) => last = format!("{status}: {body}"),
                Err(e) => last = e,
            }
            if started.elapsed() >= patience.total {
                break;
            }
            let backoff = Duration::from_millis((50_u64 << attempt.min(5)).min(1_000));
            tokio::time::sleep(backoff).await;
        }
        Err(format!("gave up after {:?}: {last}", started.elapsed()))
    }
}

/// Whether an answer is the idempotency layer's 409 for a request whose key
/// is held by another request still in flight: a till retries it with the
/// same key.
fn in_flight(status: u16, body: &Value) -> bool {
    status == 409
        && body
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with(":in-flight") || t.ends_with("/in-flight"))
}
