//! The in-memory backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::begin::Begin;
use crate::clock::{self, Clock};
use crate::error::Error;
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::lease::{BeginOptions, Lease, RecoveryPoint};
use crate::record::{self, Record};
use crate::response::StoredResponse;

/// An [`IdempotencyStore`](crate::IdempotencyStore) in process memory, for
/// tests, single-process services and as the reference for the other backends.
///
/// Records die with the process.
#[derive(Debug, Clone)]
pub struct InMemoryIdempotencyStore {
    map: Arc<Mutex<HashMap<IdempotencyKey, Record>>>,
    clock: Arc<dyn Clock>,
}

impl Default for InMemoryIdempotencyStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryIdempotencyStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self {
            map: Arc::default(),
            clock: clock::system(),
        }
    }

    /// Uses `clock` for leases and expiry.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How many records are held (expired ones included until reaped).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IdempotencyKey, Record>> {
        // A panic while holding this lock cannot leave a record half-written
        // (each update is a single assignment), so poisoning is ignored.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl crate::store::IdempotencyStore for InMemoryIdempotencyStore {
    async fn begin(
        &self,
        key: &IdempotencyKey,
        fp: &Fingerprint,
        opts: &BeginOptions,
    ) -> Result<Begin, Error> {
        let now = self.clock.now_ms();
        let mut map = self.lock();
        let (write, answer) = record::begin(map.get(key), key, fp, now, opts);
        if let Some(w) = write {
            map.insert(key.clone(), w);
        }
        Ok(answer)
    }

    async fn checkpoint(&self, lease: &mut Lease, point: &RecoveryPoint) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let mut map = self.lock();
        record::holds(map.get(&*lease.key), lease)?;
        if let Some(r) = map.get_mut(&*lease.key) {
            record::checkpoint(r, lease, now, point);
        }
        Ok(())
    }

    async fn complete(
        &self,
        lease: &Lease,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let mut map = self.lock();
        record::holds(map.get(&*lease.key), lease)?;
        if let Some(r) = map.get_mut(&*lease.key) {
            record::complete(r, now, response, ttl);
        }
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let mut map = self.lock();
        record::holds(map.get(&*lease.key), lease)?;
        if let Some(r) = map.get_mut(&*lease.key) {
            if r.recovery.is_some() {
                r.lease_until = now;
            } else {
                map.remove(&*lease.key);
            }
        }
        Ok(())
    }

    async fn reap_expired(&self, batch: u32) -> Result<u64, Error> {
        let now = self.clock.now_ms();
        let mut map = self.lock();
        let expired: Vec<IdempotencyKey> = map
            .iter()
            .filter(|(_, r)| r.expires_at <= now)
            .map(|(k, _)| k.clone())
            .take(batch as usize)
            .collect();
        for k in &expired {
            map.remove(k);
        }
        Ok(expired.len() as u64)
    }
}
