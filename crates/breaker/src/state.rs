//! The states a breaker can be in.

use std::fmt;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls run and their outcomes are recorded; the breaker opens when a threshold is crossed.
    Closed,
    /// Calls are rejected until the open duration has passed; then the breaker is half-open.
    Open,
    /// A limited number of probe calls run; their outcomes close or reopen the breaker.
    HalfOpen,
    /// Every call is rejected until an operator changes the state.
    ForcedOpen,
    /// Every call runs and nothing is recorded.
    Disabled,
    /// Every call runs and is recorded, and crossing a threshold emits an event, but the
    /// breaker never opens: for trying thresholds out on live traffic.
    MetricsOnly,
}

impl State {
    pub(crate) const fn code(self) -> u64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
            Self::ForcedOpen => 3,
            Self::Disabled => 4,
            Self::MetricsOnly => 5,
        }
    }

    pub(crate) const fn from_code(code: u64) -> Self {
        match code {
            0 => Self::Closed,
            1 => Self::Open,
            2 => Self::HalfOpen,
            3 => Self::ForcedOpen,
            4 => Self::Disabled,
            _ => Self::MetricsOnly,
        }
    }

    /// A short lowercase name, as used in events and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
            Self::MetricsOnly => "metrics_only",
        }
    }

    /// Whether a call made now could be admitted (closed, half-open, disabled, metrics-only).
    pub const fn admits_calls(self) -> bool {
        !matches!(self, Self::Open | Self::ForcedOpen)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in [
            State::Closed,
            State::Open,
            State::HalfOpen,
            State::ForcedOpen,
            State::Disabled,
            State::MetricsOnly,
        ] {
            assert_eq!(State::from_code(s.code()), s);
        }
    }
}
