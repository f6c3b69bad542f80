//! The in-memory backend.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use hashbrown::HashTable;

use crate::begin::Begin;
use crate::clock::{self, Clock};
use crate::error::Error;
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::lease::{BeginOptions, Lease, RecoveryPoint};
use crate::record::{self, Record};
use crate::response::StoredResponse;

/// One key and its record, with the key's hash (SipHash with the store's
/// random state, computed once per operation): growing the table never
/// hashes a key again. The record is boxed so that growing moves small
/// slots (measured: fewer cache misses than records held inline).
#[derive(Debug)]
struct Slot {
    hash: u64,
    key: Arc<IdempotencyKey>,
    rec: Box<Record>,
}

type Map = HashTable<Slot>;

/// Finds the record of `key`.
fn find<'m>(map: &'m mut Map, hash: u64, key: &IdempotencyKey) -> Option<&'m mut Record> {
    map.find_mut(hash, |s| s.hash == hash && *s.key == *key)
        .map(|s| &mut *s.rec)
}

/// Finds the record of a lease, comparing the shared key by pointer first.
fn find_leased<'m>(
    map: &'m mut Map,
    hash: u64,
    key: &Arc<IdempotencyKey>,
) -> Option<&'m mut Record> {
    map.find_mut(hash, |s| {
        s.hash == hash && (Arc::ptr_eq(&s.key, key) || *s.key == **key)
    })
    .map(|s| &mut *s.rec)
}

/// Adds a record for a key that has none.
fn insert(map: &mut Map, hash: u64, key: Arc<IdempotencyKey>, rec: Record) {
    let rec = Box::new(rec);
    map.insert_unique(hash, Slot { hash, key, rec }, |s| s.hash);
}

fn remove(map: &mut Map, hash: u64, key: &IdempotencyKey) {
    if let Ok(slot) = map.find_entry(hash, |s| s.hash == hash && *s.key == *key) {
        slot.remove();
    }
}

/// An [`IdempotencyStore`](crate::IdempotencyStore) in process memory, for
/// tests, single-process services and as the reference for the other backends.
///
/// Records die with the process.
#[derive(Debug, Clone)]
pub struct InMemoryIdempotencyStore {
    map: Arc<Mutex<Map>>,
    hasher: RandomState,
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
            hasher: RandomState::new(),
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
        self.lock().is_empty()
    }

    fn hash(&self, key: &IdempotencyKey) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The record `lease` still holds, or [`Error::LeaseLost`].
    fn held<'m>(&self, map: &'m mut Map, lease: &Lease) -> Result<&'m mut Record, Error> {
        let rec = find_leased(map, self.hash(&lease.key), &lease.key);
        record::holds(rec.as_deref(), lease)?;
        rec.ok_or(Error::LeaseLost)
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
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
        let hash = self.hash(key);
        let mut map = self.lock();
        let found = find(&mut map, hash, key);
        let (write, answer) = record::begin(found.as_deref(), key, fp, now, opts);
        if let Some(w) = write {
            match (found, &answer) {
                (Some(r), _) => *r = w,
                // The lease and the map share one copy of the key.
                (None, Begin::Execute(lease)) => insert(&mut map, hash, lease.key.clone(), w),
                (None, _) => insert(&mut map, hash, Arc::new(key.clone()), w),
            }
        }
        Ok(answer)
    }

    async fn checkpoint(&self, lease: &mut Lease, point: &RecoveryPoint) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let mut map = self.lock();
        record::checkpoint(self.held(&mut map, lease)?, lease, now, point);
        Ok(())
    }

    async fn renew(&self, lease: &mut Lease) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let mut map = self.lock();
        record::renew(self.held(&mut map, lease)?, lease, now);
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
        record::complete(self.held(&mut map, lease)?, now, response, ttl);
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let hash = self.hash(&lease.key);
        let mut map = self.lock();
        let rec = find_leased(&mut map, hash, &lease.key);
        record::holds(rec.as_deref(), lease)?;
        if let Some(r) = rec {
            if r.recovery.is_some() {
                r.lease_until = now;
            } else {
                remove(&mut map, hash, &lease.key);
            }
        }
        Ok(())
    }

    async fn reap_expired(&self, batch: u32) -> Result<u64, Error> {
        let now = self.clock.now_ms();
        let mut map = self.lock();
        let mut left = batch as usize;
        let mut reaped = 0u64;
        map.retain(|s| {
            if left > 0 && s.rec.expires_at <= now {
                left -= 1;
                reaped += 1;
                false
            } else {
                true
            }
        });
        Ok(reaped)
    }
}
