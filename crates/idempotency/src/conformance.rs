//! The backend conformance suite (feature `test-util`).
//!
//! Every backend runs these same tests; a backend's test file implements
//! [`Backend`] and invokes [`conformance_suite!`](crate::conformance_suite)
//! at its crate root:
//!
//! ```
//! use std::sync::Arc;
//! use counterfoil_idempotency::conformance::Backend;
//! use counterfoil_idempotency::{Clock, IdempotencyStore, InMemoryIdempotencyStore};
//!
//! struct Memory;
//!
//! #[async_trait::async_trait]
//! impl Backend for Memory {
//!     async fn open(&self, _ns: &str, clock: Arc<dyn Clock>) -> Option<Arc<dyn IdempotencyStore>> {
//!         Some(Arc::new(InMemoryIdempotencyStore::new().with_clock(clock)))
//!     }
//!     fn durable(&self) -> bool {
//!         false
//!     }
//! }
//!
//! counterfoil_idempotency::conformance_suite!(Memory);
//! # fn main() {}
//! ```

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::begin::Begin;
use crate::clock::{Clock, ManualClock, SystemClock};
use crate::error::Error;
use crate::fingerprint::Fingerprint;
use crate::key::{IdempotencyKey, Scope};
use crate::lease::{BeginOptions, Lease, RecoveryPoint};
use crate::reaper::reap_all;
use crate::response::StoredResponse;
use crate::store::IdempotencyStore;

/// The environment variable telling the crash child which namespace to use.
pub const CRASH_CHILD_ENV: &str = "COUNTERFOIL_IDEMPOTENCY_CRASH_NS";

/// A backend under test.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Opens the isolated namespace `ns` (a schema, key prefix or file, made
    /// on first use) with `clock`; `None` skips the test (service not
    /// configured; print why, and panic instead when `CI=true`).
    async fn open(&self, ns: &str, clock: Arc<dyn Clock>) -> Option<Arc<dyn IdempotencyStore>>;

    /// Removes the namespace. Default: nothing.
    async fn cleanup(&self, _ns: &str) {}

    /// Whether records outlive the process (false for in-memory).
    fn durable(&self) -> bool {
        true
    }
}

fn _obj_safe(_: &dyn Backend) {}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace name unique to this process and call: lower-case ASCII,
/// digits and underscores, usable as a schema name.
pub fn unique_ns(test: &str) -> String {
    let nanos = SystemClock.now_ms();
    format!(
        "idem_{test}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A key in a fixed test scope.
pub fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(
        Scope::new("tenant-1", "principal-1", "create_payment").expect("valid scope"),
        k,
    )
    .expect("valid key")
}

const START: i64 = 1_700_000_000_000;

fn opts(lease_s: u64) -> BeginOptions {
    BeginOptions::with_lease(Duration::from_secs(lease_s))
}

async fn open(
    b: &dyn Backend,
    test: &str,
    clock: &ManualClock,
) -> Option<(Arc<dyn IdempotencyStore>, String)> {
    let ns = unique_ns(test);
    b.open(&ns, Arc::new(clock.clone())).await.map(|s| (s, ns))
}

fn execute(b: Begin) -> Lease {
    match b {
        Begin::Execute(l) => l,
        other => panic!("expected Execute, got {other:?}"),
    }
}

fn replay(b: Begin) -> StoredResponse {
    match b {
        Begin::Replay(r) => r,
        other => panic!("expected Replay, got {other:?}"),
    }
}

/// Claim, in flight, complete, replay of status, headers and a binary body.
pub async fn claim_complete_replay(b: &dyn Backend) {
    let clock = ManualClock::new(START);
    let Some((store, ns)) = open(b, "basic", &clock).await else {
        return;
    };
    let k = key("basic");
    let fp = Fingerprint::of_bytes(b"req");
    let lease = execute(store.begin(&k, &fp, &opts(30)).await.expect("begin"));
    assert!(lease.token() > 0);
    assert!(!lease.is_takeover());
    assert!(lease.recovery_point().is_none());
    match store.begin(&k, &fp, &opts(30)).await.expect("begin") {
        Begin::InFlight { retry_after } => {
            assert!(retry_after <= Duration::from_secs(30) && retry_after > Duration::ZERO);
        }
        other => panic!("expected InFlight, got {other:?}"),
    }
    let resp = StoredResponse::new(201, vec![0u8, 159, 146, 150, 255])
        .with_header("content-type", "application/octet-stream")
        .with_header("location", "/v1/payments/1");
    store
        .complete(&lease, &resp, Duration::from_secs(3600))
        .await
        .expect("complete");
    assert_eq!(
        replay(store.begin(&k, &fp, &opts(30)).await.expect("begin")),
        resp
    );
    // Completing twice is fenced too.
    assert!(matches!(
        store.complete(&lease, &resp, Duration::from_secs(1)).await,
        Err(Error::LeaseLost)
    ));
    b.cleanup(&ns).await;
}

/// 64 concurrent identical requests: exactly one executes; every other one
/// gets in flight or the replay.
pub async fn concurrent_duplicates_execute_once(b: &dyn Backend) {
    let clock = ManualClock::new(START);
    let Some((store, ns)) = open(b, "concurrent", &clock).await else {
        return;
    };
    let executed = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let replayed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (store, executed, in_flight, replayed) = (
            store.clone(),
            executed.clone(),
            in_flight.clone(),
            replayed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let k = key("same");
            let fp = Fingerprint::of_bytes(b"charge 1250 EUR");
            match store.begin(&k, &fp, &opts(30)).await.expect("begin") {
                Begin::Execute(lease) => {
                    executed.fetch_add(1, Ordering::SeqCst);
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                    }
                    store
                        .complete(
                            &lease,
                            &StoredResponse::new(201, "paid"),
                            Duration::from_secs(3600),
                        )
                        .await
                        .expect("complete");
                }
                Begin::InFlight { .. } => {
                    in_flight.fetch_add(1, Ordering::SeqCst);
                }
                Begin::Replay(r) => {
                    assert_eq!(r.body, "paid");
                    replayed.fetch_add(1, Ordering::SeqCst);
                }
                Begin::Mismatch => panic!("identical requests must not mismatch"),
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(executed.load(Ordering::SeqCst), 1, "exactly one execution");
    assert_eq!(
        in_flight.load(Ordering::SeqCst) + replayed.load(Ordering::SeqCst),
        63
    );
    let r = replay(
        store
            .begin(
                &key("same"),
                &Fingerprint::of_bytes(b"charge 1250 EUR"),
                &opts(30),
            )
            .await
            .expect("begin"),
    );
    assert_eq!(r.status, 201);
    b.cleanup(&ns).await;
}

/// Same key, different fingerprint: mismatch, in flight or completed; other
/// scopes do not collide.
pub async fn mismatch(b: &dyn Backend) {
    let clock = ManualClock::new(START);
    let Some((store, ns)) = open(b, "mismatch", &clock).await else {
        return;
    };
    let k = key("m");
    let a = Fingerprint::of_bytes(b"a");
    let other = Fingerprint::of_bytes(b"b");
    let lease = execute(store.begin(&k, &a, &opts(30)).await.expect("begin"));
    assert_eq!(
        store.begin(&k, &other, &opts(30)).await.expect("begin"),
        Begin::Mismatch
    );
    store
        .complete(
            &lease,
            &StoredResponse::new(200, "a"),
            Duration::from_secs(60),
        )
        .await
        .expect("complete");
    assert_eq!(
        store.begin(&k, &other, &opts(30)).await.expect("begin"),
        Begin::Mismatch
    );
    // Even after the lease would have expired, a mismatch never takes over.
    clock.advance(Duration::from_secs(45));
    assert_eq!(
        store.begin(&k, &other, &opts(30)).await.expect("begin"),
        Begin::Mismatch
    );
    for scope in [
        Scope::new("tenant-2", "principal-1", "create_payment"),
        Scope::new("tenant-1", "principal-2", "create_payment"),
        Scope::new("tenant-1", "principal-1", "refund"),
    ] {
        let k2 = IdempotencyKey::new(scope.expect("scope"), "m").expect("key");
        execute(store.begin(&k2, &other, &opts(30)).await.expect("begin"));
    }
    b.cleanup(&ns).await;
}

/// A lease runs out; a retry takes over with a higher token and resumes from
/// the last recovery point; the stale holder is fenced (writes nothing).
pub async fn lease_expiry_takeover_and_fencing(b: &dyn Backend) {
    let clock = ManualClock::new(START);
    let Some((store, ns)) = open(b, "takeover", &clock).await else {
        return;
    };
    let k = key("t");
    let fp = Fingerprint::of_bytes(b"t");
    let mut first = execute(store.begin(&k, &fp, &opts(10)).await.expect("begin"));
    clock.advance(Duration::from_secs(4));
    let point = RecoveryPoint::new("charge_created", b"ch_123".to_vec());
    store
        .checkpoint(&mut first, &point)
        .await
        .expect("checkpoint");
    assert_eq!(first.recovery_point(), Some(&point));
    // The checkpoint extended the lease to now + 10 s.
    clock.advance(Duration::from_secs(8));
    match store.begin(&k, &fp, &opts(10)).await.expect("begin") {
        Begin::InFlight { retry_after } => assert!(retry_after <= Duration::from_secs(2)),
        other => panic!("expected InFlight after checkpoint, got {other:?}"),
    }
    clock.advance(Duration::from_secs(3));
    let mut second = execute(store.begin(&k, &fp, &opts(10)).await.expect("begin"));
    assert!(second.is_takeover());
    assert!(second.token() > first.token());
    assert_eq!(second.recovery_point(), Some(&point));
    // Only one taker.
    assert!(matches!(
        store.begin(&k, &fp, &opts(10)).await.expect("begin"),
        Begin::InFlight { .. }
    ));

    // The stale holder is fenced on every write.
    let stale_point = RecoveryPoint::new("stale", b"x".to_vec());
    assert!(matches!(
        store.checkpoint(&mut first, &stale_point).await,
        Err(Error::LeaseLost)
    ));
    assert!(matches!(
        store
            .complete(
                &first,
                &StoredResponse::new(200, "stale"),
                Duration::from_secs(60)
            )
            .await,
        Err(Error::LeaseLost)
    ));
    assert!(matches!(store.release(&first).await, Err(Error::LeaseLost)));
    // ... and wrote nothing: the new holder still holds, with its recovery point.
    assert!(matches!(
        store.begin(&k, &fp, &opts(10)).await.expect("begin"),
        Begin::InFlight { .. }
    ));
    let next = RecoveryPoint::new("receipt_printed", b"r_9".to_vec());
    store
        .checkpoint(&mut second, &next)
        .await
        .expect("checkpoint");
    store
        .complete(
            &second,
            &StoredResponse::new(201, "fresh"),
            Duration::from_secs(60),
        )
        .await
        .expect("complete");
    assert_eq!(
        replay(store.begin(&k, &fp, &opts(10)).await.expect("begin")).body,
        "fresh"
    );
    b.cleanup(&ns).await;
}

/// `renew` (the heartbeat) extends the lease past its first expiry and keeps
/// the recovery point; once the holder stops renewing, a retry takes over,
/// and the stale holder's renewal is fenced and does not extend the new
/// holder; a completed key cannot be renewed.
pub async fn renew_extends_lease_and_is_fenced(b: &dyn Backend) {
    let clock = ManualClock::new(START);
    let Some((store, ns)) = open(b, "renew", &clock).await else {
        return;
    };
    let k = key("renew");
    let fp = Fingerprint::of_bytes(b"renew");
    let in_flight = |b: Begin| match b {
        Begin::InFlight { retry_after } => retry_after,
        other => panic!("expected InFlight, got {other:?}"),
    };
    let s = |secs: u64| Duration::from_secs(secs);
    let mut first = execute(store.begin(&k, &fp, &opts(10)).await.expect("begin"));
    clock.advance(s(2));
    let point = RecoveryPoint::new("charge_created", b"ch_7".to_vec());
    store
        .checkpoint(&mut first, &point)
        .await
        .expect("checkpoint");
    // t = 8 s: renew to 18 s; the lease keeps the recovery point.
    clock.advance(s(6));
    store.renew(&mut first).await.expect("renew");
    assert_eq!(first.expires_at_ms(), START + 18_000);
    assert_eq!(first.recovery_point(), Some(&point));
    // t = 15 s, past the expiry of 12 s before the renewal: still in flight.
    clock.advance(s(7));
    let wait = in_flight(store.begin(&k, &fp, &opts(10)).await.expect("begin"));
    assert!(
        wait <= s(3) && wait > Duration::ZERO,
        "retry after {wait:?}"
    );
    // t = 20 s: the lease ran out but nobody took over, so renewing still works.
    clock.advance(s(5));
    store.renew(&mut first).await.expect("renew after expiry");
    assert_eq!(first.expires_at_ms(), START + 30_000);
    in_flight(store.begin(&k, &fp, &opts(10)).await.expect("begin"));
    // t = 31 s: the holder stopped renewing; a retry takes over and resumes
    // from the recovery point that the renewals kept.
    clock.advance(s(11));
    let second = execute(store.begin(&k, &fp, &opts(10)).await.expect("begin"));
    assert!(second.is_takeover());
    assert!(second.token() > first.token());
    assert_eq!(second.recovery_point(), Some(&point));
    // t = 36 s: the stale holder's renewal is fenced and changes nothing.
    clock.advance(s(5));
    assert!(matches!(
        store.renew(&mut first).await,
        Err(Error::LeaseLost)
    ));
    assert_eq!(first.expires_at_ms(), START + 30_000);
    // t = 41 s: the new holder's lease ran out when it would have without the
    // stale renewal (which would have extended it to 46 s): a third taker wins.
    clock.advance(s(5));
    let mut third = execute(store.begin(&k, &fp, &opts(10)).await.expect("begin"));
    assert!(third.token() > second.token());
    assert_eq!(third.recovery_point(), Some(&point));
    store
        .complete(
            &third,
            &StoredResponse::new(201, "once"),
            Duration::from_secs(60),
        )
        .await
        .expect("complete");
    assert!(matches!(
        store.renew(&mut third).await,
        Err(Error::LeaseLost)
    ));
    assert_eq!(
        replay(store.begin(&k, &fp, &opts(10)).await.expect("begin")).body,
        "once"
    );
    b.cleanup(&ns).await;
}

/// Concurrent takers of an expired lease: exactly one wins.
pub async fn concurrent_takeover_single_winner(b: &dyn Backend) {
    let clock = ManualClock::new(START);
    let Some((store, ns)) = open(b, "ctake", &clock).await else {
        return;
    };
    let k = key("ct");
    let fp = Fingerprint::of_bytes(b"ct");
    let _dead = execute(store.begin(&k, &fp, &opts(5)).await.expect("begin"));
    clock.advance(Duration::from_secs(6));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        let (k, fp) = (k.clone(), fp);
        tasks.push(tokio::spawn(async move {
            store.begin(&k, &fp, &opts(5)).await.expect("begin")
        }));
    }
    let mut tokens = HashSet::new();
    for t in tasks {
        if let Begin::Execute(l) = t.await.expect("task") {
            assert!(l.is_takeover());
            tokens.insert(l.token());
        }
    }
    assert_eq!(tokens.len(), 1, "exactly one takeover");
    b.cleanup(&ns).await;
}

/// Release: without a recovery point the key is free for any request; with
/// one, a retry of the same request resumes from it.
pub async fn release_allows_retry(b: &dyn Backend) {
    let clock = ManualClock::new(START);
    let Some((store, ns)) = open(b, "release", &clock).await else {
        return;
    };
    let k = key("r");
    let fp = Fingerprint::of_bytes(b"r");
    let lease = execute(store.begin(&k, &fp, &opts(30)).await.expect("begin"));
    store.release(&lease).await.expect("release");
    assert!(matches!(store.release(&lease).await, Err(Error::LeaseLost)));
    let other = Fingerprint::of_bytes(b"other");
    let mut lease = execute(store.begin(&k, &other, &opts(30)).await.expect("begin"));
    assert!(lease.recovery_point().is_none());
    let point = RecoveryPoint::new("authorized", b"auth_1".to_vec());
    store
        .checkpoint(&mut lease, &point)
        .await
        .expect("checkpoint");
    store.release(&lease).await.expect("release");
    assert_eq!(
        store.begin(&k, &fp, &opts(30)).await.expect("begin"),
        Begin::Mismatch
    );
    let resumed = execute(store.begin(&k, &other, &opts(30)).await.expect("begin"));
    assert_eq!(resumed.recovery_point(), Some(&point));
    assert!(resumed.token() > lease.token());
    b.cleanup(&ns).await;
}

/// Records expire after their TTL (completed or abandoned) and the reaper
/// deletes them in batches.
pub async fn ttl_expiry_and_reaping(b: &dyn Backend) {
    let clock = ManualClock::new(START);
    let Some((store, ns)) = open(b, "ttl", &clock).await else {
        return;
    };
    let fp = Fingerprint::of_bytes(b"ttl");
    let hour = Duration::from_secs(3600);
    let o = opts(30).ttl(hour);
    let lease = execute(store.begin(&key("done"), &fp, &o).await.expect("begin"));
    store
        .complete(&lease, &StoredResponse::new(200, "kept"), hour)
        .await
        .expect("complete");
    let _abandoned = execute(
        store
            .begin(&key("abandoned"), &fp, &o)
            .await
            .expect("begin"),
    );
    let _other = execute(store.begin(&key("other"), &fp, &o).await.expect("begin"));
    clock.advance(Duration::from_secs(59 * 60));
    assert_eq!(
        replay(store.begin(&key("done"), &fp, &o).await.expect("begin")).body,
        "kept"
    );
    assert_eq!(store.reap_expired(100).await.expect("reap"), 0);
    clock.advance(Duration::from_secs(2 * 60));
    // Expired but not reaped yet: counts as absent, even for another request.
    let fresh = execute(
        store
            .begin(&key("done"), &Fingerprint::of_bytes(b"new"), &o)
            .await
            .expect("begin"),
    );
    assert!(!fresh.is_takeover());
    assert!(fresh.token() > lease.token());
    assert_eq!(store.reap_expired(1).await.expect("reap"), 1);
    assert_eq!(reap_all(&*store, 1).await.expect("reap"), 1);
    assert_eq!(store.reap_expired(10).await.expect("reap"), 0);
    // The fresh claim survived reaping.
    assert!(matches!(
        store
            .begin(&key("done"), &Fingerprint::of_bytes(b"new"), &o)
            .await
            .expect("begin"),
        Begin::InFlight { .. }
    ));
    let again = execute(
        store
            .begin(&key("abandoned"), &fp, &o)
            .await
            .expect("begin"),
    );
    assert!(again.recovery_point().is_none());
    b.cleanup(&ns).await;
}

const CRASH_KEY: &str = "crash-key";

/// The child half of [`killed_holder_is_taken_over`]: when
/// [`CRASH_CHILD_ENV`] is set, claims the crash key, records a recovery
/// point, prints `CLAIMED <token>` and hangs until killed. Returns at once
/// otherwise.
pub async fn crash_child(b: &dyn Backend) {
    let Ok(ns) = std::env::var(CRASH_CHILD_ENV) else {
        return;
    };
    let store = b
        .open(&ns, Arc::new(SystemClock))
        .await
        .expect("child opens the parent's namespace");
    let fp = Fingerprint::of_bytes(b"crash");
    let mut lease = execute(
        store
            .begin(&key(CRASH_KEY), &fp, &opts(30))
            .await
            .expect("begin"),
    );
    store
        .checkpoint(
            &mut lease,
            &RecoveryPoint::new("printing", b"job-7".to_vec()),
        )
        .await
        .expect("checkpoint");
    println!("CLAIMED {}", lease.token());
    std::future::pending::<()>().await;
}

/// A real child process claims a key and is killed with SIGKILL between
/// claim and completion; a later request takes the key over once the lease
/// has run out, resumes from the child's recovery point and completes.
///
/// `child_test` is the exact name of the test that calls [`crash_child`].
pub async fn killed_holder_is_taken_over(b: &dyn Backend, child_test: &str) {
    if !b.durable() {
        println!("skipping crash test: this backend does not outlive its process");
        return;
    }
    let clock = ManualClock::starting_now();
    let Some((store, ns)) = open(b, "crash", &clock).await else {
        return;
    };
    let exe = std::env::current_exe().expect("test binary path");
    let child = Command::new(exe)
        .args([child_test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_ENV, &ns)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("child stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("read child");
                // libtest prints "test name ... " before the child's output.
                if let Some((_, t)) = line.split_once("CLAIMED ") {
                    return t.trim().parse::<i64>().expect("token");
                }
            }
            panic!("child exited without claiming");
        }),
    )
    .await
    .expect("child claimed in time")
    .expect("reader");
    child.0.kill().expect("SIGKILL child");
    let status = child.0.wait().expect("reap child");
    assert!(!status.success(), "child was killed");

    let fp = Fingerprint::of_bytes(b"crash");
    let k = key(CRASH_KEY);
    // The dead child's lease still holds...
    assert!(matches!(
        store.begin(&k, &fp, &opts(30)).await.expect("begin"),
        Begin::InFlight { .. }
    ));
    // ... until it runs out.
    clock.advance(Duration::from_secs(31));
    let lease = execute(store.begin(&k, &fp, &opts(30)).await.expect("begin"));
    assert!(lease.is_takeover());
    assert!(
        lease.token() > line,
        "token {} after child's {line}",
        lease.token()
    );
    assert_eq!(
        lease.recovery_point(),
        Some(&RecoveryPoint::new("printing", b"job-7".to_vec()))
    );
    store
        .complete(
            &lease,
            &StoredResponse::new(200, "printed once"),
            Duration::from_secs(60),
        )
        .await
        .expect("complete");
    assert_eq!(
        replay(store.begin(&k, &fp, &opts(30)).await.expect("begin")).body,
        "printed once"
    );
    b.cleanup(&ns).await;
}

/// Kills the child if the parent test fails early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Generates the conformance tests for a backend value. Invoke at the crate
/// root of a test file (the crash test re-runs the binary with
/// `conformance_crash_child --exact`).
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_claim_complete_replay() {
            $crate::conformance::claim_complete_replay(&$backend).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_concurrent_duplicates_execute_once() {
            $crate::conformance::concurrent_duplicates_execute_once(&$backend).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_mismatch() {
            $crate::conformance::mismatch(&$backend).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_lease_expiry_takeover_and_fencing() {
            $crate::conformance::lease_expiry_takeover_and_fencing(&$backend).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_renew_extends_lease_and_is_fenced() {
            $crate::conformance::renew_extends_lease_and_is_fenced(&$backend).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_concurrent_takeover_single_winner() {
            $crate::conformance::concurrent_takeover_single_winner(&$backend).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_release_allows_retry() {
            $crate::conformance::release_allows_retry(&$backend).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_ttl_expiry_and_reaping() {
            $crate::conformance::ttl_expiry_and_reaping(&$backend).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_killed_holder_is_taken_over() {
            $crate::conformance::killed_holder_is_taken_over(&$backend, "conformance_crash_child")
                .await;
        }
        /// Acts only when started by `conformance_killed_holder_is_taken_over`.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_crash_child() {
            $crate::conformance::crash_child(&$backend).await;
        }
    };
}
