//! Unit tests of the breaker, and a reference model driven side by side with it by proptest.

use std::sync::Mutex as StdMutex;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;

const MS: Duration = Duration::from_millis(1);

fn breaker(
    clock: &ManualClock,
    f: impl FnOnce(CircuitBreakerBuilder) -> CircuitBreakerBuilder,
) -> CircuitBreaker {
    f(CircuitBreaker::builder().name("t").clock(clock.clone()))
        .build()
        .unwrap()
}

fn fail(b: &CircuitBreaker) {
    b.try_acquire().unwrap().failure();
}

fn ok(b: &CircuitBreaker) {
    b.try_acquire().unwrap().success();
}

#[test]
fn trips_on_failure_rate_after_minimum_calls() {
    let clock = ManualClock::new();
    let b = breaker(&clock, |b| {
        b.window(Window::Count(10))
            .minimum_calls(4)
            .failure_rate(0.5)
    });
    fail(&b);
    fail(&b);
    fail(&b);
    assert_eq!(
        b.state(),
        State::Closed,
        "below the minimum number of calls"
    );
    ok(&b);
    assert_eq!(b.state(), State::Closed, "successes never trip");
    fail(&b);
    assert_eq!(b.state(), State::Open);
    let r = b.try_acquire().unwrap_err();
    assert_eq!(r.state(), State::Open);
    assert_eq!(r.retry_after(), Some(Duration::from_secs(30)));
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after(),
        Some(Duration::from_secs(20))
    );
}

#[test]
fn open_becomes_half_open_without_a_call_and_probes_decide() {
    let clock = ManualClock::new();
    let b = breaker(&clock, |b| {
        b.window(Window::ConsecutiveFailures(2))
            .half_open_calls(2)
            .open_duration(OpenDuration::fixed(Duration::from_secs(5)))
    });
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), State::Open);
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "time alone moves open to half-open"
    );
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert_eq!(b.try_acquire().unwrap_err().state(), State::HalfOpen);
    p1.success();
    assert_eq!(b.state(), State::HalfOpen);
    p2.success();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn dropped_or_ignored_probe_gives_its_permit_back() {
    let clock = ManualClock::new();
    let b = breaker(&clock, |b| b.half_open_calls(1));
    b.open_for(Duration::ZERO);
    let p = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p);
    let p = b.try_acquire().unwrap();
    p.ignore();
    let p = b.try_acquire().unwrap();
    assert_eq!(b.snapshot().probes_in_flight, 1);
    p.failure();
    assert_eq!(b.state(), State::Open);
}

#[test]
fn open_duration_backs_off_and_resets_when_closed() {
    let clock = ManualClock::new();
    let b = breaker(&clock, |b| {
        b.window(Window::ConsecutiveFailures(1))
            .half_open_calls(1)
            .open_duration(OpenDuration::backoff(
                Duration::from_secs(1),
                Duration::from_secs(3),
            ))
    });
    let mut opens = Vec::new();
    fail(&b);
    for _ in 0..3 {
        opens.push(b.snapshot().retry_after.unwrap().as_secs());
        clock.advance(Duration::from_secs(10));
        fail(&b); // the probe fails: open again, longer
    }
    opens.push(b.snapshot().retry_after.unwrap().as_secs());
    assert_eq!(opens, [1, 2, 3, 3]);
    clock.advance(Duration::from_secs(10));
    ok(&b);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().trips, 0);
    fail(&b);
    assert_eq!(b.snapshot().retry_after, Some(Duration::from_secs(1)));
}

#[test]
fn max_wait_in_half_open_reopens_when_a_probe_hangs() {
    let clock = ManualClock::new();
    let b = breaker(&clock, |b| {
        b.half_open_calls(1)
            .max_wait_in_half_open(Some(Duration::from_secs(2)))
            .open_duration(OpenDuration::fixed(Duration::from_secs(1)))
    });
    b.open_for(Duration::ZERO);
    let hung = b.try_acquire().unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(b.state(), State::Open);
    clock.advance(Duration::from_secs(1));
    // The old probe's outcome belongs to an earlier half-open period and is dropped.
    hung.failure();
    assert_eq!(b.state(), State::HalfOpen);
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn slow_calls_trip_on_slow_rate() {
    let clock = ManualClock::new();
    let b = breaker(&clock, |b| {
        b.window(Window::Count(4))
            .minimum_calls(4)
            .slow_calls(Duration::from_millis(100), 0.5)
    });
    for d in [150, 10, 10, 150] {
        let p = b.try_acquire().unwrap();
        clock.advance(d * MS);
        p.success();
    }
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.snapshot().slow_calls, 2);
}

#[test]
fn forced_disabled_metrics_only_and_reset() {
    let clock = ManualClock::new();
    let events = Arc::new(StdMutex::new(Vec::new()));
    let seen = events.clone();
    let b = breaker(&clock, |b| {
        b.window(Window::ConsecutiveFailures(1))
            .on_event(move |e| seen.lock().unwrap().push(e.clone()))
    });
    b.force_open();
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), None);
    clock.advance(Duration::from_secs(3_600));
    assert_eq!(b.state(), State::ForcedOpen);
    b.disable();
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), State::Disabled);
    b.metrics_only();
    fail(&b);
    assert_eq!(b.state(), State::MetricsOnly);
    assert_eq!(b.snapshot().consecutive_failures, 1);
    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().consecutive_failures, 0);
    let events = events.lock().unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Rejected {
            state: State::ForcedOpen,
            ..
        }
    )));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ConsecutiveFailuresExceeded { .. }))
    );
    assert!(events.iter().any(|e| matches!(e, Event::Reset { .. })));
    let transitions: Vec<State> = events
        .iter()
        .filter_map(|e| match e {
            Event::StateTransition { to, .. } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(
        transitions,
        [
            State::ForcedOpen,
            State::Disabled,
            State::MetricsOnly,
            State::Closed
        ]
    );
}

#[test]
fn reconfigure_keeps_state_and_window() {
    let clock = ManualClock::new();
    let b = breaker(&clock, |b| b.window(Window::Count(10)).minimum_calls(100));
    for _ in 0..4 {
        fail(&b);
    }
    ok(&b);
    b.reconfigure(
        Config::builder()
            .window(Window::Count(5))
            .minimum_calls(5)
            .build()
            .unwrap(),
    );
    assert_eq!(b.snapshot().calls, 5);
    fail(&b);
    assert_eq!(
        b.state(),
        State::Open,
        "the kept failures count under the new thresholds"
    );
    b.reconfigure(Config::builder().window(Window::Time(10)).build().unwrap());
    assert_eq!(
        b.state(),
        State::Open,
        "the state survives a reconfiguration"
    );
}

#[test]
fn outcomes_of_calls_admitted_before_a_transition_are_dropped() {
    let clock = ManualClock::new();
    let b = breaker(&clock, |b| b.window(Window::ConsecutiveFailures(1)));
    let late = b.try_acquire().unwrap();
    fail(&b);
    b.reset();
    late.failure();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn clean_count_window_skips_recording_successes() {
    let clock = ManualClock::new();
    let b = breaker(&clock, |b| b.window(Window::Count(3)).minimum_calls(3));
    let clean = |b: &CircuitBreaker| b.inner.hot.word.load(Ordering::Relaxed) & CLEAN != 0;
    ok(&b);
    ok(&b);
    assert!(!clean(&b));
    ok(&b);
    assert!(
        clean(&b),
        "full of successes: further successes change nothing"
    );
    fail(&b);
    assert!(!clean(&b));
    for _ in 0..3 {
        ok(&b);
    }
    assert!(clean(&b));
    assert_eq!(b.snapshot().failures, 0);
}

// ----- the reference model -----

#[derive(Debug, Clone, Copy, PartialEq)]
enum MState {
    Closed,
    Open { until: u64 },
    HalfOpen { since: u64 },
    ForcedOpen,
    Disabled,
    MetricsOnly,
}

#[derive(Debug, Clone, Copy)]
struct MPermit {
    generation: u64,
    probe: bool,
    tracked: bool,
    /// Slow calls were tracked when it was admitted.
    timed: bool,
    start: u64,
}

/// A direct, slow restatement of the rules: every recorded call kept in a list.
#[derive(Debug)]
struct Model {
    config: Config,
    state: MState,
    generation: u64,
    trips: u32,
    /// (completion time ns, failure, slow) since the window was last emptied.
    records: Vec<(u64, bool, bool)>,
    in_flight: u32,
    probes: Vec<(bool, bool)>,
}

const SEC: u64 = 1_000_000_000;

impl Model {
    fn new(config: Config) -> Self {
        Self {
            config,
            state: MState::Closed,
            generation: 0,
            trips: 0,
            records: Vec::new(),
            in_flight: 0,
            probes: Vec::new(),
        }
    }

    fn slow_tracked(&self) -> bool {
        self.config.slow_call_duration.is_some()
            && !matches!(self.config.window, Window::ConsecutiveFailures(_))
    }

    fn go(&mut self, to: MState, now: u64) {
        self.generation += 1;
        match to {
            MState::Closed | MState::MetricsOnly => {
                if to == MState::Closed {
                    self.trips = 0;
                }
                self.records.clear();
            }
            MState::HalfOpen { .. } => {
                self.in_flight = 0;
                self.probes.clear();
            }
            _ => {}
        }
        let _ = now;
        self.state = to;
    }

    /// A new configuration: the records that were in the old window stay if the kind of
    /// window is the same; another kind starts empty.
    fn reconfigure(&mut self, config: Config, now: u64) {
        match (self.config.window, config.window) {
            (Window::Count(old), Window::Count(_)) => {
                let skip = self.records.len().saturating_sub(old as usize);
                self.records.drain(..skip);
            }
            (Window::Time(old), Window::Time(_)) => {
                self.records
                    .retain(|(t, _, _)| t / SEC + u64::from(old) > now / SEC);
            }
            (Window::ConsecutiveFailures(_), Window::ConsecutiveFailures(_)) => {}
            _ => self.records.clear(),
        }
        self.config = config;
    }

    fn trip(&mut self, now: u64) {
        self.trips += 1;
        let d = self.config.open_duration;
        let secs = (d.base.as_secs_f64() * d.multiplier.powi(self.trips as i32 - 1))
            .min(d.max.as_secs_f64());
        let until = now + Duration::from_secs_f64(secs).as_nanos() as u64;
        self.go(MState::Open { until }, now);
    }

    fn tick(&mut self, now: u64) {
        loop {
            match self.state {
                MState::Open { until } if now >= until => {
                    self.go(MState::HalfOpen { since: until }, now)
                }
                MState::HalfOpen { since } => {
                    if let Some(max) = self.config.max_wait_in_half_open
                        && now >= since + max.as_nanos() as u64
                    {
                        self.trip(now);
                    }
                    return;
                }
                _ => return,
            }
        }
    }

    fn state(&mut self, now: u64) -> State {
        self.tick(now);
        match self.state {
            MState::Closed => State::Closed,
            MState::Open { .. } => State::Open,
            MState::HalfOpen { .. } => State::HalfOpen,
            MState::ForcedOpen => State::ForcedOpen,
            MState::Disabled => State::Disabled,
            MState::MetricsOnly => State::MetricsOnly,
        }
    }

    fn acquire(&mut self, now: u64) -> Option<MPermit> {
        self.tick(now);
        let timed = self.slow_tracked();
        let permit = |probe, tracked| MPermit {
            generation: self.generation,
            probe,
            tracked,
            timed,
            start: now,
        };
        match self.state {
            MState::Closed | MState::MetricsOnly => Some(permit(false, true)),
            MState::Disabled => Some(permit(false, false)),
            MState::HalfOpen { .. } => {
                if self.in_flight + (self.probes.len() as u32) < self.config.half_open_calls {
                    self.in_flight += 1;
                    Some(permit(true, true))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn window(&self, now: u64) -> (u64, u64, u64, u32) {
        let recs: Vec<(u64, bool, bool)> = match self.config.window {
            Window::Count(n) => {
                let skip = self.records.len().saturating_sub(n as usize);
                self.records[skip..].to_vec()
            }
            Window::Time(n) => self
                .records
                .iter()
                .copied()
                .filter(|(t, _, _)| t / SEC + u64::from(n) > now / SEC)
                .collect(),
            Window::ConsecutiveFailures(_) => {
                let c = self.records.iter().rev().take_while(|r| r.1).count();
                return (0, 0, 0, c as u32);
            }
        };
        let f = recs.iter().filter(|r| r.1).count() as u64;
        let s = recs.iter().filter(|r| r.2).count() as u64;
        (recs.len() as u64, f, s, 0)
    }

    /// `outcome`: None = dropped, Some(None) = ignored, Some(Some(failure)).
    fn complete(&mut self, p: MPermit, outcome: Option<Option<bool>>, now: u64) {
        if !p.tracked || p.generation != self.generation {
            return;
        }
        let slow = p.timed
            && self.slow_tracked()
            && self
                .config
                .slow_call_duration
                .is_some_and(|d| now - p.start >= d.as_nanos() as u64);
        if p.probe {
            self.in_flight -= 1;
            let Some(Some(failure)) = outcome else { return };
            self.probes.push((failure, slow));
            let n = self.probes.len() as u32;
            if let Window::ConsecutiveFailures(_) = self.config.window {
                if failure {
                    self.trip(now);
                } else if n >= self.config.half_open_calls {
                    self.go(MState::Closed, now);
                }
                return;
            }
            if n >= self.config.half_open_calls {
                let f = self.probes.iter().filter(|p| p.0).count() as f64 / f64::from(n);
                let s = self.probes.iter().filter(|p| p.1).count() as f64 / f64::from(n);
                if f >= self.config.failure_rate
                    || (self.slow_tracked() && s >= self.config.slow_call_rate)
                {
                    self.trip(now);
                } else {
                    self.go(MState::Closed, now);
                }
            }
            return;
        }
        let Some(Some(failure)) = outcome else { return };
        self.records.push((now, failure, slow));
        if !(failure || slow) {
            return;
        }
        let (calls, f, s, consecutive) = self.window(now);
        let exceeded = match self.config.window {
            Window::ConsecutiveFailures(n) => consecutive >= n,
            Window::Count(n) | Window::Time(n) => {
                let min = if matches!(self.config.window, Window::Count(_)) {
                    self.config.minimum_calls.min(n)
                } else {
                    self.config.minimum_calls
                };
                calls > 0
                    && calls >= u64::from(min)
                    && (f as f64 / calls as f64 >= self.config.failure_rate
                        || (self.slow_tracked()
                            && s as f64 / calls as f64 >= self.config.slow_call_rate))
            }
        };
        if exceeded && self.state == MState::Closed {
            self.trip(now);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Acquire, run for `ms`, complete with the outcome (0 success, 1 failure, 2 ignored).
    Call {
        outcome: u8,
        ms: u64,
    },
    /// Acquire and hold the permit.
    Start,
    /// Complete a held permit (index modulo the number held): 0 success, 1 failure, 2 ignored, 3 drop.
    Finish {
        which: usize,
        outcome: u8,
    },
    Advance {
        ms: u64,
    },
    Reset,
    ForceOpen,
    Disable,
    MetricsOnly,
    OpenFor {
        ms: u64,
    },
    Reconfigure(Box<Config>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0u8..3, 0u64..300).prop_map(|(outcome, ms)| Op::Call { outcome, ms }),
        3 => Just(Op::Start),
        3 => (any::<usize>(), 0u8..4).prop_map(|(which, outcome)| Op::Finish { which, outcome }),
        4 => (0u64..4_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Reset),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
        1 => Just(Op::MetricsOnly),
        1 => (0u64..3_000).prop_map(|ms| Op::OpenFor { ms }),
        1 => config().prop_map(|c| Op::Reconfigure(Box::new(c))),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![
            (1u32..12).prop_map(Window::Count),
            (1u32..5).prop_map(Window::Time),
            (1u32..5).prop_map(Window::ConsecutiveFailures),
        ],
        0u32..8,
        prop_oneof![Just(0.25), Just(0.5), Just(1.0)],
        proptest::option::of(50u64..250),
        prop_oneof![Just(0.5), Just(1.0)],
        (0u64..2_000, 1u64..4, any::<bool>()),
        1u32..4,
        proptest::option::of(500u64..5_000),
    )
        .prop_map(
            |(window, min, fr, slow, sr, (base, mult, grow), half, wait)| {
                let base = Duration::from_millis(base);
                let open = if grow {
                    OpenDuration::backoff(base, base * 4).multiplier(mult as f64)
                } else {
                    OpenDuration::fixed(base)
                };
                let mut b = Config::builder()
                    .window(window)
                    .minimum_calls(min)
                    .failure_rate(fr)
                    .open_duration(open)
                    .half_open_calls(half)
                    .max_wait_in_half_open(wait.map(Duration::from_millis));
                if let Some(ms) = slow {
                    b = b.slow_calls(Duration::from_millis(ms), sr);
                }
                b.build().unwrap()
            },
        )
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// The breaker and the model see the same calls and clock; they must admit the same calls
    /// and be in the same state after every step, with the same window counts.
    #[test]
    fn breaker_agrees_with_reference_model(config in config(), ops in proptest::collection::vec(op(), 1..120)) {
        let clock = ManualClock::new();
        let b = CircuitBreaker::builder().clock(clock.clone()).config(config.clone()).build().unwrap();
        let mut m = Model::new(config);
        let mut held: Vec<(Permit<'_>, MPermit)> = Vec::new();
        let now = |c: &ManualClock| c.now().as_nanos() as u64;
        let to_outcome = |o: u8| match o { 0 => Outcome::Success, 1 => Outcome::Failure, _ => Outcome::Ignored };
        let to_model = |o: u8| match o { 0 => Some(Some(false)), 1 => Some(Some(true)), 2 => Some(None), _ => None };
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Call { outcome, ms } => {
                    let real = b.try_acquire();
                    let model = m.acquire(now(&clock));
                    prop_assert_eq!(real.is_ok(), model.is_some(), "admission at step {}", step);
                    clock.advance(Duration::from_millis(ms));
                    if let (Ok(p), Some(mp)) = (real, model) {
                        p.record(to_outcome(outcome));
                        m.complete(mp, to_model(outcome), now(&clock));
                    }
                }
                Op::Start => {
                    let real = b.try_acquire();
                    let model = m.acquire(now(&clock));
                    prop_assert_eq!(real.is_ok(), model.is_some(), "admission at step {}", step);
                    if let (Ok(p), Some(mp)) = (real, model) {
                        held.push((p, mp));
                    }
                }
                Op::Finish { which, outcome } => {
                    if !held.is_empty() {
                        let (p, mp) = held.swap_remove(which % held.len());
                        if outcome == 3 { drop(p) } else { p.record(to_outcome(outcome)) }
                        m.complete(mp, to_model(outcome), now(&clock));
                    }
                }
                Op::Advance { ms } => clock.advance(Duration::from_millis(ms)),
                Op::Reset => { b.reset(); m.trips = 0; m.go(MState::Closed, now(&clock)); }
                Op::ForceOpen => { b.force_open(); m.go(MState::ForcedOpen, now(&clock)); }
                Op::Disable => { b.disable(); m.go(MState::Disabled, now(&clock)); }
                Op::MetricsOnly => { b.metrics_only(); m.go(MState::MetricsOnly, now(&clock)); }
                Op::Reconfigure(c) => {
                    b.reconfigure((*c).clone());
                    m.reconfigure(*c, now(&clock));
                }
                Op::OpenFor { ms } => {
                    b.open_for(Duration::from_millis(ms));
                    let until = now(&clock) + ms * 1_000_000;
                    m.go(MState::Open { until }, now(&clock));
                }
            }
            let t = now(&clock);
            prop_assert_eq!(b.state(), m.state(t), "state after step {}", step);
            if matches!(m.state, MState::Closed | MState::MetricsOnly) {
                let s = b.snapshot();
                let (calls, failures, slow, consecutive) = m.window(t);
                prop_assert_eq!((s.calls, s.failures, s.slow_calls, s.consecutive_failures), (calls, failures, slow, consecutive), "window after step {}", step);
            }
        }
    }
}
