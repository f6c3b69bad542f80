//! Keyed breakers: one per printer, per acquirer, per host; created on demand, idle ones evicted.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::breaker::CircuitBreaker;
use crate::clock::{Clock, MonotonicClock, to_nanos};
use crate::config::Config;
use crate::error::BuildError;
use crate::event::{Event, Listener};
use crate::snapshot::Snapshot;
use crate::state::State;

struct Entry {
    breaker: CircuitBreaker,
    /// Clock reading (whole seconds) of the last `get`.
    last_used: AtomicU64,
}

struct Registry<K> {
    map: RwLock<HashMap<K, Entry>>,
    config: RwLock<Config>,
    clock: Arc<dyn Clock>,
    listener: Option<Listener>,
    idle_timeout: Option<Duration>,
    max_breakers: usize,
    last_sweep: AtomicU64,
}

/// Breakers by key, created on first use with one configuration, evicted when idle, bounded in
/// number. Cheap to clone: clones share the breakers.
///
/// Eviction only removes breakers that are closed and not held outside the registry, so an
/// open breaker keeps protecting its key while it is idle; when the bound is reached and nothing
/// idle can go, the least recently used breaker is removed.
pub struct BreakerRegistry<K> {
    inner: Arc<Registry<K>>,
}

impl<K> Clone for BreakerRegistry<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K> fmt::Debug for BreakerRegistry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("len", &self.inner.map.read().len())
            .field("max_breakers", &self.inner.max_breakers)
            .field("idle_timeout", &self.inner.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl<K> BreakerRegistry<K>
where
    K: Hash + Eq + Clone + fmt::Display,
{
    /// A builder.
    pub fn builder() -> BreakerRegistryBuilder<K> {
        BreakerRegistryBuilder {
            key: PhantomData,
            config: Config::default(),
            clock: None,
            listener: None,
            idle_timeout: Some(Duration::from_secs(3_600)),
            max_breakers: 100_000,
        }
    }

    fn now_secs(&self) -> u64 {
        self.inner.clock.now().as_secs()
    }

    /// The breaker for `key`, made on first use and named after the key.
    pub fn get(&self, key: &K) -> CircuitBreaker {
        let now = self.now_secs();
        {
            let map = self.inner.map.read();
            if let Some(e) = map.get(key) {
                // Written at most once a second per key, so lookups rarely write shared memory.
                if e.last_used.load(Ordering::Relaxed) != now {
                    e.last_used.store(now, Ordering::Relaxed);
                }
                return e.breaker.clone();
            }
        }
        self.sweep_if_due(now);
        let mut map = self.inner.map.write();
        if let Some(e) = map.get(key) {
            return e.breaker.clone();
        }
        if map.len() >= self.inner.max_breakers {
            self.evict_locked(&mut map, now, true);
        }
        let breaker = CircuitBreaker::from_parts(
            Arc::from(key.to_string()),
            self.inner.config.read().clone(),
            self.inner.clock.clone(),
            self.inner.listener.clone(),
        );
        map.insert(
            key.clone(),
            Entry {
                breaker: breaker.clone(),
                last_used: AtomicU64::new(now),
            },
        );
        breaker
    }

    /// The breaker for `key` if it exists, without making one.
    pub fn existing(&self, key: &K) -> Option<CircuitBreaker> {
        self.inner.map.read().get(key).map(|e| e.breaker.clone())
    }

    /// Removes the breaker for `key`.
    pub fn remove(&self, key: &K) -> Option<CircuitBreaker> {
        self.inner.map.write().remove(key).map(|e| e.breaker)
    }

    /// The number of breakers.
    pub fn len(&self) -> usize {
        self.inner.map.read().len()
    }

    /// Whether there is no breaker.
    pub fn is_empty(&self) -> bool {
        self.inner.map.read().is_empty()
    }

    /// A snapshot of every breaker, with its key (for a console showing each printer's state).
    pub fn snapshots(&self) -> Vec<(K, Snapshot)> {
        let entries: Vec<(K, CircuitBreaker)> = self
            .inner
            .map
            .read()
            .iter()
            .map(|(k, e)| (k.clone(), e.breaker.clone()))
            .collect();
        entries
            .into_iter()
            .map(|(k, b)| (k, b.snapshot()))
            .collect()
    }

    /// Applies `config` to every breaker (keeping their state) and to those made later.
    pub fn reconfigure(&self, config: Config) {
        *self.inner.config.write() = config.clone();
        let breakers: Vec<CircuitBreaker> = self
            .inner
            .map
            .read()
            .values()
            .map(|e| e.breaker.clone())
            .collect();
        for b in breakers {
            b.reconfigure(config.clone());
        }
    }

    /// Removes breakers idle for the idle timeout that are closed and not held elsewhere;
    /// returns how many went.
    pub fn evict_idle(&self) -> usize {
        let now = self.now_secs();
        let mut map = self.inner.map.write();
        self.evict_locked(&mut map, now, false)
    }

    fn sweep_if_due(&self, now: u64) {
        let Some(idle) = self.inner.idle_timeout else {
            return;
        };
        let every = (idle.as_secs() / 2).max(1);
        let last = self.inner.last_sweep.load(Ordering::Relaxed);
        if now >= last + every
            && self
                .inner
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.evict_idle();
        }
    }

    fn evict_locked(&self, map: &mut HashMap<K, Entry>, now: u64, make_room: bool) -> usize {
        let before = map.len();
        if let Some(idle) = self.inner.idle_timeout {
            let idle = idle.as_secs();
            map.retain(|_, e| {
                let idle_for = now.saturating_sub(e.last_used.load(Ordering::Relaxed));
                !(idle_for >= idle && evictable(&e.breaker))
            });
        }
        if make_room && map.len() >= self.inner.max_breakers {
            // Least recently used, preferring breakers that hold no state worth keeping.
            let victim = map
                .iter()
                .min_by_key(|(_, e)| (!evictable(&e.breaker), e.last_used.load(Ordering::Relaxed)))
                .map(|(k, _)| k.clone());
            if let Some(k) = victim {
                map.remove(&k);
            }
        }
        before - map.len()
    }
}

/// Closed (or disabled) and held by nobody else. Reads the state without locking the breaker
/// or running listeners, since the registry's lock is held.
fn evictable(b: &CircuitBreaker) -> bool {
    b.strong_count() == 1 && matches!(b.peek_state(), State::Closed | State::Disabled)
}

/// Builds a [`BreakerRegistry`].
pub struct BreakerRegistryBuilder<K> {
    key: PhantomData<fn() -> K>,
    config: Config,
    clock: Option<Arc<dyn Clock>>,
    listener: Option<Listener>,
    idle_timeout: Option<Duration>,
    max_breakers: usize,
}

impl<K> fmt::Debug for BreakerRegistryBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerRegistryBuilder")
            .field("config", &self.config)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_breakers", &self.max_breakers)
            .finish_non_exhaustive()
    }
}

impl<K> BreakerRegistryBuilder<K> {
    /// The configuration of every breaker. Default: [`Config::default`].
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The time source shared by all breakers. Default: [`MonotonicClock`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Calls `f` with every breaker's events ([`Event::breaker`] is the key).
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.listener = Some(Listener::new(f));
        self
    }

    /// Evicts closed breakers unused for this long (checked on lookups of new keys and by
    /// [`BreakerRegistry::evict_idle`]); `None` keeps them. Default: one hour.
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.idle_timeout = d;
        self
    }

    /// The most breakers kept at once. Default: 100,000.
    pub fn max_breakers(mut self, n: usize) -> Self {
        self.max_breakers = n;
        self
    }

    /// Makes the registry.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when `max_breakers` is 0 or the idle timeout is under one second.
    pub fn build(self) -> Result<BreakerRegistry<K>, BuildError> {
        if self.max_breakers == 0 {
            return Err(BuildError("a registry must hold at least one breaker"));
        }
        if self
            .idle_timeout
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return Err(BuildError("idle timeout must be at least one second"));
        }
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(MonotonicClock::new()));
        let start = to_nanos(clock.now()) / 1_000_000_000;
        Ok(BreakerRegistry {
            inner: Arc::new(Registry {
                map: RwLock::new(HashMap::new()),
                config: RwLock::new(self.config),
                clock,
                listener: self.listener,
                idle_timeout: self.idle_timeout,
                max_breakers: self.max_breakers,
                last_sweep: AtomicU64::new(start),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn registry(clock: &ManualClock, max: usize) -> BreakerRegistry<String> {
        BreakerRegistry::builder()
            .clock(clock.clone())
            .idle_timeout(Some(Duration::from_secs(60)))
            .max_breakers(max)
            .build()
            .unwrap()
    }

    #[test]
    fn same_key_same_breaker_named_after_key() {
        let clock = ManualClock::new();
        let r = registry(&clock, 10);
        let a = r.get(&"printer-1".to_owned());
        let b = r.get(&"printer-1".to_owned());
        assert!(a.ptr_eq(&b));
        assert_eq!(a.name(), "printer-1");
        assert!(!a.ptr_eq(&r.get(&"printer-2".to_owned())));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn idle_closed_breakers_are_evicted_open_ones_kept() {
        let clock = ManualClock::new();
        let r = registry(&clock, 10);
        r.get(&"idle".to_owned());
        r.get(&"open".to_owned()).force_open();
        let held = r.get(&"held".to_owned());
        clock.advance(Duration::from_secs(61));
        assert_eq!(r.evict_idle(), 1);
        assert!(r.existing(&"idle".to_owned()).is_none());
        assert!(r.existing(&"open".to_owned()).is_some());
        assert!(r.existing(&"held".to_owned()).is_some());
        drop(held);
        assert_eq!(r.evict_idle(), 1);
    }

    #[test]
    fn bound_is_kept_by_evicting_least_recently_used() {
        let clock = ManualClock::new();
        let r = registry(&clock, 3);
        for k in ["a", "b", "c"] {
            r.get(&k.to_owned());
            clock.advance(Duration::from_secs(1));
        }
        r.get(&"a".to_owned());
        r.get(&"d".to_owned());
        assert_eq!(r.len(), 3);
        assert!(r.existing(&"b".to_owned()).is_none());
        assert!(r.existing(&"a".to_owned()).is_some());
    }

    #[test]
    fn the_bound_holds_under_many_keys() {
        let clock = ManualClock::new();
        let r = registry(&clock, 50);
        for i in 0..1_000 {
            r.get(&format!("printer-{i}"));
            assert!(r.len() <= 50);
        }
        assert!(r.existing(&"printer-999".to_owned()).is_some());
    }

    #[test]
    fn threads_asking_for_one_key_share_one_breaker() {
        let clock = ManualClock::new();
        let r = registry(&clock, 10);
        let first = r.get(&"psp".to_owned());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    (0..1_000)
                        .map(|i| r.get(&if i % 2 == 0 { "psp" } else { "acquirer" }.to_owned()))
                        .filter(|b| b.name() == "psp")
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for b in h.join().unwrap() {
                assert!(b.ptr_eq(&first));
            }
        }
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn reconfigure_reaches_every_breaker() {
        let clock = ManualClock::new();
        let r = registry(&clock, 10);
        let b = r.get(&"x".to_owned());
        let c = Config::builder().minimum_calls(7).build().unwrap();
        r.reconfigure(c.clone());
        assert_eq!(b.config(), c);
        assert_eq!(r.get(&"y".to_owned()).config(), c);
        let snaps = r.snapshots();
        assert_eq!(snaps.len(), 2);
    }
}
