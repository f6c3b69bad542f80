//! Watches `GET /v1/events` (one WebSocket per restaurant) and tells waiting
//! flows when their payment or refund reached a final status. Reconnects to
//! any serve instance and resumes from the last event id it saw.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

use crate::stats::Counters;

/// The final status of a payment or refund, and when the event arrived.
pub(crate) type Final = (Instant, String);

#[derive(Debug)]
enum Slot {
    Seen(Final),
    Waiting(Vec<oneshot::Sender<Final>>),
}

/// Final statuses seen, by payment or refund id.
#[derive(Debug, Default)]
pub(crate) struct Finals {
    map: Mutex<HashMap<String, Slot>>,
}

const PAYMENT_FINAL: [&str; 4] = ["fiscalized", "declined", "voided", "parked"];
const REFUND_FINAL: [&str; 3] = ["reversed", "rejected", "parked"];

impl Finals {
    /// Records a final status (the first one wins).
    pub(crate) fn seen(&self, id: &str, status: &str) {
        let fin = (Instant::now(), status.to_owned());
        let mut map = self.map.lock();
        match map.insert(id.to_owned(), Slot::Seen(fin.clone())) {
            Some(Slot::Waiting(waiters)) => {
                for w in waiters {
                    let _ = w.send(fin.clone());
                }
            }
            Some(Slot::Seen(first)) => {
                map.insert(id.to_owned(), Slot::Seen(first));
            }
            None => {}
        }
    }

    /// Waits up to `timeout` for the final status of `id`.
    pub(crate) async fn wait(&self, id: &str, timeout: Duration) -> Option<Final> {
        let rx = {
            let mut map = self.map.lock();
            let slot = map
                .entry(id.to_owned())
                .or_insert_with(|| Slot::Waiting(Vec::new()));
            match slot {
                Slot::Seen(f) => return Some(f.clone()),
                Slot::Waiting(w) => {
                    let (tx, rx) = oneshot::channel();
                    w.push(tx);
                    rx
                }
            }
        };
        tokio::time::timeout(timeout, rx).await.ok()?.ok()
    }

    /// Applies one event message; returns its id.
    pub(crate) fn apply(&self, text: &str) -> Option<i64> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let id = v.get("id")?.as_i64()?;
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let subject = v.get("subject").and_then(|k| k.as_str()).unwrap_or("");
        if let Some(status) = kind.strip_prefix("payment.")
            && PAYMENT_FINAL.contains(&status)
        {
            self.seen(subject, status);
        } else if let Some(status) = kind.strip_prefix("refund.")
            && REFUND_FINAL.contains(&status)
            && let Some(refund) = v.pointer("/data/refund").and_then(|r| r.as_str())
        {
            self.seen(refund, status);
        }
        Some(id)
    }
}

/// Watches one restaurant's events until `stop`.
pub(crate) async fn watch(
    bases: Vec<String>,
    key: String,
    finals: Arc<Finals>,
    counters: Arc<Counters>,
    ready: Option<oneshot::Sender<()>>,
    stop: CancellationToken,
) {
    let mut ready = ready;
    let mut after: Option<i64> = None;
    let mut attempt = 0_usize;
    // Bounded: at most this many connections over the run.
    while attempt < 100_000 && !stop.is_cancelled() {
        let base = &bases[attempt % bases.len().max(1)];
        attempt += 1;
        let ws = base
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1);
        let url = match after {
            Some(a) => format!("{ws}/v1/events?after={a}"),
            None => format!("{ws}/v1/events"),
        };
        let Ok(mut req) = url.into_client_request() else {
            return;
        };
        if let Ok(v) = format!("Bearer {key}").parse() {
            req.headers_mut().insert("authorization", v);
        }
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            c = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(req)) => c,
        };
        let mut socket = match connected {
            Ok(Ok((s, _))) => s,
            _ => {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                }
            }
        };
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        if after.is_some() {
            Counters::inc(&counters.ws_reconnects);
        }
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return,
                m = socket.next() => m,
            };
            match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Some(id) = finals.apply(t.as_str()) {
                        after = Some(after.map_or(id, |a| a.max(id)));
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            }
        }
        // The first connection saw no event yet: resume from the start of
        // this run's traffic, which the events log still holds.
        if after.is_none() {
            after = Some(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_see_events_before_and_after_they_wait() {
        let f = Finals::default();
        assert_eq!(
            f.apply(r#"{"id":3,"kind":"payment.fiscalized","subject":"p1","data":{}}"#),
            Some(3)
        );
        assert_eq!(
            f.wait("p1", Duration::from_millis(1)).await.map(|x| x.1),
            Some("fiscalized".into())
        );
        let f = Arc::new(f);
        let g = f.clone();
        let w = tokio::spawn(async move { g.wait("r1", Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        f.apply(r#"{"id":4,"kind":"refund.reversed","subject":"p1","data":{"refund":"r1"}}"#);
        f.apply(r#"{"id":5,"kind":"payment.captured","subject":"p2","data":{}}"#);
        assert_eq!(w.await.ok().flatten().map(|x| x.1), Some("reversed".into()));
        assert!(f.wait("p2", Duration::from_millis(1)).await.is_none());
    }
}
