//! In-process wake-ups: the worker loops of one engine sleep on this instead of a fixed poll.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Most future due times remembered; beyond this the poll finds the rest.
const MAX_TIMERS: usize = 4096;

/// Shared by an engine, its driver and its worker loops.
#[derive(Debug, Default)]
pub(crate) struct Wakeup {
    notify: Notify,
    due: Mutex<BinaryHeap<Reverse<i64>>>,
}

impl Wakeup {
    /// Work may be due now: wake a worker loop (or the next one to wait, if none waits).
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }

    /// A saga this process released becomes due at `at` (a retry or a deadline).
    pub(crate) fn schedule(&self, at: i64) {
        let mut g = self.due.lock();
        if g.len() < MAX_TIMERS {
            g.push(Reverse(at));
        }
    }

    /// Forgets due times up to `now`; returns whether any was there (work is due), and the
    /// next one after `now`.
    pub(crate) fn take_due(&self, now: i64) -> (bool, Option<i64>) {
        let mut g = self.due.lock();
        let mut any = false;
        while let Some(Reverse(at)) = g.peek().copied() {
            if at > now {
                return (any, Some(at));
            }
            g.pop();
            any = true;
        }
        (any, None)
    }

    /// Completes at the next [`wake`](Self::wake) (or at once if one is pending).
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }
}
