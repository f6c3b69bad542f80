//! What to do while a key is in flight, and which responses to keep.

use std::time::Duration;

/// What a duplicate does while the first request with its key is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InFlightPolicy {
    /// Answer at once: 409 with `Retry-After` over HTTP,
    /// [`Error::InFlight`](crate::Error::InFlight) from `run`. The IETF
    /// draft's behaviour. Default.
    #[default]
    Reject,
    /// Wait up to this long for the first request to finish and replay its
    /// response; reject as above if it has not finished by then.
    Wait(Duration),
}

/// What happens to the key after a response with a given status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Keep the response and replay it for the TTL.
    Store,
    /// Release the key so that a retry executes again.
    Release,
}

/// Which responses are stored for replay and which release the key.
///
/// Default: store 1xx–4xx, release on 401, 403, 408, 425, 429 and every 5xx
/// (transient or caller-dependent outcomes a retry may change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsePolicy {
    release: Vec<u16>,
    store_5xx: bool,
}

impl Default for ResponsePolicy {
    fn default() -> Self {
        Self {
            release: vec![401, 403, 408, 425, 429],
            store_5xx: false,
        }
    }
}

impl ResponsePolicy {
    /// Stripe's original behaviour: store every response, 5xx included.
    pub fn store_all() -> Self {
        Self {
            release: Vec::new(),
            store_5xx: true,
        }
    }

    /// Releases the key after `status` (repeatable).
    pub fn release_status(mut self, status: u16) -> Self {
        if !self.release.contains(&status) {
            self.release.push(status);
        }
        self
    }

    /// Stores responses with `status`, overriding a release.
    pub fn store_status(mut self, status: u16) -> Self {
        self.release.retain(|s| *s != status);
        self
    }

    /// Whether 5xx responses are stored. Default: false.
    pub fn store_server_errors(mut self, yes: bool) -> Self {
        self.store_5xx = yes;
        self
    }

    /// What to do after `status`.
    pub fn disposition(&self, status: u16) -> Disposition {
        if self.release.contains(&status) || (status >= 500 && !self.store_5xx) {
            Disposition::Release
        } else {
            Disposition::Store
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let p = ResponsePolicy::default();
        for s in [200, 201, 204, 400, 404, 409, 422] {
            assert_eq!(p.disposition(s), Disposition::Store, "{s}");
        }
        for s in [401, 403, 408, 425, 429, 500, 502, 503, 599] {
            assert_eq!(p.disposition(s), Disposition::Release, "{s}");
        }
        let p = ResponsePolicy::store_all();
        assert_eq!(p.disposition(500), Disposition::Store);
        let p = ResponsePolicy::default()
            .store_status(429)
            .release_status(404);
        assert_eq!(p.disposition(429), Disposition::Store);
        assert_eq!(p.disposition(404), Disposition::Release);
    }
}
