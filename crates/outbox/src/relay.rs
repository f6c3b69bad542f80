//! The relay: claims outbox rows, publishes them, acks them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::clock::{Clock, SystemClock, duration_ms};
use crate::error::BuildError;
use crate::publisher::Publisher;
use crate::stats::{self, AtomicStats, RelayStats};
use crate::store::{ClaimMode, ClaimRequest, Disposition, Failure, OutboxStore};
use crate::{Backoff, Error, OutboxMessage, OutboxNotifier};

/// What happens to a row once its message is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Retention {
    /// Delete it in the ack statement. Default.
    #[default]
    Delete,
    /// Keep it, marked delivered, for this long; housekeeping deletes it in batches.
    Keep(Duration),
}

#[derive(Debug, Clone)]
struct Config {
    mode: ClaimMode,
    batch_size: u32,
    lease: Duration,
    max_attempts: u32,
    backoff: Backoff,
    outage_backoff: Backoff,
    poll_min: Duration,
    poll_max: Duration,
    retention: Retention,
    housekeeping_interval: Duration,
    cleanup_batch: u32,
    workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: ClaimMode::Unordered,
            batch_size: 256,
            lease: Duration::from_secs(60),
            max_attempts: 10,
            backoff: Backoff::default(),
            outage_backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(10)),
            poll_min: Duration::from_millis(25),
            poll_max: Duration::from_secs(1),
            retention: Retention::Delete,
            housekeeping_interval: Duration::from_secs(10),
            cleanup_batch: 1_000,
            workers: 2,
        }
    }
}

/// Builds a [`Relay`]; see [`Relay::builder`].
#[derive(Debug)]
pub struct RelayBuilder {
    store: Arc<dyn OutboxStore>,
    publisher: Arc<dyn Publisher>,
    clock: Arc<dyn Clock>,
    notifier: OutboxNotifier,
    config: Config,
}

impl RelayBuilder {
    /// Unordered (default) or ordered per partition key.
    pub fn mode(mut self, mode: ClaimMode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Messages per claim. Default: 256.
    pub fn batch_size(mut self, n: u32) -> Self {
        self.config.batch_size = n;
        self
    }

    /// How long a claim is exclusive; must exceed the publisher's confirm
    /// timeout. A relay that dies holding a lease delays its messages by at
    /// most this. Default: 60 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// Failed attempts after which a message is dead-lettered. Broker
    /// outages do not count. Default: 10.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n;
        self
    }

    /// Delay between attempts of a failing message. Default: 200 ms doubling to 60 s, jittered.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Delay while the broker is unreachable. Default: 250 ms doubling to 10 s.
    pub fn outage_backoff(mut self, backoff: Backoff) -> Self {
        self.config.outage_backoff = backoff;
        self
    }

    /// Idle polling interval: starts at `min` after work, doubles up to `max`
    /// while idle. An in-process [`OutboxNotifier`] wakes the relay at once.
    /// Default: 25 ms to 1 s.
    pub fn poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.config.poll_min = min;
        self.config.poll_max = max;
        self
    }

    /// Delete delivered rows (default) or keep them for a while.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.config.retention = retention;
        self
    }

    /// How often to delete expired delivered rows and refresh the backlog gauges. Default: 10 s.
    pub fn housekeeping_interval(mut self, every: Duration) -> Self {
        self.config.housekeeping_interval = every;
        self
    }

    /// Rows deleted per cleanup statement. Default: 1000.
    pub fn cleanup_batch(mut self, n: u32) -> Self {
        self.config.cleanup_batch = n;
        self
    }

    /// Concurrent claim-publish-ack loops in this relay, so database and
    /// broker round trips overlap. Default: 2.
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = n;
        self
    }

    /// The clock for lease and retry times. Default: the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The notifier producers poke after commit. Default: a fresh one, see [`Relay::notifier`].
    pub fn notifier(mut self, notifier: OutboxNotifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] for a zero batch size, attempts or workers, a
    /// zero lease, or a polling minimum above its maximum.
    pub fn build(self) -> Result<Relay, BuildError> {
        let c = &self.config;
        if c.batch_size == 0 {
            return Err(BuildError::invalid("batch_size", "must be at least 1"));
        }
        if c.max_attempts == 0 {
            return Err(BuildError::invalid("max_attempts", "must be at least 1"));
        }
        if c.workers == 0 {
            return Err(BuildError::invalid("workers", "must be at least 1"));
        }
        if c.lease < Duration::from_millis(100) {
            return Err(BuildError::invalid("lease", "must be at least 100 ms"));
        }
        if c.poll_min > c.poll_max || c.poll_min.is_zero() {
            return Err(BuildError::invalid(
                "poll_interval",
                "min must be positive and at most max",
            ));
        }
        Ok(Relay {
            inner: Arc::new(Inner {
                store: self.store,
                publisher: self.publisher,
                clock: self.clock,
                notifier: self.notifier,
                config: self.config,
                stats: AtomicStats::default(),
            }),
        })
    }
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn OutboxStore>,
    publisher: Arc<dyn Publisher>,
    clock: Arc<dyn Clock>,
    notifier: OutboxNotifier,
    config: Config,
    stats: AtomicStats,
}

/// Moves messages from an [`OutboxStore`] to a [`Publisher`].
///
/// Each round claims a batch under a lease (committed at once), publishes it
/// outside any transaction, then acks the confirmed messages and records the
/// failures, both fenced by the lease token. Any number of relays, in any
/// number of processes, may share a store.
///
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

/// The outcome of one [`Relay::run_once`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BatchReport {
    /// Messages claimed.
    pub claimed: usize,
    /// Messages confirmed and acked.
    pub published: usize,
    /// Messages that failed and will be retried.
    pub retried: usize,
    /// Messages dead-lettered.
    pub dead_lettered: usize,
    /// Failures that were broker outages.
    pub outages: usize,
}

impl Relay {
    /// Starts building a relay from `store` to `publisher`.
    pub fn builder(store: Arc<dyn OutboxStore>, publisher: Arc<dyn Publisher>) -> RelayBuilder {
        RelayBuilder {
            store,
            publisher,
            clock: Arc::new(SystemClock),
            notifier: OutboxNotifier::new(),
            config: Config::default(),
        }
    }

    /// The notifier that wakes this relay; give it to producers.
    pub fn notifier(&self) -> &OutboxNotifier {
        &self.inner.notifier
    }

    /// Counters since this relay was built.
    pub fn stats(&self) -> RelayStats {
        self.inner.stats.snapshot()
    }

    /// Claims one batch, publishes it, acks and records failures.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the store fails. Publish failures are not
    /// errors: they are recorded on the rows.
    ///
    /// # Cancel safety
    ///
    /// Cancelling leaves the claimed messages leased until the lease expires;
    /// they are then published again (duplicates, never loss).
    pub async fn run_once(&self) -> Result<BatchReport, Error> {
        let inner = &self.inner;
        let c = &inner.config;
        let batch = inner
            .store
            .claim(ClaimRequest {
                batch_size: c.batch_size,
                lease: c.lease,
                mode: c.mode,
                now: inner.clock.now_ms(),
            })
            .await?;
        let mut report = BatchReport {
            claimed: batch.messages.len(),
            ..BatchReport::default()
        };
        if batch.messages.is_empty() {
            return Ok(report);
        }
        AtomicStats::add(&inner.stats.claimed, report.claimed as u64);
        let lease = batch.lease;
        let (claimed, msgs): (Vec<_>, Vec<OutboxMessage>) = batch
            .messages
            .into_iter()
            .map(|m| ((m.seq, m.attempts, m.created_at), m.message))
            .unzip();
        let started = Instant::now();
        let results = inner.publisher.publish(&msgs).await;
        metrics::histogram!(stats::PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
        let now = inner.clock.now_ms();

        let mut acked = Vec::with_capacity(msgs.len());
        let mut failures = Vec::new();
        for (i, &(seq, attempts, created_at)) in claimed.iter().enumerate() {
            let result = results.get(i).cloned().unwrap_or_else(|| {
                Err(crate::PublishError::Unavailable(
                    "publisher returned too few results".into(),
                ))
            });
            match result {
                Ok(()) => {
                    acked.push(seq);
                    metrics::histogram!(stats::DELIVERY_LAG_SECONDS)
                        .record((now - created_at).max(0) as f64 / 1000.0);
                    metrics::histogram!(stats::ATTEMPTS).record(f64::from(attempts + 1));
                }
                Err(e) => {
                    let reason = if e.is_outage() { "outage" } else { "message" };
                    metrics::counter!(stats::FAILED, "reason" => reason).increment(1);
                    let disposition = if e.is_outage() {
                        report.outages += 1;
                        Disposition::RetryAt {
                            at: now + duration_ms(c.outage_backoff.delay(1)),
                            count_attempt: false,
                        }
                    } else if e.is_permanent() || attempts + 1 >= c.max_attempts {
                        report.dead_lettered += 1;
                        metrics::histogram!(stats::ATTEMPTS).record(f64::from(attempts + 1));
                        Disposition::Dead
                    } else {
                        report.retried += 1;
                        Disposition::RetryAt {
                            at: now + duration_ms(c.backoff.delay(attempts + 1)),
                            count_attempt: true,
                        }
                    };
                    debug!(id = %msgs[i].id, error = %e, ?disposition, "publish failed");
                    failures.push(Failure {
                        seq,
                        error: e.to_string(),
                        disposition,
                    });
                }
            }
        }
        let retain = matches!(c.retention, Retention::Keep(_));
        let (acked_n, failed_n) = tokio::join!(
            async {
                if acked.is_empty() {
                    Ok(0)
                } else {
                    inner.store.ack(lease, &acked, now, retain).await
                }
            },
            async {
                if failures.is_empty() {
                    Ok(0)
                } else {
                    inner.store.fail(lease, &failures, now).await
                }
            }
        );
        let acked_n = acked_n?;
        let failed_n = failed_n?;
        report.published = acked.len();
        let lost = (acked.len() as u64 - acked_n.min(acked.len() as u64))
            + (failures.len() as u64 - failed_n.min(failures.len() as u64));
        if lost > 0 {
            warn!(
                lost,
                "lease expired before ack; messages will be published again"
            );
            AtomicStats::add(&inner.stats.lease_lost, lost);
        }
        AtomicStats::add(&inner.stats.published, acked.len() as u64);
        AtomicStats::add(&inner.stats.failed, failures.len() as u64);
        AtomicStats::add(&inner.stats.dead_lettered, report.dead_lettered as u64);
        metrics::counter!(stats::PUBLISHED).increment(acked.len() as u64);
        metrics::counter!(stats::DEAD_LETTERED).increment(report.dead_lettered as u64);
        Ok(report)
    }

    /// Runs batches until nothing is claimable now (delayed and backing-off
    /// messages stay). Returns how many messages were published.
    ///
    /// # Errors
    ///
    /// As for [`Relay::run_once`].
    ///
    /// # Cancel safety
    ///
    /// As for [`Relay::run_once`].
    pub async fn drain(&self) -> Result<u64, Error> {
        let mut total = 0;
        loop {
            let r = self.run_once().await?;
            total += r.published as u64;
            if r.claimed == 0 {
                return Ok(total);
            }
        }
    }

    /// Deletes expired delivered rows (when retaining) and refreshes the backlog gauges.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the store fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: each cleanup statement is atomic.
    pub async fn housekeeping(&self) -> Result<u64, Error> {
        let inner = &self.inner;
        let mut deleted = 0;
        if let Retention::Keep(keep) = inner.config.retention {
            let before = inner.clock.now_ms() - duration_ms(keep);
            loop {
                let n = inner
                    .store
                    .cleanup(before, inner.config.cleanup_batch)
                    .await?;
                deleted += n;
                if n < u64::from(inner.config.cleanup_batch) {
                    break;
                }
            }
        }
        let b = inner.store.backlog().await?;
        metrics::gauge!(stats::BACKLOG).set(b.pending as f64);
        metrics::gauge!(stats::DEAD).set(b.dead as f64);
        let age = b
            .oldest_created_at
            .map_or(0.0, |t| (inner.clock.now_ms() - t).max(0) as f64 / 1000.0);
        metrics::gauge!(stats::OLDEST_AGE).set(age);
        Ok(deleted)
    }

    /// Starts the workers and the housekeeping task on the current Tokio runtime.
    pub fn spawn(&self) -> RelayHandle {
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        self.spawn_into(&cancel, &mut tasks);
        RelayHandle { cancel, tasks }
    }

    /// Starts the workers and the housekeeping task in `tasks`, stopped by `cancel`.
    pub(crate) fn spawn_into(&self, cancel: &CancellationToken, tasks: &mut JoinSet<()>) {
        for _ in 0..self.inner.config.workers {
            let relay = self.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move { relay.worker(cancel).await });
        }
        let relay = self.clone();
        let hk_cancel = cancel.clone();
        tasks.spawn(async move {
            let every = relay.inner.config.housekeeping_interval;
            loop {
                if let Err(e) = relay.housekeeping().await {
                    warn!(error = %e, "outbox housekeeping failed");
                }
                tokio::select! {
                    () = hk_cancel.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    async fn worker(&self, cancel: CancellationToken) {
        let c = &self.inner.config;
        let mut idle = c.poll_min;
        let mut outages = 0u32;
        while !cancel.is_cancelled() {
            // Register interest before claiming, so a commit between an
            // empty claim and the wait is not missed.
            let notified = self.inner.notifier.inner().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = match self.run_once().await {
                Ok(r) if r.claimed > 0 && r.outages == r.claimed => {
                    outages += 1;
                    Some(c.outage_backoff.delay(outages))
                }
                Ok(r) if r.claimed > 0 => {
                    outages = 0;
                    idle = c.poll_min;
                    None
                }
                Ok(_) => {
                    let d = idle;
                    idle = (idle * 2).min(c.poll_max);
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = &mut notified => { idle = c.poll_min; }
                        () = tokio::time::sleep(d) => {}
                    }
                    None
                }
                Err(e) => {
                    outages += 1;
                    warn!(error = %e, "outbox claim failed");
                    Some(c.outage_backoff.delay(outages))
                }
            };
            if let Some(d) = wait {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(d) => {}
                }
            }
        }
    }
}

/// Running relay tasks; dropping it leaves them running.
#[derive(Debug)]
pub struct RelayHandle {
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl RelayHandle {
    #[cfg(feature = "postgres")]
    pub(crate) fn new(cancel: CancellationToken, tasks: JoinSet<()>) -> Self {
        Self { cancel, tasks }
    }

    /// Stops the relay after the batches in progress are acked, and waits for it.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// A token that stops the relay when cancelled.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}
