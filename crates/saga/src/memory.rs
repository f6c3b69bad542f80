//! In-memory store: for tests and for single-process use without durability.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::Error;
use crate::clock::{Clock, SystemClock};
use crate::record::{
    DeliveredEvent, Delivery, ListFilter, LogEntry, Phase, Resolution, SagaRecord, Started, Status,
};
use crate::store::{
    Checkpoint, CheckpointAck, ClaimRequest, Claimed, NewSaga, OperatorOp, SagaStore, StepTx,
};

/// Rows a step stages in the in-memory store; they become visible only when the step's
/// checkpoint commits, as they would in a database transaction.
#[derive(Debug, Default, Clone)]
pub struct MemoryTx {
    rows: Vec<(String, serde_json::Value)>,
}

impl MemoryTx {
    /// Stages a row for `table`.
    pub fn insert(&mut self, table: &str, row: serde_json::Value) {
        self.rows.push((table.to_owned(), row));
    }
}

#[derive(Debug, Default)]
struct Inner {
    sagas: HashMap<Uuid, SagaRecord>,
    by_key: HashMap<(String, String), Uuid>,
    log: Vec<LogEntry>,
    rows: Vec<(String, serde_json::Value)>,
    seq: i64,
}

/// A [`SagaStore`] in process memory. Clones share the same data.
#[derive(Debug, Clone)]
pub struct InMemorySagaStore {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
}

impl Default for InMemorySagaStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemorySagaStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::default(),
            clock,
        }
    }

    /// Rows committed by steps through [`MemoryTx::insert`] into `table`, in commit order.
    pub fn committed_rows(&self, table: &str) -> Vec<serde_json::Value> {
        self.inner
            .lock()
            .rows
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

fn active(s: Status) -> bool {
    matches!(s, Status::Running | Status::Waiting | Status::Parked)
}

#[async_trait]
impl SagaStore for InMemorySagaStore {
    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    async fn migrate(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn start(&self, new: NewSaga) -> Result<Started, Error> {
        let mut g = self.inner.lock();
        if let Some(id) = g.by_key.get(&(new.name.clone(), new.key.clone())) {
            let seq = g.sagas.get(id).map_or(0, |s| s.seq);
            return Ok(Started {
                id: *id,
                seq,
                created: false,
            });
        }
        g.seq += 1;
        let rec = SagaRecord {
            id: new.id,
            name: new.name.clone(),
            version: new.version,
            key: new.key.clone(),
            seq: g.seq,
            status: Status::Running,
            phase: Phase::Forward,
            cursor: 0,
            attempt: 0,
            in_flight: new.lease_until > 0,
            paused: false,
            cancel_requested: false,
            state: new.state,
            wake_at: new.now,
            lease_until: new.lease_until,
            epoch: i64::from(new.lease_until > 0),
            wait_events: Vec::new(),
            event: None,
            resolution: None,
            reason: None,
            resource: None,
            resource_held: false,
            created_at: new.now,
            updated_at: new.now,
        };
        g.by_key.insert((new.name, new.key), new.id);
        g.sagas.insert(new.id, rec);
        let seq = g.seq;
        Ok(Started {
            id: new.id,
            seq,
            created: true,
        })
    }

    async fn active_versions(&self) -> Result<Vec<(String, u32)>, Error> {
        let g = self.inner.lock();
        let mut v: Vec<(String, u32)> = g
            .sagas
            .values()
            .filter(|s| active(s.status))
            .map(|s| (s.name.clone(), s.version))
            .collect();
        v.sort();
        v.dedup();
        Ok(v)
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>, Error> {
        let mut g = self.inner.lock();
        let mut due: Vec<(i64, i64, Uuid)> = g
            .sagas
            .values()
            .filter(|s| {
                matches!(s.status, Status::Running | Status::Waiting)
                    && !s.paused
                    && s.wake_at <= req.now
                    && s.lease_until <= req.now
                    && req.known.contains(&format!("{}@{}", s.name, s.version))
            })
            .map(|s| (s.wake_at, s.seq, s.id))
            .collect();
        due.sort();
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for (_, _, id) in due.into_iter().take(limit) {
            if let Some(s) = g.sagas.get_mut(&id) {
                let recovered = s.in_flight;
                s.epoch += 1;
                s.lease_until = req.lease_until;
                s.in_flight = true;
                s.status = Status::Running;
                s.updated_at = req.now;
                out.push(Claimed {
                    record: s.clone(),
                    recovered,
                });
            }
        }
        Ok(out)
    }

    async fn begin(&self) -> Result<StepTx, Error> {
        Ok(StepTx::Memory(MemoryTx::default()))
    }

    async fn checkpoint(
        &self,
        tx: Option<StepTx>,
        cp: Checkpoint,
    ) -> Result<Option<CheckpointAck>, Error> {
        let mut g = self.inner.lock();
        let Some(s) = g.sagas.get_mut(&cp.id) else {
            return Ok(None);
        };
        if s.epoch != cp.epoch {
            return Ok(None);
        }
        s.status = cp.status;
        s.phase = cp.phase;
        s.cursor = cp.cursor;
        s.attempt = cp.attempt;
        s.in_flight = cp.in_flight;
        s.state = cp.state;
        s.wake_at = cp.wake_at;
        s.lease_until = cp.lease_until;
        s.wait_events = cp.wait_events;
        s.event = None;
        s.resolution = None;
        s.reason = cp.reason;
        s.resource = cp.resource;
        s.resource_held = cp.resource_held;
        s.updated_at = cp.now;
        if cp.clear_cancel {
            s.cancel_requested = false;
        }
        let ack = CheckpointAck {
            paused: s.paused,
            cancel_requested: s.cancel_requested,
        };
        g.log.push(LogEntry {
            saga_id: cp.id,
            at: cp.now,
            step: cp.log.step,
            phase: cp.log.phase,
            attempt: cp.log.attempt,
            outcome: cp.log.outcome.to_owned(),
            detail: cp.log.detail,
            epoch: cp.epoch,
        });
        if let Some(StepTx::Memory(m)) = tx {
            g.rows.extend(m.rows);
        }
        let held = |g: &Inner, r: &str| {
            g.sagas
                .values()
                .any(|o| o.resource.as_deref() == Some(r) && o.resource_held)
        };
        if let Some(r) = cp.release.filter(|r| !held(&g, r)) {
            let next = g
                .sagas
                .values()
                .filter(|o| {
                    o.resource.as_deref() == Some(r.as_str())
                        && !o.resource_held
                        && o.status == Status::Running
                        && !o.paused
                })
                .min_by_key(|o| o.seq)
                .map(|o| o.id);
            if let Some(n) = next.and_then(|n| g.sagas.get_mut(&n)) {
                n.wake_at = n.wake_at.min(cp.now);
            }
        }
        Ok(Some(ack))
    }

    async fn acquire(&self, id: Uuid, epoch: i64, seq: i64, resource: &str) -> Result<bool, Error> {
        let mut g = self.inner.lock();
        let busy = g.sagas.values().any(|o| {
            o.id != id
                && o.resource.as_deref() == Some(resource)
                && (o.resource_held || (o.seq < seq && o.status == Status::Running && !o.paused))
        });
        let Some(s) = g.sagas.get_mut(&id) else {
            return Ok(false);
        };
        if busy || s.epoch != epoch {
            return Ok(false);
        }
        s.resource = Some(resource.to_owned());
        s.resource_held = true;
        Ok(true)
    }

    async fn deliver(
        &self,
        id: Uuid,
        event: &str,
        payload: &str,
        now: i64,
    ) -> Result<Delivery, Error> {
        let mut g = self.inner.lock();
        let s = g.sagas.get_mut(&id).ok_or(Error::NotFound(id))?;
        if s.status != Status::Waiting
            || s.event.is_some()
            || !s.wait_events.iter().any(|e| e == event)
        {
            return Ok(Delivery::NotWaiting);
        }
        s.event = Some(DeliveredEvent {
            name: event.to_owned(),
            payload: payload.to_owned(),
        });
        s.status = Status::Running;
        s.wake_at = now;
        s.updated_at = now;
        Ok(Delivery::Accepted)
    }

    async fn get(&self, id: Uuid) -> Result<Option<SagaRecord>, Error> {
        Ok(self.inner.lock().sagas.get(&id).cloned())
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>, Error> {
        let g = self.inner.lock();
        let mut v: Vec<SagaRecord> = g
            .sagas
            .values()
            .filter(|s| filter.status.is_none_or(|st| s.status == st))
            .filter(|s| filter.name.as_deref().is_none_or(|n| s.name == n))
            .filter(|s| filter.after_seq.is_none_or(|a| s.seq >= a))
            .cloned()
            .collect();
        v.sort_by_key(|s| s.seq);
        v.truncate(usize::try_from(filter.limit.unwrap_or(100)).unwrap_or(usize::MAX));
        Ok(v)
    }

    async fn log(&self, id: Uuid) -> Result<Vec<LogEntry>, Error> {
        Ok(self
            .inner
            .lock()
            .log
            .iter()
            .filter(|l| l.saga_id == id)
            .cloned()
            .collect())
    }

    async fn operate(&self, id: Uuid, op: OperatorOp, now: i64) -> Result<bool, Error> {
        let mut g = self.inner.lock();
        let Some(s) = g.sagas.get_mut(&id) else {
            return Ok(false);
        };
        let applies = match op {
            OperatorOp::Pause => !s.status.is_terminal(),
            OperatorOp::Resume => s.paused,
            OperatorOp::RetryNow => {
                matches!(s.status, Status::Running | Status::Parked) && s.lease_until <= now
            }
            OperatorOp::Cancel => {
                matches!(s.status, Status::Running | Status::Waiting | Status::Parked)
                    && s.phase == Phase::Forward
            }
            OperatorOp::Resolve(r) => {
                r != Resolution::Unknown
                    && s.status == Status::Parked
                    && s.in_flight
                    && s.phase == Phase::Forward
            }
        };
        if !applies {
            return Ok(false);
        }
        match op {
            OperatorOp::Pause => s.paused = true,
            OperatorOp::Resume => {
                s.paused = false;
                if s.status == Status::Running {
                    s.wake_at = s.wake_at.min(now);
                }
            }
            OperatorOp::RetryNow => {
                if s.status == Status::Parked {
                    s.attempt = 0;
                }
                s.status = Status::Running;
                s.wake_at = now;
            }
            OperatorOp::Cancel => {
                s.cancel_requested = true;
                s.status = Status::Running;
                s.wake_at = now;
            }
            OperatorOp::Resolve(r) => {
                s.resolution = Some(r);
                s.status = Status::Running;
                s.wake_at = now;
            }
        }
        s.updated_at = now;
        let entry = LogEntry {
            saga_id: id,
            at: now,
            step: "-".to_owned(),
            phase: s.phase,
            attempt: s.attempt,
            outcome: op.name().to_owned(),
            detail: None,
            epoch: s.epoch,
        };
        g.log.push(entry);
        Ok(true)
    }

    async fn counts(&self) -> Result<Vec<(Status, u64)>, Error> {
        let g = self.inner.lock();
        Ok([Status::Running, Status::Waiting, Status::Parked]
            .into_iter()
            .map(|st| {
                (
                    st,
                    g.sagas.values().filter(|s| s.status == st).count() as u64,
                )
            })
            .collect())
    }
}
