//! Permission to make one call, released on completion, drop or cancellation.

use std::fmt;
use std::sync::Arc;

use crate::breaker::Inner;
use crate::outcome::Outcome;

/// What the breaker needs to know about an admitted call: the state word it was admitted under
/// and, when slow calls are tracked, when it started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    pub(crate) word: u64,
    pub(crate) start: u64,
}

/// Permission to make one call, borrowed from a breaker.
///
/// Record the call's outcome with [`Permit::record`] (or [`Permit::success`],
/// [`Permit::failure`], [`Permit::ignore`]). Dropping it unrecorded counts as a cancelled call:
/// nothing is recorded and a half-open probe slot is given back.
#[must_use = "a permit records nothing unless its outcome is given"]
pub struct Permit<'a> {
    inner: &'a Inner,
    ticket: Option<Ticket>,
}

impl<'a> Permit<'a> {
    #[inline]
    pub(crate) fn new(inner: &'a Inner, ticket: Ticket) -> Self {
        Self {
            inner,
            ticket: Some(ticket),
        }
    }

    /// Records the call's outcome.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        if let Some(t) = self.ticket.take() {
            self.inner.complete(t, outcome);
        }
    }

    /// Records a success.
    #[inline]
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// Records a failure.
    #[inline]
    pub fn failure(self) {
        self.record(Outcome::Failure);
    }

    /// Records nothing and gives a half-open probe slot back.
    #[inline]
    pub fn ignore(self) {
        self.record(Outcome::Ignored);
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.inner.cancel(t);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("ticket", &self.ticket)
            .finish()
    }
}

/// Permission to make one call, owning a handle to its breaker; see [`Permit`].
#[must_use = "a permit records nothing unless its outcome is given"]
pub struct OwnedPermit {
    inner: Arc<Inner>,
    ticket: Option<Ticket>,
}

impl OwnedPermit {
    pub(crate) fn new(inner: Arc<Inner>, ticket: Ticket) -> Self {
        Self {
            inner,
            ticket: Some(ticket),
        }
    }

    /// Records the call's outcome.
    pub fn record(mut self, outcome: Outcome) {
        if let Some(t) = self.ticket.take() {
            self.inner.complete(t, outcome);
        }
    }

    /// Records a success.
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// Records a failure.
    pub fn failure(self) {
        self.record(Outcome::Failure);
    }

    /// Records nothing and gives a half-open probe slot back.
    pub fn ignore(self) {
        self.record(Outcome::Ignored);
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.inner.cancel(t);
        }
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("ticket", &self.ticket)
            .finish()
    }
}
