//! The circuit breaker.

use std::fmt;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::call::Call;
use crate::clock::{Clock, MonotonicClock, to_nanos};
use crate::config::{Config, ConfigBuilder, OpenDuration, Window};
use crate::error::{BuildError, Rejected};
use crate::event::{Event, Listener, Pending};
use crate::outcome::{Classify, OkIsSuccess, Outcome};
use crate::permit::{OwnedPermit, Permit, Ticket};
use crate::snapshot::Snapshot;
use crate::state::State;
use crate::window::{Exceeded, Record, Totals, WindowState};

// Layout of the hot word: the state code, two flags, and a generation bumped on every
// transition so that outcomes of calls admitted under an older state are dropped.
const STATE_MASK: u64 = 0b111;
/// A fast success would not change the window: skip recording it.
const CLEAN: u64 = 1 << 3;
/// Slow calls are tracked: a permit notes its start time.
const TIMED: u64 = 1 << 4;
/// A time window: closed successes go to per-thread stripes, without the lock.
const STRIPED: u64 = 1 << 5;

/// Stripes of success counts for time windows; a thread always uses the same one.
const STRIPES: usize = 8;

/// Successes of one second counted by the threads that share this stripe, not yet folded
/// into the window. Alone in its cache line, so threads on other stripes never disturb it.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Stripe {
    /// The second (from 1) these successes belong to; 0 when empty.
    second: AtomicU64,
    successes: AtomicU64,
}

fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    INDEX.with(|i| *i)
}
const GEN_SHIFT: u32 = 8;

const CLOSED: u64 = State::Closed.code();
const OPEN: u64 = State::Open.code();
const HALF_OPEN: u64 = State::HalfOpen.code();
const FORCED_OPEN: u64 = State::ForcedOpen.code();
const DISABLED: u64 = State::Disabled.code();
const METRICS_ONLY: u64 = State::MetricsOnly.code();

fn generation(word: u64) -> u64 {
    word >> GEN_SHIFT
}

/// What every call reads and almost no call writes, alone in its cache line so that writes to
/// the lock next to it never disturb readers.
#[repr(align(64))]
#[derive(Debug)]
struct Hot {
    word: AtomicU64,
    /// While open: the clock reading (nanoseconds) at which the breaker becomes half-open.
    open_until: AtomicU64,
    /// The slow-call threshold in nanoseconds when tracked.
    slow_nanos: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Probes {
    in_flight: u32,
    completed: u32,
    failures: u32,
    slow: u32,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    window: WindowState,
    /// Trips in a row without closing in between; sets the open duration.
    trips: u32,
    probes: Probes,
}

pub(crate) struct Inner {
    hot: Hot,
    /// Itself, for the timers that make time-driven transitions happen on time.
    me: Weak<Inner>,
    shared: Mutex<Shared>,
    /// Made on first use of a time window.
    stripes: OnceLock<Box<[Stripe]>>,
    clock: Arc<dyn Clock>,
    name: Arc<str>,
    listener: Option<Listener>,
}

/// A circuit breaker. Cheap to clone: clones share one breaker.
///
/// The closed state's success path reads one atomic word and writes nothing shared; the
/// clock is read only when a configured feature needs it (see [`Clock`]).
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.peek_state())
            .finish_non_exhaustive()
    }
}

/// Lazily read clock: one read per operation at most.
struct Now<'a> {
    clock: &'a dyn Clock,
    nanos: Option<u64>,
}

impl<'a> Now<'a> {
    fn new(clock: &'a dyn Clock) -> Self {
        Self { clock, nanos: None }
    }

    fn get(&mut self) -> u64 {
        *self.nanos.get_or_insert_with(|| to_nanos(self.clock.now()))
    }
}

impl Inner {
    fn new(
        me: Weak<Inner>,
        name: Arc<str>,
        config: Config,
        clock: Arc<dyn Clock>,
        listener: Option<Listener>,
    ) -> Self {
        let (timed, slow) = slow_tracking(&config);
        let window = WindowState::new(config.window);
        let mut word = CLOSED;
        if timed {
            word |= TIMED;
        }
        if window.success_is_noop() {
            word |= CLEAN;
        }
        let stripes = OnceLock::new();
        if let Window::Time(_) = config.window {
            word |= STRIPED;
            stripes.get_or_init(new_stripes);
        }
        Self {
            stripes,
            me,
            hot: Hot {
                word: AtomicU64::new(word),
                open_until: AtomicU64::new(0),
                slow_nanos: AtomicU64::new(slow),
            },
            shared: Mutex::new(Shared {
                config,
                window,
                trips: 0,
                probes: Probes::default(),
            }),
            clock,
            name,
            listener,
        }
    }

    /// Emits the gathered events and sets the timer a time-driven transition needs.
    fn finish(&self, pending: Pending) {
        if let Some(at) = pending.wake_at {
            self.wake_at(at);
        }
        pending.emit(self.listener.as_ref());
    }

    /// Within a tokio runtime and with a clock whose time passes on its own, makes the
    /// transition due at `at` happen then, even if nobody calls or looks.
    fn wake_at(&self, at: u64) {
        if !self.clock.is_real_time() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let delay = Duration::from_nanos(at.saturating_sub(self.now_nanos()));
        let me = self.me.clone();
        handle.spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(inner) = me.upgrade() {
                inner.current_state();
            }
        });
    }

    fn now_nanos(&self) -> u64 {
        to_nanos(self.clock.now())
    }

    fn rejected(&self, state: State, retry_after: Option<Duration>) -> Rejected {
        crate::event::emit(
            self.listener.as_ref(),
            &Event::Rejected {
                breaker: self.name.clone(),
                state,
                retry_after,
            },
        );
        Rejected {
            name: self.name.clone(),
            state,
            retry_after,
        }
    }

    /// Admits a call or says why not. The closed path is one atomic load (plus a clock read
    /// when slow calls are tracked).
    #[inline]
    pub(crate) fn acquire(&self) -> Result<Ticket, Rejected> {
        let word = self.hot.word.load(Ordering::Acquire);
        match word & STATE_MASK {
            CLOSED | METRICS_ONLY => Ok(Ticket {
                word,
                start: if word & TIMED != 0 {
                    self.now_nanos()
                } else {
                    0
                },
            }),
            DISABLED => Ok(Ticket { word, start: 0 }),
            _ => self.acquire_slow(),
        }
    }

    #[cold]
    fn acquire_slow(&self) -> Result<Ticket, Rejected> {
        let mut now = Now::new(&*self.clock);
        let word = self.hot.word.load(Ordering::Acquire);
        match word & STATE_MASK {
            FORCED_OPEN => return Err(self.rejected(State::ForcedOpen, None)),
            OPEN => {
                let until = self.hot.open_until.load(Ordering::Acquire);
                let t = now.get();
                if t < until {
                    return Err(self.rejected(State::Open, Some(Duration::from_nanos(until - t))));
                }
            }
            _ => {}
        }
        let mut pending = Pending::default();
        let result = {
            let mut s = self.shared.lock();
            self.advance_time(&mut s, &mut now, &mut pending);
            let word = self.hot.word.load(Ordering::Acquire);
            match word & STATE_MASK {
                CLOSED | METRICS_ONLY | DISABLED => Ok(Ticket {
                    word,
                    start: if word & TIMED != 0 { now.get() } else { 0 },
                }),
                HALF_OPEN => {
                    let limit = s.config.half_open_calls;
                    let p = &mut s.probes;
                    if p.in_flight + p.completed < limit {
                        p.in_flight += 1;
                        Ok(Ticket {
                            word,
                            start: if word & TIMED != 0 { now.get() } else { 0 },
                        })
                    } else {
                        Err((State::HalfOpen, None))
                    }
                }
                OPEN => {
                    let until = self.hot.open_until.load(Ordering::Acquire);
                    Err((
                        State::Open,
                        Some(Duration::from_nanos(until.saturating_sub(now.get()))),
                    ))
                }
                _ => Err((State::ForcedOpen, None)),
            }
        };
        self.finish(pending);
        result.map_err(|(state, retry_after)| self.rejected(state, retry_after))
    }

    /// Records a finished call. The closed success path reads the hot word and returns.
    #[inline]
    pub(crate) fn complete(&self, ticket: Ticket, outcome: Outcome) {
        match ticket.word & STATE_MASK {
            DISABLED => {}
            CLOSED | METRICS_ONLY => {
                if outcome == Outcome::Ignored {
                    return;
                }
                let current = self.hot.word.load(Ordering::Acquire);
                let t = if (ticket.word | current) & (TIMED | STRIPED) != 0 {
                    self.now_nanos()
                } else {
                    0
                };
                let slow = ticket.word & TIMED != 0 && self.is_slow(ticket.start, t);
                if outcome == Outcome::Success
                    && !slow
                    && generation(current) == generation(ticket.word)
                {
                    if current & CLEAN != 0 {
                        return;
                    }
                    if current & STRIPED != 0 && self.stripe_success(t) {
                        return;
                    }
                }
                self.complete_slow(
                    ticket,
                    Some(Record {
                        failure: outcome == Outcome::Failure,
                        slow,
                    }),
                );
            }
            _ => {
                let record = match outcome {
                    Outcome::Ignored => None,
                    _ => Some(Record {
                        failure: outcome == Outcome::Failure,
                        slow: ticket.word & TIMED != 0
                            && self.is_slow(ticket.start, self.now_nanos()),
                    }),
                };
                self.complete_slow(ticket, record);
            }
        }
    }

    /// A call given up before it finished: a half-open probe gives its permit back.
    #[inline]
    pub(crate) fn cancel(&self, ticket: Ticket) {
        if ticket.word & STATE_MASK == HALF_OPEN {
            self.complete_slow(ticket, None);
        }
    }

    fn is_slow(&self, start: u64, now: u64) -> bool {
        let limit = self.hot.slow_nanos.load(Ordering::Relaxed);
        limit != 0 && now.saturating_sub(start) >= limit
    }

    /// Counts a closed success of a time window in this thread's stripe, if the stripe is
    /// already counting the current second; `false` sends it to the locked path.
    #[inline]
    fn stripe_success(&self, now: u64) -> bool {
        let Some(stripe) = self.stripes.get().and_then(|s| s.get(stripe_index())) else {
            return false;
        };
        if stripe.second.load(Ordering::Acquire) == now / 1_000_000_000 + 1 {
            stripe.successes.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Moves every stripe's successes into the window. With the lock.
    ///
    /// A stripe keeps its second, so its thread goes on counting without the lock; an
    /// increment racing with the fold stays in the stripe for the next fold.
    fn fold_stripes(&self, s: &mut Shared) {
        let Some(stripes) = self.stripes.get() else {
            return;
        };
        for stripe in stripes.iter() {
            let second = stripe.second.load(Ordering::Acquire);
            if second != 0 {
                let n = stripe.successes.swap(0, Ordering::AcqRel);
                s.window.add_successes(second, n);
            }
        }
    }

    /// Points this thread's stripe at the current second, so its next successes skip the lock.
    fn claim_stripe(&self, now: u64) {
        if let Some(stripe) = self.stripes.get().and_then(|s| s.get(stripe_index())) {
            stripe
                .second
                .store(now / 1_000_000_000 + 1, Ordering::Release);
        }
    }

    #[cold]
    fn complete_slow(&self, ticket: Ticket, record: Option<Record>) {
        let mut now = Now::new(&*self.clock);
        let mut pending = Pending::default();
        {
            let mut s = self.shared.lock();
            let word = self.hot.word.load(Ordering::Acquire);
            if generation(word) != generation(ticket.word) {
                // Admitted under a state that has since ended: its outcome belongs to no window.
                return;
            }
            match word & STATE_MASK {
                CLOSED | METRICS_ONLY => {
                    if let Some(r) = record {
                        self.record_closed(&mut s, r, &mut now, &mut pending);
                    }
                }
                HALF_OPEN => self.record_probe(&mut s, record, &mut now, &mut pending),
                _ => {}
            }
        }
        self.finish(pending);
    }

    fn record_closed(&self, s: &mut Shared, r: Record, now: &mut Now<'_>, pending: &mut Pending) {
        let striped = self.hot.word.load(Ordering::Acquire) & STRIPED != 0;
        if striped {
            self.fold_stripes(s);
        }
        s.window.record(r, || Duration::from_nanos(now.get()));
        if striped && !r.failure && !r.slow {
            self.claim_stripe(now.get());
        }
        if r.failure || r.slow {
            let totals = s.window.totals(|| Duration::from_nanos(now.get()));
            if let Some(ex) = totals.exceeded(&s.config) {
                pending.push(self.exceeded_event(ex));
                if self.hot.word.load(Ordering::Acquire) & STATE_MASK == CLOSED {
                    self.transition(s, State::Open, now, None, pending);
                    return;
                }
            }
        }
        self.refresh_clean(s);
    }

    fn record_probe(
        &self,
        s: &mut Shared,
        record: Option<Record>,
        now: &mut Now<'_>,
        pending: &mut Pending,
    ) {
        let p = &mut s.probes;
        p.in_flight = p.in_flight.saturating_sub(1);
        let Some(r) = record else { return };
        p.completed += 1;
        p.failures += u32::from(r.failure);
        p.slow += u32::from(r.slow);
        let p = *p;
        if let Window::ConsecutiveFailures(_) = s.config.window {
            if r.failure {
                pending.push(self.exceeded_event(Exceeded::ConsecutiveFailures(p.failures)));
                self.transition(s, State::Open, now, None, pending);
            } else if p.completed >= s.config.half_open_calls {
                self.transition(s, State::Closed, now, None, pending);
            }
            return;
        }
        if p.completed >= s.config.half_open_calls {
            let totals = Totals {
                calls: u64::from(p.completed),
                failures: u64::from(p.failures),
                slow: u64::from(p.slow),
                consecutive_failures: 0,
            };
            if let Some(ex) = totals.rates_exceeded(&s.config, 1) {
                pending.push(self.exceeded_event(ex));
                self.transition(s, State::Open, now, None, pending);
            } else {
                self.transition(s, State::Closed, now, None, pending);
            }
        }
    }

    fn exceeded_event(&self, ex: Exceeded) -> Event {
        let breaker = self.name.clone();
        match ex {
            Exceeded::FailureRate(rate) => Event::FailureRateExceeded { breaker, rate },
            Exceeded::SlowCallRate(rate) => Event::SlowCallRateExceeded { breaker, rate },
            Exceeded::ConsecutiveFailures(failures) => {
                Event::ConsecutiveFailuresExceeded { breaker, failures }
            }
        }
    }

    /// Sets or clears the clean flag in place (no new generation).
    fn refresh_clean(&self, s: &Shared) {
        let word = self.hot.word.load(Ordering::Acquire);
        let clean =
            matches!(word & STATE_MASK, CLOSED | METRICS_ONLY) && s.window.success_is_noop();
        let new = if clean { word | CLEAN } else { word & !CLEAN };
        if new != word {
            self.hot.word.store(new, Ordering::Release);
        }
    }

    /// Moves to `to`; `open_for` overrides the configured open duration. Call with the lock held.
    fn transition(
        &self,
        s: &mut Shared,
        to: State,
        now: &mut Now<'_>,
        open_for: Option<Duration>,
        pending: &mut Pending,
    ) {
        let word = self.hot.word.load(Ordering::Acquire);
        let from = State::from_code(word & STATE_MASK);
        match to {
            State::Open => {
                let d = match open_for {
                    Some(d) => d,
                    None => {
                        s.trips = s.trips.saturating_add(1);
                        let jitter = if s.config.open_duration.jitter > 0.0 {
                            rand::random::<f64>()
                        } else {
                            0.0
                        };
                        s.config.open_duration.for_trip(s.trips, jitter)
                    }
                };
                let until = now.get().saturating_add(to_nanos(d));
                self.hot.open_until.store(until, Ordering::Release);
                pending.wake_at = Some(until);
            }
            State::HalfOpen => {
                s.probes = Probes::default();
                pending.wake_at = s.config.max_wait_in_half_open.map(|max| {
                    self.hot
                        .open_until
                        .load(Ordering::Acquire)
                        .saturating_add(to_nanos(max))
                });
            }
            State::Closed | State::MetricsOnly => {
                if to == State::Closed {
                    s.trips = 0;
                }
                // Empty the stripes, then the window.
                self.fold_stripes(s);
                s.window = WindowState::new(s.config.window);
            }
            State::ForcedOpen | State::Disabled => {}
        }
        let mut new =
            ((generation(word) + 1) << GEN_SHIFT) | to.code() | (word & (TIMED | STRIPED));
        if matches!(to, State::Closed | State::MetricsOnly) && s.window.success_is_noop() {
            new |= CLEAN;
        }
        self.hot.word.store(new, Ordering::Release);
        if from != to {
            pending.push(Event::StateTransition {
                breaker: self.name.clone(),
                from,
                to,
            });
        }
    }

    /// The transitions time alone makes: open → half-open when the open duration is over,
    /// half-open → open when the probes took longer than the maximum wait.
    fn advance_time(&self, s: &mut Shared, now: &mut Now<'_>, pending: &mut Pending) {
        let word = self.hot.word.load(Ordering::Acquire);
        match word & STATE_MASK {
            OPEN if now.get() >= self.hot.open_until.load(Ordering::Acquire) => {
                self.transition(s, State::HalfOpen, now, None, pending);
                self.advance_time(s, now, pending);
            }
            HALF_OPEN => {
                // Half-open began when the open duration ended.
                let since = self.hot.open_until.load(Ordering::Acquire);
                if let Some(max) = s.config.max_wait_in_half_open
                    && now.get() >= since.saturating_add(to_nanos(max))
                {
                    self.transition(s, State::Open, now, None, pending);
                }
            }
            _ => {}
        }
    }

    fn current_state(&self) -> State {
        let word = self.hot.word.load(Ordering::Acquire);
        match word & STATE_MASK {
            OPEN | HALF_OPEN => {
                let mut now = Now::new(&*self.clock);
                let mut pending = Pending::default();
                let state = {
                    let mut s = self.shared.lock();
                    self.advance_time(&mut s, &mut now, &mut pending);
                    State::from_code(self.hot.word.load(Ordering::Acquire) & STATE_MASK)
                };
                self.finish(pending);
                state
            }
            code => State::from_code(code),
        }
    }

    fn set_state(&self, to: State, open_for: Option<Duration>, reset: bool) {
        let mut now = Now::new(&*self.clock);
        let mut pending = Pending::default();
        {
            let mut s = self.shared.lock();
            if reset {
                s.trips = 0;
                pending.push(Event::Reset {
                    breaker: self.name.clone(),
                });
            }
            self.transition(&mut s, to, &mut now, open_for, &mut pending);
        }
        self.finish(pending);
    }

    fn snapshot(&self) -> Snapshot {
        let state = self.current_state();
        let mut now = Now::new(&*self.clock);
        let mut s = self.shared.lock();
        self.fold_stripes(&mut s);
        let totals = s.window.totals(|| Duration::from_nanos(now.get()));
        let retry_after = (state == State::Open).then(|| {
            Duration::from_nanos(
                self.hot
                    .open_until
                    .load(Ordering::Acquire)
                    .saturating_sub(now.get()),
            )
        });
        Snapshot {
            name: self.name.clone(),
            state,
            calls: totals.calls,
            failures: totals.failures,
            slow_calls: totals.slow,
            failure_rate: totals.failure_rate(),
            slow_call_rate: totals.slow_call_rate(),
            consecutive_failures: totals.consecutive_failures,
            retry_after,
            probes_in_flight: s.probes.in_flight,
            probes_completed: s.probes.completed,
            trips: s.trips,
        }
    }

    fn reconfigure(&self, config: Config) {
        let mut now = Now::new(&*self.clock);
        let mut s = self.shared.lock();
        self.fold_stripes(&mut s);
        s.window
            .reshape(config.window, || Duration::from_nanos(now.get()));
        let striped = matches!(config.window, Window::Time(_));
        if striped {
            self.stripes.get_or_init(new_stripes);
        }
        let (timed, slow) = slow_tracking(&config);
        s.config = config;
        self.hot.slow_nanos.store(slow, Ordering::Relaxed);
        let word = self.hot.word.load(Ordering::Acquire);
        let word = if timed { word | TIMED } else { word & !TIMED };
        let word = if striped {
            word | STRIPED
        } else {
            word & !STRIPED
        };
        self.hot.word.store(word, Ordering::Release);
        self.refresh_clean(&s);
    }
}

fn new_stripes() -> Box<[Stripe]> {
    (0..STRIPES).map(|_| Stripe::default()).collect()
}

/// Whether permits must note their start, and the slow threshold in nanoseconds (0: none).
fn slow_tracking(config: &Config) -> (bool, u64) {
    match (config.slow_call_duration, config.window) {
        (_, Window::ConsecutiveFailures(_)) | (None, _) => (false, 0),
        (Some(d), _) => (true, to_nanos(d).max(1)),
    }
}

impl CircuitBreaker {
    /// A breaker named `name` with the default [`Config`] and the system clock.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self::from_parts(
            name.into(),
            Config::default(),
            Arc::new(MonotonicClock::new()),
            None,
        )
    }

    /// A builder: name, configuration, clock and event listener.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            name: Arc::from("default"),
            config: Config::builder(),
            clock: None,
            listener: None,
        }
    }

    pub(crate) fn from_parts(
        name: Arc<str>,
        config: Config,
        clock: Arc<dyn Clock>,
        listener: Option<Listener>,
    ) -> Self {
        Self {
            inner: Arc::new_cyclic(|me| Inner::new(me.clone(), name, config, clock, listener)),
        }
    }

    /// The breaker's name, as given in events and metrics.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Runs `f` if the breaker admits it, and records `Ok` as a success and `Err` as a failure.
    ///
    /// The permit is asked for when the returned future is first polled.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`](crate::Error::Rejected) without running `f` when the breaker refuses the call;
    /// [`Error::Inner`](crate::Error::Inner) with `f`'s error otherwise.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future before it finishes records nothing and gives a half-open
    /// probe permit back.
    #[inline]
    pub fn call<T, E, F>(&self, f: F) -> Call<'_, F, OkIsSuccess>
    where
        F: Future<Output = Result<T, E>>,
    {
        Call::new(&self.inner, f, OkIsSuccess)
    }

    /// Like [`CircuitBreaker::call`], with `classify` deciding what counts as a failure.
    ///
    /// # Errors
    ///
    /// As [`CircuitBreaker::call`].
    ///
    /// # Cancel safety
    ///
    /// As [`CircuitBreaker::call`].
    #[inline]
    pub fn call_classified<T, E, F, C>(&self, f: F, classify: C) -> Call<'_, F, C>
    where
        F: Future<Output = Result<T, E>>,
        C: Classify<T, E>,
    {
        Call::new(&self.inner, f, classify)
    }

    /// Asks to make one call; record its outcome on the returned permit.
    ///
    /// A permit dropped without an outcome (the call was cancelled) records nothing and gives a
    /// half-open probe slot back.
    ///
    /// # Errors
    ///
    /// [`Rejected`] when the breaker is open, forced open, or half-open with every probe taken.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        self.inner.acquire().map(|t| Permit::new(&self.inner, t))
    }

    /// Like [`CircuitBreaker::try_acquire`], for a permit that outlives the borrow (a spawned
    /// task, a tower response future).
    ///
    /// # Errors
    ///
    /// As [`CircuitBreaker::try_acquire`].
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        self.inner
            .acquire()
            .map(|t| OwnedPermit::new(self.inner.clone(), t))
    }

    /// The state now. Time-driven transitions (open → half-open, half-open → open after the
    /// maximum wait) happen here too, so an idle breaker reports the truth without a call.
    pub fn state(&self) -> State {
        self.inner.current_state()
    }

    /// State, window counts, rates and probes, as one consistent reading.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.snapshot()
    }

    /// Opens the breaker for `d`, then half-open as usual.
    pub fn open_for(&self, d: Duration) {
        self.inner.set_state(State::Open, Some(d), false);
    }

    /// Rejects every call until another state is set.
    pub fn force_open(&self) {
        self.inner.set_state(State::ForcedOpen, None, false);
    }

    /// Admits every call and records nothing until another state is set.
    pub fn disable(&self) {
        self.inner.set_state(State::Disabled, None, false);
    }

    /// Admits and records every call, emits threshold events, never opens.
    pub fn metrics_only(&self) {
        self.inner.set_state(State::MetricsOnly, None, false);
    }

    /// Closed, with an empty window and the trip count at zero.
    pub fn reset(&self) {
        self.inner.set_state(State::Closed, None, true);
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.inner.shared.lock().config.clone()
    }

    /// Replaces the configuration, keeping the state, the trip count and what of the window
    /// still fits (see [`Window`]); takes effect with the next call.
    pub fn reconfigure(&self, config: Config) {
        self.inner.reconfigure(config);
    }

    /// The state as last recorded, without time-driven transitions, events or locks.
    pub(crate) fn peek_state(&self) -> State {
        State::from_code(self.inner.hot.word.load(Ordering::Acquire) & STATE_MASK)
    }

    #[cfg(test)]
    pub(crate) fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn strong_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }
}

/// Builds a [`CircuitBreaker`]; the configuration setters are those of [`ConfigBuilder`].
#[derive(Debug)]
pub struct CircuitBreakerBuilder {
    name: Arc<str>,
    config: ConfigBuilder,
    clock: Option<Arc<dyn Clock>>,
    listener: Option<Listener>,
}

impl CircuitBreakerBuilder {
    /// The name used in events, metrics and rejections. Default: `"default"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Starts from `config` (later setters change it).
    pub fn config(mut self, config: Config) -> Self {
        self.config = ConfigBuilder::from(config);
        self
    }

    /// See [`ConfigBuilder::window`].
    pub fn window(mut self, window: Window) -> Self {
        self.config = self.config.window(window);
        self
    }

    /// See [`ConfigBuilder::minimum_calls`].
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config = self.config.minimum_calls(n);
        self
    }

    /// See [`ConfigBuilder::failure_rate`].
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config = self.config.failure_rate(rate);
        self
    }

    /// See [`ConfigBuilder::slow_calls`].
    pub fn slow_calls(mut self, duration: Duration, rate: f64) -> Self {
        self.config = self.config.slow_calls(duration, rate);
        self
    }

    /// See [`ConfigBuilder::open_duration`].
    pub fn open_duration(mut self, d: OpenDuration) -> Self {
        self.config = self.config.open_duration(d);
        self
    }

    /// See [`ConfigBuilder::half_open_calls`].
    pub fn half_open_calls(mut self, n: u32) -> Self {
        self.config = self.config.half_open_calls(n);
        self
    }

    /// See [`ConfigBuilder::max_wait_in_half_open`].
    pub fn max_wait_in_half_open(mut self, d: Option<Duration>) -> Self {
        self.config = self.config.max_wait_in_half_open(d);
        self
    }

    /// The time source. Default: [`MonotonicClock`]. Use [`crate::TokioClock`] for tests with
    /// `tokio::time::pause()`, or [`crate::ManualClock`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// A shared time source.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Calls `f` with every [`Event`]. Default: events only go to `tracing`.
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.listener = Some(Listener::new(f));
        self
    }

    /// Sets a shared listener.
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Checks the configuration and makes the breaker.
    ///
    /// # Errors
    ///
    /// [`BuildError`] as [`ConfigBuilder::build`].
    pub fn build(self) -> Result<CircuitBreaker, BuildError> {
        let config = self.config.build()?;
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(MonotonicClock::new()));
        Ok(CircuitBreaker::from_parts(
            self.name,
            config,
            clock,
            self.listener,
        ))
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
