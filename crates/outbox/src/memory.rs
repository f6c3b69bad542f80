//! An in-memory outbox store: always compiled, for tests and demos.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::clock::{Clock, SystemClock, duration_ms};
use crate::store::{
    Backlog, ClaimMode, ClaimRequest, ClaimedBatch, ClaimedMessage, DeadLetter, Disposition,
    Failure, LeaseToken, OutboxStore,
};
use crate::{Error, MessageId, OutboxMessage};

#[derive(Debug, Clone)]
struct Row {
    message: OutboxMessage,
    created_at: i64,
    available_at: i64,
    attempts: u32,
    lease: Option<(LeaseToken, i64)>,
    delivered_at: Option<i64>,
    last_error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    next_seq: i64,
    rows: BTreeMap<i64, Row>,
    dead: BTreeMap<i64, DeadLetter>,
    next_dead: i64,
}

/// An outbox kept in process memory. Not durable: use it in tests, demos,
/// or where losing unsent messages on a crash is acceptable.
#[derive(Debug, Clone)]
pub struct InMemoryOutboxStore {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

impl Default for InMemoryOutboxStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryOutboxStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Uses `clock` for enqueue times.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds messages, all or none.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] if a message is invalid or its id is already stored.
    pub fn enqueue(&self, messages: &[OutboxMessage]) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let mut st = self.state.lock();
        let mut seen = HashSet::new();
        for m in messages {
            m.validate()?;
            if !seen.insert(m.id) || st.rows.values().any(|r| r.message.id == m.id) {
                return Err(Error::InvalidMessage(format!(
                    "duplicate message id {}",
                    m.id
                )));
            }
        }
        for m in messages {
            st.next_seq += 1;
            let seq = st.next_seq;
            let available_at = m.resolve_available_at(now);
            let mut message = m.clone();
            message.available_at = Some(available_at);
            message.delay = None;
            st.rows.insert(
                seq,
                Row {
                    message,
                    created_at: now,
                    available_at,
                    attempts: 0,
                    lease: None,
                    delivered_at: None,
                    last_error: None,
                },
            );
        }
        Ok(())
    }

    /// Number of rows, delivered or not (for tests).
    pub fn len(&self) -> usize {
        self.state.lock().rows.len()
    }

    /// Whether the store has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn claimable(r: &Row, now: i64) -> bool {
    r.delivered_at.is_none()
        && r.available_at <= now
        && r.lease.is_none_or(|(_, until)| until < now)
}

#[async_trait]
impl OutboxStore for InMemoryOutboxStore {
    async fn claim(&self, req: ClaimRequest) -> Result<ClaimedBatch, Error> {
        let lease = LeaseToken::generate();
        let until = req.now.saturating_add(duration_ms(req.lease));
        let mut st = self.state.lock();
        let mut heads_seen: HashSet<String> = HashSet::new();
        let mut picked = Vec::new();
        for (&seq, r) in st.rows.iter() {
            if picked.len() >= req.batch_size as usize {
                break;
            }
            if r.delivered_at.is_some() {
                continue;
            }
            if req.mode == ClaimMode::Ordered
                && let Some(k) = &r.message.partition_key
            {
                // Only the first undelivered row of each key is eligible.
                if !heads_seen.insert(k.clone()) {
                    continue;
                }
            }
            if claimable(r, req.now) {
                picked.push(seq);
            }
        }
        let mut messages = Vec::with_capacity(picked.len());
        for seq in picked {
            if let Some(r) = st.rows.get_mut(&seq) {
                r.lease = Some((lease, until));
                messages.push(ClaimedMessage {
                    seq,
                    attempts: r.attempts,
                    created_at: r.created_at,
                    message: r.message.clone(),
                });
            }
        }
        Ok(ClaimedBatch { lease, messages })
    }

    async fn ack(
        &self,
        lease: LeaseToken,
        seqs: &[i64],
        now: i64,
        retain: bool,
    ) -> Result<u64, Error> {
        let mut st = self.state.lock();
        let mut n = 0;
        for seq in seqs {
            let held = st
                .rows
                .get(seq)
                .is_some_and(|r| r.lease.is_some_and(|(t, _)| t == lease));
            if !held {
                continue;
            }
            n += 1;
            if retain {
                if let Some(r) = st.rows.get_mut(seq) {
                    r.delivered_at = Some(now);
                    r.lease = None;
                }
            } else {
                st.rows.remove(seq);
            }
        }
        Ok(n)
    }

    async fn fail(&self, lease: LeaseToken, failures: &[Failure], now: i64) -> Result<u64, Error> {
        let mut st = self.state.lock();
        let mut n = 0;
        for f in failures {
            let held = st
                .rows
                .get(&f.seq)
                .is_some_and(|r| r.lease.is_some_and(|(t, _)| t == lease));
            if !held {
                continue;
            }
            n += 1;
            match f.disposition {
                Disposition::RetryAt { at, count_attempt } => {
                    if let Some(r) = st.rows.get_mut(&f.seq) {
                        r.lease = None;
                        r.available_at = at;
                        r.message.available_at = Some(at);
                        r.last_error = Some(f.error.clone());
                        if count_attempt {
                            r.attempts += 1;
                        }
                    }
                }
                Disposition::Dead => {
                    if let Some(r) = st.rows.remove(&f.seq) {
                        st.next_dead += 1;
                        let k = st.next_dead;
                        st.dead.insert(
                            k,
                            DeadLetter {
                                message: r.message,
                                attempts: r.attempts + 1,
                                last_error: f.error.clone(),
                                created_at: r.created_at,
                                dead_at: now,
                            },
                        );
                    }
                }
            }
        }
        Ok(n)
    }

    async fn cleanup(&self, before: i64, limit: u32) -> Result<u64, Error> {
        let mut st = self.state.lock();
        let doomed: Vec<i64> = st
            .rows
            .iter()
            .filter(|(_, r)| r.delivered_at.is_some_and(|d| d < before))
            .map(|(s, _)| *s)
            .take(limit as usize)
            .collect();
        for s in &doomed {
            st.rows.remove(s);
        }
        Ok(doomed.len() as u64)
    }

    async fn backlog(&self) -> Result<Backlog, Error> {
        let st = self.state.lock();
        let pending = st.rows.values().filter(|r| r.delivered_at.is_none());
        let (mut n, mut oldest) = (0u64, None::<i64>);
        for r in pending {
            n += 1;
            oldest = Some(oldest.map_or(r.created_at, |o| o.min(r.created_at)));
        }
        Ok(Backlog {
            pending: n,
            oldest_created_at: oldest,
            dead: st.dead.len() as u64,
        })
    }

    async fn dead_letters(
        &self,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, Error> {
        let st = self.state.lock();
        let start = match after {
            Some(id) => st
                .dead
                .iter()
                .find(|(_, d)| d.message.id == id)
                .map_or(i64::MAX, |(k, _)| *k),
            None => 0,
        };
        Ok(st
            .dead
            .range(start.saturating_add(1)..)
            .take(limit as usize)
            .map(|(_, d)| d.clone())
            .collect())
    }

    async fn replay(&self, ids: &[MessageId], now: i64) -> Result<u64, Error> {
        let mut st = self.state.lock();
        let keys: Vec<i64> = st
            .dead
            .iter()
            .filter(|(_, d)| ids.contains(&d.message.id))
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            if let Some(d) = st.dead.remove(k) {
                st.next_seq += 1;
                let seq = st.next_seq;
                let mut message = d.message;
                message.available_at = Some(now);
                st.rows.insert(
                    seq,
                    Row {
                        message,
                        created_at: d.created_at,
                        available_at: now,
                        attempts: 0,
                        lease: None,
                        delivered_at: None,
                        last_error: None,
                    },
                );
            }
        }
        Ok(keys.len() as u64)
    }

    async fn discard(&self, ids: &[MessageId]) -> Result<u64, Error> {
        let mut st = self.state.lock();
        let before = st.dead.len();
        st.dead.retain(|_, d| !ids.contains(&d.message.id));
        Ok((before - st.dead.len()) as u64)
    }
}
