//! A payment provider simulator that lives in the load generator's process,
//! outside every server process, so its ledger survives any server kill and
//! is an independent record for the verifier.
//!
//! It speaks the same HTTP contract as the server's own simulator
//! (`POST /v1/operations` with `Idempotency-Key`, `GET /v1/operations?key=`,
//! `GET /ledger`, `GET|PUT /faults`), so the server uses it through
//! `--provider-url`. Amounts ending in `51` minor units are declined.

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

/// An operation the provider recorded (the server's wire format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Operation {
    pub(crate) id: String,
    /// `authorize`, `capture`, `void` or `refund`.
    pub(crate) kind: String,
    /// `approved` or `declined`.
    pub(crate) status: String,
    pub(crate) key: String,
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) parent: Option<String>,
    /// The merchant's reference: a payment id or a refund id.
    pub(crate) reference: String,
    pub(crate) at: i64,
}

impl Operation {
    pub(crate) fn approved(&self) -> bool {
        self.status == "approved"
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Request {
    kind: String,
    amount: i64,
    currency: String,
    parent: Option<String>,
    reference: String,
}

/// Faults; counters apply to the next N calls.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Faults {
    pub(crate) decline_next: u32,
    /// Apply the next N captures, then hold the reply until the client
    /// gives up (the capture happened; the answer is lost).
    pub(crate) timeout_after_capture_next: u32,
    pub(crate) error_5xx_next: u32,
    pub(crate) slow_ms: u64,
    pub(crate) down: bool,
}

#[derive(Debug, Default)]
struct Ledger {
    ops: Vec<Operation>,
    by_key: HashMap<String, (usize, String)>,
    by_id: HashMap<String, usize>,
    /// Approved children amount per (parent id, kind).
    children: HashMap<(String, String), i64>,
    faults: Faults,
}

/// A running simulator.
#[derive(Debug, Clone)]
pub(crate) struct Provider {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub(crate) url: String,
}

/// How long a "lost" capture reply is held before the connection closes.
const HANG: Duration = Duration::from_secs(30);

/// Starts the simulator on `listen` until `stop`.
pub(crate) async fn start(
    listen: SocketAddr,
    stop: CancellationToken,
) -> std::io::Result<Provider> {
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let app = Router::new()
        .route("/v1/operations", post(execute).get(lookup))
        .route("/ledger", get(ledger_all))
        .route("/faults", get(get_faults).put(put_faults))
        .with_state(ledger);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(Provider {
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

fn reply(op: &Operation) -> Response {
    let status = if op.approved() {
        StatusCode::OK
    } else {
        StatusCode::PAYMENT_REQUIRED
    };
    (status, Json(op.clone())).into_response()
}

enum Plan {
    Reply(Response),
    Hang(Response),
}

async fn execute(
    State(ledger): State<Arc<Mutex<Ledger>>>,
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
        tokio::time::sleep(Duration::from_millis(slow.min(60_000))).await;
    }
    let plan = apply(&mut ledger.lock(), &key, &req);
    match plan {
        Plan::Reply(r) => r,
        Plan::Hang(r) => {
            tokio::time::sleep(HANG).await;
            r
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
        .and_then(|p| l.by_id.get(p))
        .and_then(|i| l.ops.get(*i))
        .filter(|o| o.approved())
        .cloned();
    let child = |l: &Ledger, parent: &str, kind: &str| {
        l.children
            .get(&(parent.to_owned(), kind.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let mut declined = false;
    match req.kind.as_str() {
        "authorize" => {
            if l.faults.decline_next > 0 {
                l.faults.decline_next -= 1;
                declined = true;
            } else if req.amount % 100 == 51 {
                declined = true;
            }
        }
        "capture" | "void" => {
            let Some(auth) = parent.as_ref().filter(|p| p.kind == "authorize") else {
                return Plan::Reply(problem(StatusCode::CONFLICT, "no such authorization"));
            };
            if child(l, &auth.id, "capture") > 0 || child(l, &auth.id, "void") > 0 {
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
            if child(l, &cap.id, "refund") + req.amount > cap.amount {
                return Plan::Reply(problem(
                    StatusCode::CONFLICT,
                    "refunds over the captured amount",
                ));
            }
        }
        _ => return Plan::Reply(problem(StatusCode::BAD_REQUEST, "unknown operation kind")),
    }
    let prefix: String = req.kind.chars().take(3).collect();
    let op = Operation {
        id: format!("{prefix}_{}", uuid::Uuid::now_v7().simple()),
        kind: req.kind.clone(),
        status: if declined { "declined" } else { "approved" }.to_owned(),
        key: key.to_owned(),
        amount: req.amount,
        currency: req.currency.clone(),
        parent: req.parent.clone(),
        reference: req.reference.clone(),
        at: now_ms(),
    };
    let i = l.ops.len();
    l.by_key.insert(key.to_owned(), (i, fingerprint));
    l.by_id.insert(op.id.clone(), i);
    if let (Some(p), true) = (&op.parent, op.approved()) {
        *l.children.entry((p.clone(), op.kind.clone())).or_default() += op.amount;
    }
    l.ops.push(op.clone());
    if op.kind == "capture" && l.faults.timeout_after_capture_next > 0 {
        l.faults.timeout_after_capture_next -= 1;
        return Plan::Hang(reply(&op));
    }
    Plan::Reply(reply(&op))
}

#[derive(Debug, Deserialize)]
struct KeyQuery {
    key: String,
}

async fn lookup(State(ledger): State<Arc<Mutex<Ledger>>>, Query(q): Query<KeyQuery>) -> Response {
    let l = ledger.lock();
    if l.faults.down {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "provider down");
    }
    match l.by_key.get(&q.key).and_then(|(i, _)| l.ops.get(*i)) {
        Some(op) => Json(op.clone()).into_response(),
        None => problem(StatusCode::NOT_FOUND, "no operation with this key"),
    }
}

async fn ledger_all(State(ledger): State<Arc<Mutex<Ledger>>>) -> Json<Vec<Operation>> {
    Json(ledger.lock().ops.clone())
}

async fn get_faults(State(ledger): State<Arc<Mutex<Ledger>>>) -> Json<Faults> {
    Json(ledger.lock().faults.clone())
}

async fn put_faults(
    State(ledger): State<Arc<Mutex<Ledger>>>,
    Json(f): Json<Faults>,
) -> Json<Faults> {
    ledger.lock().faults = f.clone();
    Json(f)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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

    fn status(p: Plan) -> u16 {
        let (Plan::Reply(r) | Plan::Hang(r)) = p;
        r.status().as_u16()
    }

    #[test]
    fn a_key_applies_once_and_settlements_are_bounded() {
        let mut l = Ledger::default();
        assert_eq!(
            status(apply(&mut l, "a", &req("authorize", 1000, None))),
            200
        );
        assert_eq!(
            status(apply(&mut l, "a", &req("authorize", 1000, None))),
            200
        );
        assert_eq!(
            status(apply(&mut l, "a", &req("authorize", 999, None))),
            422
        );
        assert_eq!(l.ops.len(), 1);
        let auth = l.ops[0].id.clone();
        assert_eq!(
            status(apply(&mut l, "c", &req("capture", 1000, Some(&auth)))),
            200
        );
        assert_eq!(
            status(apply(&mut l, "c2", &req("capture", 1000, Some(&auth)))),
            409
        );
        let cap = l.ops[1].id.clone();
        assert_eq!(
            status(apply(&mut l, "r1", &req("refund", 600, Some(&cap)))),
            200
        );
        assert_eq!(
            status(apply(&mut l, "r2", &req("refund", 600, Some(&cap)))),
            409
        );
        assert_eq!(
            status(apply(&mut l, "d", &req("authorize", 1051, None))),
            402
        );
    }

    #[test]
    fn timeout_after_capture_records_then_hangs() {
        let mut l = Ledger::default();
        l.faults.timeout_after_capture_next = 1;
        apply(&mut l, "a", &req("authorize", 1000, None));
        let auth = l.ops[0].id.clone();
        assert!(matches!(
            apply(&mut l, "c", &req("capture", 1000, Some(&auth))),
            Plan::Hang(_)
        ));
        assert_eq!(l.ops.len(), 2);
        assert!(matches!(
            apply(&mut l, "c", &req("capture", 1000, Some(&auth))),
            Plan::Reply(_)
        ));
    }
}
