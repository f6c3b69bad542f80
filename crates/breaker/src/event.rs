//! What a breaker reports: state transitions, rejections, thresholds crossed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::state::State;

/// Something a breaker did, given to the listener set with `on_event` and logged with `tracing`
/// (and counted with `metrics` under the `metrics` feature).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The breaker went from one state to another.
    StateTransition {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The state before.
        from: State,
        /// The state now.
        to: State,
    },
    /// A call was refused.
    Rejected {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The state that refused it.
        state: State,
        /// When the breaker expects to admit calls again, if it knows.
        retry_after: Option<Duration>,
    },
    /// The failure rate reached its threshold (in metrics-only state the breaker stays closed).
    FailureRateExceeded {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The rate, from 0 to 1.
        rate: f64,
    },
    /// The slow-call rate reached its threshold.
    SlowCallRateExceeded {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The rate, from 0 to 1.
        rate: f64,
    },
    /// The number of failures in a row reached its threshold.
    ConsecutiveFailuresExceeded {
        /// The breaker's name.
        breaker: Arc<str>,
        /// Failures in a row.
        failures: u32,
    },
    /// An operator reset the breaker: closed, window emptied, trip count zeroed.
    Reset {
        /// The breaker's name.
        breaker: Arc<str>,
    },
}

impl Event {
    /// The name of the breaker the event is about.
    pub fn breaker(&self) -> &str {
        self.breaker_name()
    }

    fn breaker_name(&self) -> &Arc<str> {
        match self {
            Self::StateTransition { breaker, .. }
            | Self::Rejected { breaker, .. }
            | Self::FailureRateExceeded { breaker, .. }
            | Self::SlowCallRateExceeded { breaker, .. }
            | Self::ConsecutiveFailuresExceeded { breaker, .. }
            | Self::Reset { breaker } => breaker,
        }
    }
}

/// A function called with every [`Event`], on the thread that caused it, outside the breaker's lock.
#[derive(Clone)]
pub struct Listener(pub(crate) Arc<dyn Fn(&Event) + Send + Sync>);

impl Listener {
    /// Wraps a function.
    pub fn new(f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Listener")
    }
}

/// Logs, counts and hands an event to the listener.
pub(crate) fn emit(listener: Option<&Listener>, event: &Event) {
    match event {
        Event::StateTransition { breaker, from, to } => {
            tracing::info!(target: "counterfoil_breaker", breaker = %breaker, from = %from, to = %to, "circuit breaker state transition");
        }
        Event::Rejected {
            breaker,
            state,
            retry_after,
        } => {
            tracing::debug!(target: "counterfoil_breaker", breaker = %breaker, state = %state, retry_after_ms = retry_after.map(|d| d.as_millis() as u64), "circuit breaker rejected a call");
        }
        Event::FailureRateExceeded { breaker, rate } => {
            tracing::warn!(target: "counterfoil_breaker", breaker = %breaker, rate, "failure rate threshold exceeded");
        }
        Event::SlowCallRateExceeded { breaker, rate } => {
            tracing::warn!(target: "counterfoil_breaker", breaker = %breaker, rate, "slow-call rate threshold exceeded");
        }
        Event::ConsecutiveFailuresExceeded { breaker, failures } => {
            tracing::warn!(target: "counterfoil_breaker", breaker = %breaker, failures, "consecutive failures threshold exceeded");
        }
        Event::Reset { breaker } => {
            tracing::info!(target: "counterfoil_breaker", breaker = %breaker, "circuit breaker reset");
        }
    }
    #[cfg(feature = "metrics")]
    record_metrics(event);
    if let Some(l) = listener {
        (l.0)(event);
    }
}

#[cfg(feature = "metrics")]
fn record_metrics(event: &Event) {
    // Shares the name: no allocation per event.
    let name = metrics::SharedString::from(event.breaker_name().clone());
    match event {
        Event::StateTransition { to, .. } => {
            metrics::counter!("counterfoil_breaker_transitions_total", "breaker" => name.clone(), "to" => to.as_str()).increment(1);
            metrics::gauge!("counterfoil_breaker_state", "breaker" => name).set(to.code() as f64);
        }
        Event::Rejected { .. } => {
            metrics::counter!("counterfoil_breaker_rejected_total", "breaker" => name).increment(1);
        }
        Event::FailureRateExceeded { .. } => {
            metrics::counter!("counterfoil_breaker_threshold_exceeded_total", "breaker" => name, "threshold" => "failure_rate").increment(1);
        }
        Event::SlowCallRateExceeded { .. } => {
            metrics::counter!("counterfoil_breaker_threshold_exceeded_total", "breaker" => name, "threshold" => "slow_call_rate").increment(1);
        }
        Event::ConsecutiveFailuresExceeded { .. } => {
            metrics::counter!("counterfoil_breaker_threshold_exceeded_total", "breaker" => name, "threshold" => "consecutive_failures").increment(1);
        }
        Event::Reset { .. } => {
            metrics::counter!("counterfoil_breaker_resets_total", "breaker" => name).increment(1);
        }
    }
}

/// Events gathered under the lock, emitted after it is released (at most a few per operation).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    events: [Option<Event>; 4],
    /// A clock reading at which a time-driven transition falls due.
    pub(crate) wake_at: Option<u64>,
}

impl Pending {
    pub(crate) fn push(&mut self, e: Event) {
        if let Some(slot) = self.events.iter_mut().find(|s| s.is_none()) {
            *slot = Some(e);
        }
    }

    pub(crate) fn emit(self, listener: Option<&Listener>) {
        for e in self.events.into_iter().flatten() {
            emit(listener, &e);
        }
    }
}
