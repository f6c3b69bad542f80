//! Authentication: `Authorization: Bearer <key>` (or `?access_token=` on a
//! WebSocket upgrade, which browsers cannot give headers). The key is
//! hashed and looked up; the result is cached briefly. Every authenticated
//! request also takes a token from the key's rate-limit bucket.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use parking_lot::Mutex;

use super::AppState;
use super::problem::Problem;
use crate::store::keys::{self, Principal};

const CACHE_TTL: Duration = Duration::from_secs(30);

/// Recently seen keys (by hash).
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    entries: Mutex<HashMap<String, (Principal, Instant)>>,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Principal);

impl Caller {
    /// The restaurant this caller is scoped to (`None` for operators).
    pub(crate) fn restaurant(&self) -> Option<&str> {
        match &self.0 {
            Principal::Restaurant(r) => Some(r),
            Principal::Operator => None,
        }
    }

    /// May this caller see `restaurant`'s data?
    pub(crate) fn may_see(&self, restaurant: &str) -> bool {
        self.restaurant().is_none_or(|r| r == restaurant)
    }

    /// Requires a restaurant key (taking payments is the till's job).
    pub(crate) fn require_restaurant(&self) -> Result<&str, Problem> {
        self.restaurant()
            .ok_or_else(|| Problem::forbidden("this operation needs a restaurant key"))
    }
}

/// An operator (parked sagas, dead letters, keys).
#[derive(Debug, Clone)]
pub(crate) struct Operator;

fn presented_key(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let key = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))?;
        return Some(key.trim().to_owned());
    }
    let upgrade = parts
        .headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        return parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("access_token="))
                .map(str::to_owned)
        });
    }
    None
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let Some(key) = presented_key(parts) else {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "an API key is required: Authorization: Bearer <key>",
            ));
        };
        if key.is_empty() || key.len() > 256 {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid API key",
            ));
        }
        let hash = keys::hash(&key);
        let cached = state
            .keys
            .entries
            .lock()
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(p, _)| p.clone());
        let principal = match cached {
            Some(p) => p,
            None => {
                let p = keys::authenticate(&state.db, &key).await?.ok_or_else(|| {
                    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid API key")
                })?;
                state
                    .keys
                    .entries
                    .lock()
                    .insert(hash.clone(), (p.clone(), Instant::now()));
                p
            }
        };
        if let Err(wait) = state.limiter.check(&hash) {
            metrics::counter!("http_rate_limited_total").increment(1);
            let mut p = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "too many requests for this API key",
            );
            p.retry_after = Some(wait);
            return Err(p);
        }
        let caller = Caller(principal);
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await?.0 {
            Principal::Operator => Ok(Operator),
            Principal::Restaurant(_) => {
                Err(Problem::forbidden("this operation needs the operator key"))
            }
        }
    }
}
