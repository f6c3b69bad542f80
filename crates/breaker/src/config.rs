//! What a breaker counts and when it opens.

use std::time::Duration;

use crate::error::BuildError;

/// What the breaker looks at to decide whether to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Window {
    /// The last `n` recorded calls. Good when traffic is steady; closed successes cost one atomic load.
    Count(u32),
    /// The calls of the last `n` seconds, in one-second buckets that roll (never a fixed reset).
    /// Good when traffic is bursty or sparse; reads the clock on each call.
    Time(u32),
    /// `n` failures in a row open the breaker; a success starts the count again. No rates, no
    /// minimum number of calls: the simple breaker.
    ConsecutiveFailures(u32),
}

/// How long the breaker stays open after a trip.
///
/// The `n`-th trip in a row (without the breaker closing in between) stays open
/// `min(base × multiplierⁿ⁻¹, max)`, shortened by a random fraction up to `jitter` so that many
/// breakers opened by one outage do not all probe at the same instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenDuration {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
    pub(crate) multiplier: f64,
    pub(crate) jitter: f64,
}

impl OpenDuration {
    /// The same duration after every trip, without jitter.
    pub const fn fixed(d: Duration) -> Self {
        Self {
            base: d,
            max: d,
            multiplier: 1.0,
            jitter: 0.0,
        }
    }

    /// Doubles after each trip in a row, from `base` up to `max`, without jitter.
    pub const fn backoff(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            multiplier: 2.0,
            jitter: 0.0,
        }
    }

    /// Sets the growth factor per trip. Default: 2 for [`OpenDuration::backoff`], 1 for fixed.
    pub const fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m;
        self
    }

    /// Sets the largest random fraction (0 to 1) taken off each duration. Default: 0.
    pub const fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// The duration of the `trip`-th trip in a row (1-based) given a random number in `[0, 1)`.
    pub(crate) fn for_trip(&self, trip: u32, random: f64) -> Duration {
        let exp = i32::try_from(trip.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.base.as_secs_f64() * self.multiplier.powi(exp);
        let capped = grown.min(self.max.as_secs_f64());
        let jittered = capped * (1.0 - self.jitter * random.clamp(0.0, 1.0));
        Duration::try_from_secs_f64(jittered).unwrap_or(self.max)
    }

    fn validate(&self) -> Result<(), BuildError> {
        if self.max < self.base {
            return Err(BuildError("open duration max is below its base"));
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(BuildError("open duration multiplier must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(BuildError("open duration jitter must be between 0 and 1"));
        }
        Ok(())
    }
}

/// A validated breaker configuration; build one with [`Config::builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub(crate) window: Window,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate: f64,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) slow_call_rate: f64,
    pub(crate) open_duration: OpenDuration,
    pub(crate) half_open_calls: u32,
    pub(crate) max_wait_in_half_open: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            window: Window::Count(100),
            minimum_calls: 20,
            failure_rate: 0.5,
            slow_call_duration: None,
            slow_call_rate: 1.0,
            open_duration: OpenDuration::fixed(Duration::from_secs(30)),
            half_open_calls: 3,
            max_wait_in_half_open: Some(Duration::from_secs(60)),
        }
    }
}

impl Config {
    /// A builder starting from the defaults listed on each setter.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Self::default(),
        }
    }

    /// The window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// The number of recorded calls below which rates are not judged.
    pub fn minimum_calls(&self) -> u32 {
        self.minimum_calls
    }

    /// The failure rate (0 to 1) at or above which the breaker opens.
    pub fn failure_rate(&self) -> f64 {
        self.failure_rate
    }

    /// The duration from which a call counts as slow, if slow calls are tracked.
    pub fn slow_call_duration(&self) -> Option<Duration> {
        self.slow_call_duration
    }

    /// The slow-call rate (0 to 1) at or above which the breaker opens.
    pub fn slow_call_rate(&self) -> f64 {
        self.slow_call_rate
    }

    /// How long the breaker stays open.
    pub fn open_duration(&self) -> OpenDuration {
        self.open_duration
    }

    /// How many probe calls half-open admits.
    pub fn half_open_calls(&self) -> u32 {
        self.half_open_calls
    }

    /// How long half-open may wait for its probes before opening again.
    pub fn max_wait_in_half_open(&self) -> Option<Duration> {
        self.max_wait_in_half_open
    }
}

/// Builds a [`Config`].
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

impl From<Config> for ConfigBuilder {
    fn from(config: Config) -> Self {
        Self { config }
    }
}

impl ConfigBuilder {
    /// Judges the last `n` calls. Default: `Window::Count(100)`.
    pub fn window(mut self, window: Window) -> Self {
        self.config.window = window;
        self
    }

    /// Rates are judged only once the window holds this many calls. Default: 20.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }

    /// Opens when failures / calls reaches this rate (0 < rate ≤ 1). Default: 0.5.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = rate;
        self
    }

    /// Counts calls that take at least `duration` as slow, and opens when slow calls / calls
    /// reaches `rate` (0 < rate ≤ 1). A slow call still completes; it is not cancelled.
    /// Default: slow calls not tracked (and the clock not read for them).
    pub fn slow_calls(mut self, duration: Duration, rate: f64) -> Self {
        self.config.slow_call_duration = Some(duration);
        self.config.slow_call_rate = rate;
        self
    }

    /// How long to stay open. Default: `OpenDuration::fixed(30 s)`.
    pub fn open_duration(mut self, d: OpenDuration) -> Self {
        self.config.open_duration = d;
        self
    }

    /// How many probes half-open admits before deciding. Default: 3.
    pub fn half_open_calls(mut self, n: u32) -> Self {
        self.config.half_open_calls = n;
        self
    }

    /// Opens again when half-open has not decided within `d` (a probe that hangs forever).
    /// `None` waits for ever. Default: 60 s.
    pub fn max_wait_in_half_open(mut self, d: Option<Duration>) -> Self {
        self.config.max_wait_in_half_open = d;
        self
    }

    /// Checks the values.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when a window is empty or larger than 1,000,000 calls or 3,600 seconds, a
    /// rate is not in `(0, 1]`, half-open admits no call, or the open duration is invalid.
    pub fn build(self) -> Result<Config, BuildError> {
        let c = self.config;
        match c.window {
            Window::Count(0) | Window::Time(0) | Window::ConsecutiveFailures(0) => {
                return Err(BuildError("window must not be empty"));
            }
            Window::Count(n) if n > 1_000_000 => {
                return Err(BuildError("count window is limited to 1,000,000 calls"));
            }
            Window::Time(n) if n > 3_600 => {
                return Err(BuildError("time window is limited to 3,600 seconds"));
            }
            _ => {}
        }
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        if !rate_ok(c.failure_rate) {
            return Err(BuildError("failure rate must be in (0, 1]"));
        }
        if !rate_ok(c.slow_call_rate) {
            return Err(BuildError("slow-call rate must be in (0, 1]"));
        }
        if c.half_open_calls == 0 {
            return Err(BuildError("half-open must admit at least one call"));
        }
        c.open_duration.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_duration_grows_caps_and_jitters() {
        let d = OpenDuration::backoff(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(d.for_trip(1, 0.0), Duration::from_secs(1));
        assert_eq!(d.for_trip(2, 0.0), Duration::from_secs(2));
        assert_eq!(d.for_trip(4, 0.0), Duration::from_secs(8));
        assert_eq!(d.for_trip(5, 0.0), Duration::from_secs(10));
        assert_eq!(d.for_trip(u32::MAX, 0.0), Duration::from_secs(10));
        let j = d.jitter(0.5);
        assert_eq!(j.for_trip(1, 0.5), Duration::from_millis(750));
        assert!(j.for_trip(5, 0.999) >= Duration::from_secs(5));
        assert_eq!(
            OpenDuration::fixed(Duration::from_secs(3)).for_trip(9, 0.3),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn build_rejects_bad_values() {
        assert!(Config::builder().window(Window::Count(0)).build().is_err());
        assert!(
            Config::builder()
                .window(Window::Time(4000))
                .build()
                .is_err()
        );
        assert!(Config::builder().failure_rate(0.0).build().is_err());
        assert!(Config::builder().failure_rate(1.5).build().is_err());
        assert!(Config::builder().failure_rate(f64::NAN).build().is_err());
        assert!(
            Config::builder()
                .slow_calls(Duration::from_secs(1), 0.0)
                .build()
                .is_err()
        );
        assert!(Config::builder().half_open_calls(0).build().is_err());
        assert!(
            Config::builder()
                .open_duration(OpenDuration::backoff(
                    Duration::from_secs(2),
                    Duration::from_secs(1)
                ))
                .build()
                .is_err()
        );
        assert!(
            Config::builder()
                .open_duration(OpenDuration::fixed(Duration::from_secs(1)).jitter(2.0))
                .build()
                .is_err()
        );
        assert!(Config::builder().build().is_ok());
    }
}
