//! A payment provider simulator served over HTTP on loopback: its own
//! idempotency keys, a ledger of every operation, and faults on demand.
//!
//! API (all JSON):
//! - `POST /v1/operations` with `Idempotency-Key`: authorize, capture, void or
//!   refund. 200 with the operation, 402 when declined (also recorded), 409
//!   when the operation does not apply (capture of a voided authorization),
//!   422 when the key was used for a different request.
//! - `GET /v1/operations?key=K`: the operation made with key K, or 404.
//! - `GET /ledger`: every operation, oldest first (for the verifier).
//! - `PUT /faults`: the fault plan ([`Faults`]); `GET /faults` reads it.
//!
//! Deterministic declines: an authorization whose amount ends in `51` minor
//! units is declined ("insufficient funds", ISO 8583 code 51).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Operation, Request};
use crate::domain::now_ms;

/// Faults to inject. Counters apply to the next N calls.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Faults {
    /// Decline the next N authorizations.
    pub(crate) decline_next: u32,
    /// Apply the next N captures, then never answer (the client times out).
    pub(crate) timeout_after_capture_next: u32,
    /// Answer the next N calls with 500, doing nothing.
    pub(crate) error_5xx_next: u32,
    /// Delay every call by this many milliseconds.
    pub(crate) slow_ms: u64,
    /// Answer every call with 503 (provider down).
    pub(crate) down: bool,
}

#[derive(Debug, Default)]
struct Ledger {
    ops: Vec<Operation>,
    by_key: HashMap<String, (usize, String)>,
    faults: Faults,
}

/// A running simulator.
#[derive(Debug, Clone)]
pub(crate) struct Simulator {
    /// Its base URL, e.g. `http://127.0.0.1:41234`.
    pub(crate) url: String,
}

type Shared = Arc<Mutex<Ledger>>;

/// Starts the simulator on `listen` until `stop` is cancelled.
pub(crate) async fn start(
    listen: SocketAddr,
    stop: CancellationToken,
) -> std::io::Result<Simulator> {
    let ledger: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/operations", post(execute).get(lookup))
        .route("/ledger", get(ledger_all))
        .route("/faults", get(get_faults).put(put_faults))
        .with_state(ledger);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "provider simulator stopped");
        }
    });
    Ok(Simulator {
        url: format!("http://{addr}"),
    })
}

fn problem(status: StatusCode, detail: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "status": status.as_u16(), "detail": detail })),
    )
        .into_response()
}

enum Plan {
    Reply(Response),
    HangThenReply(Response),
}

async fn execute(
    State(ledger): State<Shared>,
    headers: HeaderMap,
    Json(req): Json<Request>,
) -> Response {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return problem(StatusCode::BAD_REQUEST, "Idempotency-Key required");
    };
    let slow = ledger.lock().faults.slow_ms;
    if slow > 0 {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    let plan = {
        let mut l = ledger.lock();
        let plan = apply(&mut l, &key, &req);
        // Which span called, as the first request for the key said.
        if let Some(tp) = traceparent
            && let Some(&(i, _)) = l.by_key.get(&key)
            && let Some(op) = l.ops.get_mut(i)
        {
            op.traceparent.get_or_insert_with(|| tp.to_owned());
        }
        plan
    };
    match plan {
        Plan::Reply(r) => r,
        Plan::HangThenReply(r) => {
            // The capture happened; the reply is "lost" (the client gives up
            // long before this).
            tokio::time::sleep(Duration::from_secs(300)).await;
            r
        }
    }
}

fn reply(op: &Operation) -> Response {
    let status = if op.approved() {
        StatusCode::OK
    } else {
        StatusCode::PAYMENT_REQUIRED
    };
    (status, Json(op.clone())).into_response()
}

fn apply(l: &mut Ledger, key: &str, req: &Request) -> Plan {
    if l.faults.down {
        return Plan::Reply(problem(StatusCode::SERVICE_UNAVAILABLE, "provider down"));
    }
    if l.faults.error_5xx_next > 0 {
        l.faults.error_5xx_next -= 1;
        return Plan::Reply(problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected failure",
        ));
    }
    let fingerprint = format!(
        "{}|{}|{}|{:?}|{}",
        req.kind, req.amount, req.currency, req.parent, req.reference
    );
    if let Some((i, fp)) = l.by_key.get(key) {
        if *fp != fingerprint {
            return Plan::Reply(problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency key reused for a different request",
            ));
        }
        return match l.ops.get(*i) {
            Some(op) => Plan::Reply(reply(op)),
            None => Plan::Reply(problem(StatusCode::INTERNAL_SERVER_ERROR, "ledger index")),
        };
    }
    if req.amount <= 0 {
        return Plan::Reply(problem(StatusCode::BAD_REQUEST, "amount must be positive"));
    }
    let parent = req
        .parent
        .as_deref()
        .and_then(|p| l.ops.iter().find(|o| o.id == p && o.approved()).cloned());
    let children = |kind: &str, parent: &str| -> i64 {
        l.ops
            .iter()
            .filter(|o| o.kind == kind && o.approved() && o.parent.as_deref() == Some(parent))
            .map(|o| o.amount)
            .sum()
    };
    let mut declined = None;
    match req.kind.as_str() {
        "authorize" => {
            if l.faults.decline_next > 0 {
                l.faults.decline_next -= 1;
                declined = Some("declined by the issuer");
            } else if req.amount % 100 == 51 {
                declined = Some("insufficient funds");
            }
        }
        "capture" | "void" => {
            let Some(auth) = parent.as_ref().filter(|p| p.kind == "authorize") else {
                return Plan::Reply(problem(StatusCode::CONFLICT, "no such authorization"));
            };
            if children("capture", &auth.id) > 0 || children("void", &auth.id) > 0 {
                return Plan::Reply(problem(
                    StatusCode::CONFLICT,
                    "authorization already settled",
                ));
            }
            if req.amount > auth.amount {
                return Plan::Reply(problem(
                    StatusCode::CONFLICT,
                    "amount over the authorization",
                ));
            }
        }
        "refund" => {
            let Some(cap) = parent.as_ref().filter(|p| p.kind == "capture") else {
                return Plan::Reply(problem(StatusCode::CONFLICT, "no such capture"));
            };
            if children("refund", &cap.id) + req.amount > cap.amount {
                return Plan::Reply(problem(
                    StatusCode::CONFLICT,
                    "refunds over the captured amount",
                ));
            }
        }
        _ => return Plan::Reply(problem(StatusCode::BAD_REQUEST, "unknown operation kind")),
    }
    let op = Operation {
        id: format!("{}_{}", &req.kind[..3], uuid::Uuid::now_v7().simple()),
        kind: req.kind.clone(),
        status: if declined.is_some() {
            "declined"
        } else {
            "approved"
        }
        .to_owned(),
        key: key.to_owned(),
        amount: req.amount,
        currency: req.currency.clone(),
        parent: req.parent.clone(),
        reference: req.reference.clone(),
        at: now_ms(),
        traceparent: None,
    };
    l.by_key.insert(key.to_owned(), (l.ops.len(), fingerprint));
    l.ops.push(op.clone());
    if op.kind == "capture" && l.faults.timeout_after_capture_next > 0 {
        l.faults.timeout_after_capture_next -= 1;
        return Plan::HangThenReply(reply(&op));
    }
    Plan::Reply(reply(&op))
}

#[derive(Debug, Deserialize)]
struct KeyQuery {
    key: String,
}

async fn lookup(State(ledger): State<Shared>, Query(q): Query<KeyQuery>) -> Response {
    let l = ledger.lock();
    if l.faults.down {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "provider down");
    }
    match l.by_key.get(&q.key).and_then(|(i, _)| l.ops.get(*i)) {
        Some(op) => Json(op.clone()).into_response(),
        None => problem(StatusCode::NOT_FOUND, "no operation with this key"),
    }
}

async fn ledger_all(State(ledger): State<Shared>) -> Json<Vec<Operation>> {
    Json(ledger.lock().ops.clone())
}

async fn get_faults(State(ledger): State<Shared>) -> Json<Faults> {
    Json(ledger.lock().faults.clone())
}

async fn put_faults(State(ledger): State<Shared>, Json(f): Json<Faults>) -> Json<Faults> {
    ledger.lock().faults = f.clone();
    Json(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: &str, amount: i64, parent: Option<&str>) -> Request {
        Request {
            kind: kind.into(),
            amount,
            currency: "EUR".into(),
            parent: parent.map(Into::into),
            reference: "p1".into(),
        }
    }

    fn op(plan: Plan) -> Operation {
        let (Plan::Reply(r) | Plan::HangThenReply(r)) = plan;
        assert!(
            r.status().is_success() || r.status() == StatusCode::PAYMENT_REQUIRED,
            "{}",
            r.status()
        );
        // Re-derive from the ledger instead of parsing the body.
        Operation {
            id: String::new(),
            kind: String::new(),
            status: if r.status().is_success() {
                "approved"
            } else {
                "declined"
            }
            .into(),
            key: String::new(),
            amount: 0,
            currency: String::new(),
            parent: None,
            reference: String::new(),
            at: 0,
            traceparent: None,
        }
    }

    #[test]
    fn same_key_replays_and_never_charges_twice() {
        let mut l = Ledger::default();
        assert!(op(apply(&mut l, "k1", &req("authorize", 1000, None))).approved());
        assert!(op(apply(&mut l, "k1", &req("authorize", 1000, None))).approved());
        assert_eq!(l.ops.len(), 1);
        let auth = l.ops[0].id.clone();
        assert!(op(apply(&mut l, "k2", &req("capture", 1000, Some(&auth)))).approved());
        // A second capture with another key does not apply.
        let Plan::Reply(r) = apply(&mut l, "k3", &req("capture", 1000, Some(&auth))) else {
            panic!("unexpected hang")
        };
        assert_eq!(r.status(), StatusCode::CONFLICT);
        // Reusing a key for something else is refused.
        let Plan::Reply(r) = apply(&mut l, "k1", &req("authorize", 999, None)) else {
            panic!("unexpected hang")
        };
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn declines_are_recorded_and_refunds_are_bounded() {
        let mut l = Ledger::default();
        assert!(!op(apply(&mut l, "a", &req("authorize", 1051, None))).approved());
        assert!(op(apply(&mut l, "b", &req("authorize", 1000, None))).approved());
        let auth = l.ops[1].id.clone();
        op(apply(&mut l, "c", &req("capture", 1000, Some(&auth))));
        let cap = l.ops[2].id.clone();
        op(apply(&mut l, "d", &req("refund", 600, Some(&cap))));
        let Plan::Reply(r) = apply(&mut l, "e", &req("refund", 600, Some(&cap))) else {
            panic!("unexpected hang")
        };
        assert_eq!(r.status(), StatusCode::CONFLICT);
    }

    #[test]
    fn timeout_after_capture_records_the_capture() {
        let mut l = Ledger::default();
        l.faults.timeout_after_capture_next = 1;
        op(apply(&mut l, "a", &req("authorize", 1000, None)));
        let auth = l.ops[0].id.clone();
        assert!(matches!(
            apply(&mut l, "b", &req("capture", 1000, Some(&auth))),
            Plan::HangThenReply(_)
        ));
        assert_eq!(l.ops[1].kind, "capture");
        assert_eq!(l.faults.timeout_after_capture_next, 0);
    }
}
