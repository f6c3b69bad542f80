//! A framework-free runner for consumers, saga steps and jobs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::begin::Begin;
use crate::error::{Error, RunError};
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::lease::{BeginOptions, Lease, RecoveryPoint};
use crate::policy::InFlightPolicy;
use crate::response::StoredResponse;
use crate::store::IdempotencyStore;

/// The result of [`Idempotency::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Run<T> {
    /// The operation's value, fresh or replayed.
    pub value: T,
    /// Whether it was replayed from an earlier execution.
    pub replayed: bool,
}

/// Runs operations at most once per key on any [`IdempotencyStore`].
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use counterfoil_idempotency::{Fingerprint, IdempotencyKey, Idempotency, InMemoryIdempotencyStore, Scope};
///
/// # tokio_test_block(async {
/// let idem = Idempotency::new(Arc::new(InMemoryIdempotencyStore::new()));
/// let key = IdempotencyKey::new(Scope::new("restaurant-7", "", "print_receipt")?, "order-42")?;
/// let fp = Fingerprint::of_bytes(b"order-42 total=1250 EUR");
/// let first = idem.run(&key, &fp, |_lease| async { Ok::<_, std::io::Error>(17_u32) }).await?;
/// let again = idem.run(&key, &fp, |_lease| async { Ok::<_, std::io::Error>(99_u32) }).await?;
/// assert_eq!((first.value, first.replayed), (17, false));
/// assert_eq!((again.value, again.replayed), (17, true));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # });
/// # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Idempotency {
    store: Arc<dyn IdempotencyStore>,
    opts: BeginOptions,
    in_flight: InFlightPolicy,
}

/// Polls a key in flight until it is done or `bound` has passed.
///
/// Returns the last answer (`InFlight` if the bound ran out).
pub(crate) async fn wait_for(
    store: &dyn IdempotencyStore,
    key: &IdempotencyKey,
    fp: &Fingerprint,
    opts: &BeginOptions,
    bound: Duration,
    mut retry_after: Duration,
) -> Result<Begin, Error> {
    let deadline = tokio::time::Instant::now() + bound;
    let mut step = Duration::from_millis(5);
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Begin::InFlight { retry_after });
        }
        let nap = step
            .min(retry_after)
            .min(deadline - now)
            .max(Duration::from_millis(1));
        tokio::time::sleep(nap).await;
        step = (step * 2).min(Duration::from_millis(250));
        match store.begin(key, fp, opts).await? {
            Begin::InFlight { retry_after: r } => retry_after = r,
            other => return Ok(other),
        }
    }
}

impl Idempotency {
    /// A runner with a 30 s lease, a 24 h TTL and [`InFlightPolicy::Reject`].
    pub fn new(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            store,
            opts: BeginOptions::default(),
            in_flight: InFlightPolicy::default(),
        }
    }

    /// Sets the lease duration. Default: 30 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.opts.lease = lease;
        self
    }

    /// Sets how long results are kept. Default: 24 h.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.opts.ttl = ttl;
        self
    }

    /// Sets the in-flight policy. Default: [`InFlightPolicy::Reject`].
    pub fn in_flight(mut self, policy: InFlightPolicy) -> Self {
        self.in_flight = policy;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn IdempotencyStore> {
        &self.store
    }

    /// Records a recovery point for the running operation (and extends its lease).
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] when another caller took the key over.
    ///
    /// # Cancel safety
    ///
    /// If cancelled, the checkpoint may or may not have been written.
    pub async fn checkpoint(&self, lease: &mut Lease, point: &RecoveryPoint) -> Result<(), Error> {
        self.store.checkpoint(lease, point).await
    }

    /// Runs `op` once for `key`: replays the stored value on a repeat,
    /// rejects (or waits, per the policy) while another run is in flight,
    /// and resumes a run whose holder died from its last recovery point
    /// (`op` receives the [`Lease`]; see [`Lease::recovery_point`]).
    ///
    /// A value is stored as JSON. If `op` fails the key is released, so a
    /// retry executes again (from the last recovery point, if any).
    ///
    /// # Errors
    ///
    /// [`RunError::Operation`] with `op`'s error; [`RunError::Idempotency`]
    /// with [`Error::InFlight`], [`Error::Mismatch`], [`Error::LeaseLost`]
    /// (`op` ran but another holder had taken over: its value was not
    /// stored) or a store error.
    ///
    /// # Cancel safety
    ///
    /// If cancelled while `op` runs, the key stays claimed until its lease
    /// runs out; the next run then takes over.
    pub async fn run<T, E, F, Fut>(
        &self,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        op: F,
    ) -> Result<Run<T>, RunError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut answer = self.store.begin(key, fp, &self.opts).await?;
        if let (Begin::InFlight { retry_after }, InFlightPolicy::Wait(bound)) =
            (&answer, self.in_flight)
        {
            answer = wait_for(&*self.store, key, fp, &self.opts, bound, *retry_after).await?;
        }
        let lease = match answer {
            Begin::Execute(lease) => lease,
            Begin::Replay(stored) => {
                let value = serde_json::from_slice(&stored.body)
                    .map_err(|e| Error::Corrupt(format!("stored value: {e}")))?;
                return Ok(Run {
                    value,
                    replayed: true,
                });
            }
            Begin::InFlight { retry_after } => {
                return Err(Error::InFlight { retry_after }.into());
            }
            Begin::Mismatch => return Err(Error::Mismatch.into()),
        };
        match op(lease.clone()).await {
            Ok(value) => {
                let stored = StoredResponse::json(200, &value)?;
                self.store.complete(&lease, &stored, self.opts.ttl).await?;
                Ok(Run {
                    value,
                    replayed: false,
                })
            }
            Err(e) => {
                if let Err(release) = self.store.release(&lease).await {
                    tracing::warn!(key = %lease.key(), error = %release, "could not release idempotency key");
                }
                Err(RunError::Operation(e))
            }
        }
    }
}
