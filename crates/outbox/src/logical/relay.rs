//! The stream relay: reads the slot, publishes, diverts what cannot go now,
//! then advances the slot.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesOrdered;
use futures::{FutureExt as _, StreamExt as _};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions as _, Connection as _, Row as _};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::envelope::{self, Decoded};
use super::pgoutput::{self, Record};
use super::{Diverted, PgLogicalOutbox};
use crate::clock::duration_ms;
use crate::error::BuildError;
use crate::publisher::Publisher;
use crate::stats::{self, AtomicStats, RelayStats};
use crate::{
    Backoff, BatchReport, ClaimMode, Destination, Error, Headers, MessageId, OutboxMessage,
    OutboxNotifier, PgOutboxStore, Relay, RelayHandle,
};

#[derive(Debug, Clone)]
struct Config {
    mode: ClaimMode,
    batch_changes: u32,
    max_attempts: u32,
    backoff: Backoff,
    outage_backoff: Backoff,
    poll_min: Duration,
    poll_max: Duration,
    standby_interval: Duration,
    housekeeping_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: ClaimMode::Unordered,
            batch_changes: 1_000,
            max_attempts: 10,
            backoff: Backoff::default(),
            outage_backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(10)),
            poll_min: Duration::from_millis(5),
            poll_max: Duration::from_millis(500),
            standby_interval: Duration::from_secs(1),
            housekeeping_interval: Duration::from_secs(10),
        }
    }
}

/// Builds a [`LogicalRelay`]; see [`LogicalRelay::builder`].
#[derive(Debug)]
pub struct LogicalRelayBuilder {
    outbox: PgLogicalOutbox,
    table: PgOutboxStore,
    publisher: Arc<dyn Publisher>,
    notifier: OutboxNotifier,
    config: Config,
    password: Option<String>,
}

impl LogicalRelayBuilder {
    /// The password for the replication connection the spawned relay
    /// streams on (host, port, user and database come from the pool's
    /// connect options, which do not reveal their password). Default: none,
    /// for `trust` or `peer` authentication.
    pub fn replication_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Unordered (default), or ordered per partition key: a message whose
    /// key has an undelivered message in the table goes to the table behind it.
    pub fn mode(mut self, mode: ClaimMode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Most messages handed to the publisher at once. Streaming, a large
    /// transaction goes out in batches of this size, up to four in flight,
    /// and its commit is confirmed once all are delivered; [`run_once`]
    /// reads whole transactions, so one of its rounds may read more.
    /// Default: 1000.
    ///
    /// [`run_once`]: LogicalRelay::run_once
    pub fn batch_changes(mut self, n: u32) -> Self {
        self.config.batch_changes = n;
        self
    }

    /// Failed attempts after which a message is dead-lettered (by the table
    /// relay, once diverted). Default: 10.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n;
        self
    }

    /// Delay before a failed message is tried again. Default: 200 ms doubling to 60 s, jittered.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Delay while the broker or the database is unreachable. Default: 250 ms doubling to 10 s.
    pub fn outage_backoff(mut self, backoff: Backoff) -> Self {
        self.config.outage_backoff = backoff;
        self
    }

    /// Idle polling of the slot: from `min` after work, doubling to `max`
    /// while idle; the notifier wakes it at once. Default: 5 ms to 500 ms.
    pub fn poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.config.poll_min = min;
        self.config.poll_max = max;
        self
    }

    /// How often a relay that does not hold the slot tries to take it over. Default: 1 s.
    pub fn standby_interval(mut self, every: Duration) -> Self {
        self.config.standby_interval = every;
        self
    }

    /// How often the lag gauge is refreshed. Default: 10 s.
    pub fn housekeeping_interval(mut self, every: Duration) -> Self {
        self.config.housekeeping_interval = every;
        self
    }

    /// The notifier producers poke after commit. Default: a fresh one, see [`LogicalRelay::notifier`].
    pub fn notifier(mut self, notifier: OutboxNotifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// Checks the settings and builds the stream relay and its table relay.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] for zero batch or attempts, or a polling
    /// minimum above its maximum.
    pub fn build(self) -> Result<LogicalRelay, BuildError> {
        let c = &self.config;
        if c.batch_changes == 0 {
            return Err(BuildError::invalid("batch_changes", "must be at least 1"));
        }
        if c.poll_min > c.poll_max || c.poll_min.is_zero() {
            return Err(BuildError::invalid(
                "poll_interval",
                "min must be positive and at most max",
            ));
        }
        let table_relay = Relay::builder(Arc::new(self.table.clone()), self.publisher.clone())
            .mode(c.mode)
            .max_attempts(c.max_attempts)
            .backoff(c.backoff)
            .outage_backoff(c.outage_backoff)
            .clock(self.outbox.clock.clone())
            .workers(1)
            .build()?;
        Ok(LogicalRelay {
            inner: Arc::new(Inner {
                outbox: self.outbox,
                table: self.table,
                publisher: self.publisher,
                notifier: self.notifier,
                config: self.config,
                table_relay,
                stats: AtomicStats::default(),
                password: self.password,
            }),
        })
    }
}

#[derive(Debug)]
struct Inner {
    outbox: PgLogicalOutbox,
    table: PgOutboxStore,
    publisher: Arc<dyn Publisher>,
    notifier: OutboxNotifier,
    config: Config,
    table_relay: Relay,
    stats: AtomicStats,
    password: Option<String>,
}

/// Publishes the messages of a [`PgLogicalOutbox`].
///
/// [`LogicalRelay::spawn`] streams from the replication slot over a
/// replication connection (`START_REPLICATION … LOGICAL` with `pgoutput`),
/// so each WAL record is decoded once, as it commits. It publishes the
/// messages of the committed transactions that have arrived, writes what
/// cannot be published now into the outbox table, and only then confirms
/// their position to the server. A slot streams to one connection at a
/// time: other relays stand by and take over within
/// [`LogicalRelayBuilder::standby_interval`] once that connection ends. A
/// relay killed before it confirms makes the next one publish the same
/// messages again (duplicates, which the inbox absorbs), never lose them; so
/// does a database crash, because PostgreSQL saves a slot's position at
/// checkpoints. The spawned relay also runs a [`Relay`] over the table,
/// which delivers delayed messages and retries and dead-letters failed ones.
///
/// [`LogicalRelay::acquire`] and [`LogicalRelay::run_once`] drive the same
/// delivery by hand over an ordinary connection, with
/// `pg_logical_slot_peek_binary_changes` and `pg_replication_slot_advance`.
/// Each call decodes from the slot's restart point, which PostgreSQL moves
/// only now and then, so their cost grows with the WAL written meanwhile:
/// use them for tests and tools, and `spawn` for service.
///
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogicalRelay {
    inner: Arc<Inner>,
}

/// What happens to one message of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// To be published in this round.
    Publish,
    /// Not due yet: to the table.
    Delay,
    /// Behind an undelivered message of its key: to the table.
    Hold,
    /// Confirmed.
    Published,
    /// Failed: to the table, to be tried again later.
    Retry,
    /// Unreadable or refused for good: to the dead letters.
    Dead,
    /// The broker is unreachable: the round is read again.
    Outage,
}

#[derive(Debug)]
struct Item {
    message: Diverted,
    fate: Fate,
    wave: usize,
}

impl Item {
    fn new(d: Decoded, fate: Fate) -> Self {
        Self {
            message: Diverted::from(d),
            fate,
            wave: 0,
        }
    }

    fn key(&self) -> Option<&str> {
        self.message.message.partition_key.as_deref()
    }
}

impl LogicalRelay {
    /// Starts building a relay for `outbox`; `table` (on the same database)
    /// receives diverted messages and dead letters.
    pub fn builder(
        outbox: PgLogicalOutbox,
        table: PgOutboxStore,
        publisher: Arc<dyn Publisher>,
    ) -> LogicalRelayBuilder {
        LogicalRelayBuilder {
            outbox,
            table,
            publisher,
            notifier: OutboxNotifier::new(),
            config: Config::default(),
            password: None,
        }
    }

    /// The notifier that wakes this relay; give it to producers.
    pub fn notifier(&self) -> &OutboxNotifier {
        &self.inner.notifier
    }

    /// The relay over the outbox table.
    pub fn table_relay(&self) -> &Relay {
        &self.inner.table_relay
    }

    /// Counters of the stream since this relay was built (`claimed` counts
    /// messages read from the slot).
    pub fn stats(&self) -> RelayStats {
        self.inner.stats.snapshot()
    }

    fn connect_options(&self) -> PgConnectOptions {
        (*self.inner.outbox.pool.connect_options())
            .clone()
            .application_name("counterfoil-outbox-stream")
    }

    /// Opens a connection and tries to take the slot's lock on it. `None`
    /// when another relay holds it.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    pub async fn acquire(&self) -> Result<Option<PgConnection>, Error> {
        let mut conn = self.connect_options().connect().await.map_err(Error::db)?;
        let got: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtext('counterfoil_outbox_stream:' || $1))",
        )
        .bind(self.inner.outbox.slot_name())
        .fetch_one(&mut conn)
        .await
        .map_err(Error::db)?;
        if got {
            Ok(Some(conn))
        } else {
            conn.close().await.ok();
            Ok(None)
        }
    }

    /// Reads one round from the slot on `conn` (which must hold the lock
    /// from [`LogicalRelay::acquire`]), publishes it, diverts what failed and
    /// advances the slot. `claimed` in the report counts messages read.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails; the slot is then not
    /// advanced and the round is read again.
    ///
    /// # Cancel safety
    ///
    /// Cancelling before the advance makes the round be published again.
    pub async fn run_once(&self, conn: &mut PgConnection) -> Result<BatchReport, Error> {
        let inner = &self.inner;
        let c = &inner.config;
        let slot = inner.outbox.slot_name();
        let rows = sqlx::query(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2,
                'proto_version', '1', 'publication_names', $1, 'messages', 'true')",
        )
        .bind(slot)
        .bind(i32::try_from(c.batch_changes).unwrap_or(i32::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(Error::db)?;

        let mut pending = Vec::new();
        let mut messages = Vec::new();
        let mut advance_to = None;
        for row in &rows {
            let data: &[u8] = row.try_get(0).map_err(Error::db)?;
            match pgoutput::parse(data) {
                Ok(Record::Message {
                    prefix, content, ..
                }) if prefix == inner.outbox.prefix.as_bytes() => pending.push(content),
                Ok(Record::Commit { end_lsn }) => {
                    messages.append(&mut pending);
                    advance_to = Some(end_lsn);
                }
                Ok(_) => {}
                Err(e) => {
                    // Not ours to judge: the server wrote it. Stop here and
                    // read the round again after a pause.
                    return Err(Error::Backend(
                        format!("unreadable record from the replication slot: {e}").into(),
                    ));
                }
            }
        }
        let Some(advance_to) = advance_to else {
            return Ok(BatchReport::default());
        };
        let report = self.deliver(&messages).await?;
        if report.outages > 0 {
            // Keep the slot where it is: the whole round is read again once
            // the broker is back. Messages already confirmed go out twice.
            return Ok(report);
        }
        sqlx::query("SELECT pg_replication_slot_advance($1, $2::pg_lsn)")
            .bind(slot)
            .bind(pgoutput::format_lsn(advance_to))
            .execute(&mut *conn)
            .await
            .map_err(Error::db)?;
        Ok(report)
    }

    /// Publishes the messages of committed transactions, in commit order,
    /// and diverts what cannot be published now. With `outages > 0` in the
    /// report nothing was diverted and the caller must deliver the same
    /// messages again later; otherwise the caller may confirm them.
    async fn deliver(&self, messages: &[&[u8]]) -> Result<BatchReport, Error> {
        let inner = &self.inner;
        let c = &inner.config;
        let now = inner.outbox.clock.now_ms();
        let mut report = BatchReport {
            claimed: messages.len(),
            ..BatchReport::default()
        };
        AtomicStats::add(&inner.stats.claimed, messages.len() as u64);

        let mut items: Vec<Item> = messages
            .iter()
            .map(|&content| match envelope::decode(content) {
                Ok(d) if d.available_at() > now => Item::new(d, Fate::Delay),
                Ok(d) => Item::new(d, Fate::Publish),
                Err(e) => {
                    warn!(error = %e, "corrupt message in the outbox stream; dead-lettered");
                    Item {
                        message: Diverted::corrupt(content, now, e.to_string()),
                        fate: Fate::Dead,
                        wave: 0,
                    }
                }
            })
            .collect();
        let ordered = c.mode == ClaimMode::Ordered;
        if ordered {
            self.assign_waves(&mut items).await?;
        }
        let waves = items.iter().map(|i| i.wave).max().unwrap_or(0);
        let mut failed_keys: HashSet<String> = HashSet::new();
        for wave in 0..=waves {
            let mut idx = Vec::new();
            for (i, item) in items.iter_mut().enumerate() {
                if item.fate != Fate::Publish || item.wave != wave {
                    continue;
                }
                if ordered && item.key().is_some_and(|k| failed_keys.contains(k)) {
                    item.fate = Fate::Hold;
                } else {
                    idx.push(i);
                }
            }
            if idx.is_empty() {
                continue;
            }
            // The messages go to the publisher and come back, not copied.
            let batch: Vec<OutboxMessage> = idx
                .iter()
                .map(|&i| {
                    let m = &mut items[i].message.message;
                    std::mem::replace(m, hollow(m.id))
                })
                .collect();
            let started = Instant::now();
            let results = inner.publisher.publish(&batch).await;
            metrics::histogram!(stats::PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
            for (&i, m) in idx.iter().zip(batch) {
                items[i].message.message = m;
            }
            let now = inner.outbox.clock.now_ms();
            let mut results = results.into_iter();
            for i in idx {
                let item = &mut items[i];
                let result = results.next().unwrap_or_else(|| {
                    Err(crate::PublishError::Unavailable(
                        "publisher returned too few results".into(),
                    ))
                });
                match result {
                    Ok(()) => {
                        item.fate = Fate::Published;
                        metrics::histogram!(stats::DELIVERY_LAG_SECONDS)
                            .record((now - item.message.created_at).max(0) as f64 / 1000.0);
                        metrics::histogram!(stats::ATTEMPTS).record(1.0);
                    }
                    Err(e) if e.is_outage() => {
                        metrics::counter!(stats::FAILED, "reason" => "outage").increment(1);
                        report.outages += 1;
                        item.fate = Fate::Outage;
                    }
                    Err(e) => {
                        metrics::counter!(stats::FAILED, "reason" => "message").increment(1);
                        debug!(id = %item.message.message.id, error = %e, "publish from the stream failed");
                        if let Some(k) = item.key() {
                            failed_keys.insert(k.to_owned());
                        }
                        item.message.attempts = 1;
                        item.message.last_error = Some(e.to_string());
                        if e.is_permanent() || c.max_attempts <= 1 {
                            item.fate = Fate::Dead;
                        } else {
                            item.message.available_at = now + duration_ms(c.backoff.delay(1));
                            item.fate = Fate::Retry;
                        }
                    }
                }
            }
            if report.outages > 0 {
                break;
            }
        }
        if report.outages > 0 {
            AtomicStats::add(&inner.stats.failed, report.outages as u64);
            return Ok(report);
        }
        let now = inner.outbox.clock.now_ms();
        let mut divert = Vec::new();
        let mut dead = Vec::new();
        for item in items {
            match item.fate {
                Fate::Published => report.published += 1,
                Fate::Delay | Fate::Hold => divert.push(item.message),
                Fate::Retry => {
                    report.retried += 1;
                    divert.push(item.message);
                }
                Fate::Dead => {
                    report.dead_lettered += 1;
                    dead.push(item.message);
                }
                Fate::Publish | Fate::Outage => {}
            }
        }
        if !divert.is_empty() || !dead.is_empty() {
            inner.table.divert(&divert, &dead, now).await?;
            inner.table_relay.notifier().notify();
        }
        let published = report.published as u64;
        AtomicStats::add(&inner.stats.published, published);
        AtomicStats::add(
            &inner.stats.failed,
            (report.retried + report.dead_lettered) as u64,
        );
        AtomicStats::add(&inner.stats.dead_lettered, report.dead_lettered as u64);
        metrics::counter!(stats::PUBLISHED).increment(published);
        metrics::counter!(stats::DEAD_LETTERED).increment(report.dead_lettered as u64);
        Ok(report)
    }

    /// In ordered mode: a message whose key has an undelivered message in
    /// the table, or an earlier delayed one in this round, is held (goes to
    /// the table behind it); the others of one key are published in waves,
    /// one message of a key per wave, each wave after the previous one's
    /// confirms.
    async fn assign_waves(&self, items: &mut [Item]) -> Result<(), Error> {
        let keys: HashSet<String> = items
            .iter()
            .filter_map(|i| i.key().map(str::to_owned))
            .collect();
        let mut held = self
            .inner
            .table
            .pending_keys(keys.into_iter().collect())
            .await?;
        let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for item in items.iter_mut() {
            let Some(key) = item.key().map(str::to_owned) else {
                continue;
            };
            match item.fate {
                Fate::Delay => {
                    held.insert(key);
                }
                Fate::Publish if held.contains(&key) => {
                    debug!(%key, "held behind an undelivered message of its key");
                    item.fate = Fate::Hold;
                }
                Fate::Publish => {
                    let n = seen.entry(key).or_insert(0);
                    item.wave = *n;
                    *n += 1;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Refreshes the lag gauge.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the database fails.
    pub async fn housekeeping(&self) -> Result<(), Error> {
        if let Some(lag) = self.inner.outbox.lag_bytes().await? {
            metrics::gauge!(stats::STREAM_LAG_BYTES).set(lag as f64);
        }
        Ok(())
    }

    /// Starts the stream worker, its lag gauge and the table relay on the
    /// current Tokio runtime.
    pub fn spawn(&self) -> RelayHandle {
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        self.inner.table_relay.spawn_into(&cancel, &mut tasks);
        let relay = self.clone();
        let c = cancel.clone();
        tasks.spawn(async move { relay.worker(c).await });
        let relay = self.clone();
        let c = cancel.clone();
        tasks.spawn(async move {
            let every = relay.inner.config.housekeeping_interval;
            loop {
                if let Err(e) = relay.housekeeping().await {
                    warn!(error = %e, "outbox stream housekeeping failed");
                }
                tokio::select! {
                    () = c.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
        RelayHandle::new(cancel, tasks)
    }

    /// The replication connection's settings, from the pool's connect options.
    fn replication_config(&self) -> ReplicationConfig {
        let o = self.inner.outbox.pool.connect_options();
        let slot = self.inner.outbox.slot_name();
        let host = o
            .get_socket()
            .map_or_else(|| o.get_host().to_owned(), |p| p.display().to_string());
        let mut cfg = ReplicationConfig::new(
            host,
            o.get_username(),
            self.inner.password.clone().unwrap_or_default(),
            o.get_database().unwrap_or(o.get_username()),
            slot,
            slot,
        )
        .with_port(o.get_port())
        .with_start_lsn(Lsn::ZERO)
        .with_status_interval(Duration::from_millis(200))
        .with_wakeup_interval(Duration::from_secs(1));
        cfg.application_name = Some("counterfoil-outbox-stream".into());
        cfg.tls = match o.get_ssl_mode() {
            PgSslMode::Require => TlsConfig::require(),
            PgSslMode::VerifyCa | PgSslMode::VerifyFull => TlsConfig::verify_full(None),
            _ => TlsConfig::disabled(),
        };
        cfg
    }

    async fn worker(&self, cancel: CancellationToken) {
        let c = &self.inner.config;
        let mut failures = 0u32;
        while !cancel.is_cancelled() {
            let wait = match ReplicationClient::connect(self.replication_config()).await {
                Ok(mut client) => {
                    let mut applied = None;
                    let ended = self
                        .stream(&mut client, &cancel, &mut failures, &mut applied)
                        .await;
                    if let (None, Some(lsn)) = (&ended, applied) {
                        // Stopping: let the last confirmation reach the
                        // server (it is sent every 200 ms), so the next relay
                        // does not publish it again.
                        let metrics = client.metrics();
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            while metrics.last_applied_lsn() < lsn {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        })
                        .await;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
                    match ended {
                        None => return,
                        // Another relay streams from the slot: stand by.
                        Some(e) if e.contains("is active for PID") => {
                            debug!("the outbox slot is in use by another relay; standing by");
                            c.standby_interval
                        }
                        Some(e) => {
                            failures += 1;
                            warn!(error = %e, "outbox stream ended; reconnecting");
                            c.outage_backoff.delay(failures)
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    warn!(error = %e, "outbox stream cannot connect");
                    c.outage_backoff.delay(failures)
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Streams from the slot until cancelled (`None`) or the stream ends
    /// (the reason). Messages are delivered in batches of what has arrived,
    /// and each commit is confirmed to the server once every message up to
    /// it is delivered.
    ///
    /// pgoutput (protocol 1, no `streaming`) sends a transaction only once it
    /// has committed, so its first messages can be published while the rest
    /// still arrive: a large transaction is delivered in several batches,
    /// overlapping, and only its commit is confirmed. A relay that stops
    /// between the two publishes the whole transaction again (duplicates,
    /// never loss).
    async fn stream(
        &self,
        client: &mut ReplicationClient,
        cancel: &CancellationToken,
        failures: &mut u32,
        applied: &mut Option<Lsn>,
    ) -> Option<String> {
        let c = &self.inner.config;
        let max = usize::try_from(c.batch_changes).unwrap_or(usize::MAX);
        // Unordered, batches overlap so that the broker's confirms of one
        // hide the round trips of the next; they are confirmed to the
        // server in stream order. Ordered, one at a time.
        let max_inflight = if c.mode == ClaimMode::Ordered { 1 } else { 4 };
        let prefix = &*self.inner.outbox.prefix;
        let mut in_txn = false;
        let mut batch: Vec<bytes::Bytes> = Vec::new();
        // The last commit read into `batch`, to confirm once it is delivered.
        let mut batch_end: Option<Lsn> = None;
        let mut inflight = FuturesOrdered::new();
        let pending = |batch: &Vec<_>, end: &Option<Lsn>| !batch.is_empty() || end.is_some();
        loop {
            // Hand a batch over once it is full, or when nothing more is ready.
            if pending(&batch, &batch_end) && inflight.len() < max_inflight {
                let mut ready = batch.len() >= max;
                while !ready {
                    match client.recv().now_or_never() {
                        Some(event) => {
                            if let Err(e) =
                                on_event(event, prefix, &mut in_txn, &mut batch, &mut batch_end)
                            {
                                return Some(e);
                            }
                            ready = batch.len() >= max;
                        }
                        None => ready = true,
                    }
                }
                let messages = std::mem::take(&mut batch);
                let end = batch_end.take();
                inflight.push_back(self.deliver_until_done(messages, end, cancel));
            }
            let room = inflight.len() < max_inflight || batch.len() < max;
            tokio::select! {
                biased;
                () = cancel.cancelled() => return None,
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    if let Some(end) = done? {
                        client.update_applied_lsn(end);
                        *applied = Some(end);
                    }
                    *failures = 0;
                }
                event = client.recv(), if room => {
                    if let Ok(Some(ReplicationEvent::KeepAlive { wal_end, .. })) = &event {
                        // Everything sent before this point has been
                        // delivered: let the slot release the WAL of other
                        // transactions.
                        if !in_txn
                            && !pending(&batch, &batch_end)
                            && inflight.is_empty()
                            && applied.is_none_or(|a| a < *wal_end)
                        {
                            client.update_applied_lsn(*wal_end);
                            *applied = Some(*wal_end);
                        }
                    }
                    if let Err(e) = on_event(
                        event,
                        prefix,
                        &mut in_txn,
                        &mut batch,
                        &mut batch_end,
                    ) {
                        return Some(e);
                    }
                }
            }
        }
    }

    /// Delivers `messages`, trying again after outages, until done; then
    /// `Some(end)`, the commit to confirm if the batch ends one. `None` when
    /// cancelled.
    async fn deliver_until_done(
        &self,
        messages: Vec<bytes::Bytes>,
        end: Option<Lsn>,
        cancel: &CancellationToken,
    ) -> Option<Option<Lsn>> {
        if messages.is_empty() {
            return Some(end);
        }
        let c = &self.inner.config;
        let views: Vec<&[u8]> = messages.iter().map(|b| &b[..]).collect();
        let mut outages = 0u32;
        loop {
            let wait = match self.deliver(&views).await {
                Ok(r) if r.outages == 0 => return Some(end),
                Ok(_) => {
                    outages += 1;
                    c.outage_backoff.delay(outages)
                }
                Err(e) => {
                    outages += 1;
                    warn!(error = %e, "outbox stream could not divert; trying again");
                    c.outage_backoff.delay(outages)
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// What stands in an item's place while its message is out with the
/// publisher: nothing allocated.
fn hollow(id: MessageId) -> OutboxMessage {
    OutboxMessage {
        id,
        destination: Destination {
            exchange: String::new(),
            routing_key: String::new(),
        },
        partition_key: None,
        headers: Headers::default(),
        payload: Vec::new(),
        content_type: String::new(),
        available_at: None,
        delay: None,
    }
}

/// Folds one stream event into the batch of committed messages. `Err` when
/// the stream ended.
fn on_event(
    event: Result<Option<ReplicationEvent>, pgwire_replication::PgWireError>,
    prefix: &str,
    in_txn: &mut bool,
    batch: &mut Vec<bytes::Bytes>,
    batch_end: &mut Option<Lsn>,
) -> Result<(), String> {
    match event {
        Ok(Some(ReplicationEvent::Begin { .. })) => *in_txn = true,
        Ok(Some(ReplicationEvent::Message {
            prefix: p, content, ..
        })) if p == prefix => batch.push(content),
        Ok(Some(ReplicationEvent::Commit { end_lsn, .. })) => {
            *in_txn = false;
            *batch_end = Some(end_lsn);
        }
        Ok(Some(_)) => {}
        Ok(None) => return Err("the replication stream ended".into()),
        Err(e) => return Err(e.to_string()),
    }
    Ok(())
}
