//! A consistent reading of a breaker's state and counts.

use std::sync::Arc;
use std::time::Duration;

use crate::state::State;

/// A breaker's state, window counts, rates and probes, read at one instant.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The state.
    pub state: State,
    /// Calls recorded in the window (rate windows; 0 for consecutive-failure windows).
    pub calls: u64,
    /// Failures recorded in the window.
    pub failures: u64,
    /// Slow calls recorded in the window.
    pub slow_calls: u64,
    /// `failures / calls`, 0 when the window is empty.
    pub failure_rate: f64,
    /// `slow_calls / calls`, 0 when the window is empty.
    pub slow_call_rate: f64,
    /// Failures in a row (consecutive-failure windows).
    pub consecutive_failures: u32,
    /// While open, the time left until half-open.
    pub retry_after: Option<Duration>,
    /// Half-open probes running now.
    pub probes_in_flight: u32,
    /// Half-open probes finished in this half-open period.
    pub probes_completed: u32,
    /// Trips in a row without closing in between (sets the open duration's backoff).
    pub trips: u32,
}
