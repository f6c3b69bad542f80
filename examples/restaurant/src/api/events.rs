//! `GET /v1/events`: a WebSocket of payment, refund, receipt and printer
//! events, filtered to the caller's restaurant (operators see all).
//! Resumable: pass the last id you saw as `?after=<id>` (or the
//! `Last-Event-ID` header) and missed events are replayed first.
//!
//! Each message is one JSON [`Event`]. The server pings every 20 s.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::AppState;
use super::auth::Caller;
use super::problem::Problem;
use crate::store::events::{self, Event};

/// Where to resume.
#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct Resume {
    /// Replay events after this id.
    after: Option<i64>,
    /// The API key, for browsers (they cannot set headers on a WebSocket).
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// Stream events over a WebSocket.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(Resume, ("Last-Event-ID" = Option<i64>, Header, description = "Alternative to `after`")),
    responses((status = 101, description = "WebSocket of `Event` JSON messages"),
              (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = [])))]
pub(crate) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<Resume>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, Problem> {
    let after = q.after.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    });
    let restaurant = caller.restaurant().map(str::to_owned);
    Ok(ws
        .max_message_size(4096)
        .on_upgrade(move |socket| stream(state, restaurant, after, socket)))
}

async fn send(socket: &mut WebSocket, e: &Event) -> bool {
    match serde_json::to_string(e) {
        Ok(text) => socket
            .send(Message::Text(Utf8Bytes::from(text)))
            .await
            .is_ok(),
        Err(_) => true,
    }
}

async fn stream(
    state: AppState,
    restaurant: Option<String>,
    after: Option<i64>,
    mut socket: WebSocket,
) {
    metrics::gauge!("websocket_clients").increment(1.0);
    // Subscribe first, then replay: nothing falls between the two.
    let mut rx = state.tail.subscribe();
    let mut sent: HashSet<i64> = HashSet::new();
    let mut high = 0_i64;
    if let Some(after) = after {
        let mut cursor = after;
        loop {
            let Ok(batch) = events::after(&state.db, restaurant.as_deref(), cursor, 500).await
            else {
                break;
            };
            let n = batch.len();
            for e in &batch {
                if !send(&mut socket, e).await {
                    metrics::gauge!("websocket_clients").decrement(1.0);
                    return;
                }
                sent.insert(e.id);
                cursor = e.id;
                high = high.max(e.id);
            }
            if n < 500 {
                break;
            }
        }
    }
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(e) => {
                    if restaurant.as_ref().is_some_and(|r| *r != e.restaurant) || sent.contains(&e.id) {
                        continue;
                    }
                    if after.is_some() && e.id <= high && e.id <= after.unwrap_or(0) {
                        continue;
                    }
                    if !send(&mut socket, &e).await {
                        break;
                    }
                    sent.insert(e.id);
                    if sent.len() > 10_000 {
                        sent.clear();
                    }
                }
                // Too slow: close, and the client resumes from its last id.
                Err(RecvError::Lagged(_)) => {
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    metrics::gauge!("websocket_clients").decrement(1.0);
}
