//! The framework-free runner: replay, release on failure, resume from a
//! recovery point, in-flight policies.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use counterfoil_idempotency::{
    Error, Fingerprint, Idempotency, IdempotencyKey, InFlightPolicy, InMemoryIdempotencyStore,
    ManualClock, RecoveryPoint, RunError, Scope,
};

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(Scope::new("r-1", "", "print_receipt").unwrap(), k).unwrap()
}

#[tokio::test]
async fn failure_releases_and_retry_resumes_from_the_recovery_point() {
    let idem = Idempotency::new(Arc::new(InMemoryIdempotencyStore::new()));
    let fp = Fingerprint::of_bytes(b"job");
    let attempts = AtomicUsize::new(0);
    let r = idem
        .run(&key("j"), &fp, |mut lease| {
            let idem = idem.clone();
            let attempts = &attempts;
            async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                idem.checkpoint(
                    &mut lease,
                    &RecoveryPoint::new("sent_to_printer", b"doc-1".to_vec()),
                )
                .await
                .unwrap();
                Err::<u32, _>("paper out")
            }
        })
        .await;
    assert!(matches!(r, Err(RunError::Operation("paper out"))));
    let r = idem
        .run(&key("j"), &fp, |lease| async move {
            let p = lease.recovery_point().expect("resumes");
            assert_eq!(
                (p.phase.as_str(), p.state.as_slice()),
                ("sent_to_printer", &b"doc-1"[..])
            );
            Ok::<_, &str>(7_u32)
        })
        .await
        .unwrap();
    assert_eq!((r.value, r.replayed), (7, false));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    let r = idem
        .run(&key("j"), &fp, |_| async { Ok::<u32, &str>(0) })
        .await
        .unwrap();
    assert_eq!((r.value, r.replayed), (7, true));
    let other = idem
        .run(&key("j"), &Fingerprint::of_bytes(b"other"), |_| async {
            Ok::<u32, &str>(0)
        })
        .await;
    assert!(matches!(other, Err(RunError::Idempotency(Error::Mismatch))));
}

#[tokio::test(start_paused = true)]
async fn in_flight_rejects_or_waits_for_the_replay() {
    let store = Arc::new(InMemoryIdempotencyStore::new());
    let idem = Idempotency::new(store.clone());
    let waiting = Idempotency::new(store).in_flight(InFlightPolicy::Wait(Duration::from_secs(5)));
    let fp = Fingerprint::of_bytes(b"x");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn({
        let idem = idem.clone();
        async move {
            idem.run(&key("w"), &fp, |_| async move {
                rx.await.unwrap();
                Ok::<_, std::io::Error>("done".to_owned())
            })
            .await
            .unwrap()
        }
    });
    tokio::task::yield_now().await;
    let rejected = idem
        .run(&key("w"), &fp, |_| async {
            Ok::<String, std::io::Error>("dup".into())
        })
        .await;
    assert!(matches!(
        rejected,
        Err(RunError::Idempotency(Error::InFlight { .. }))
    ));
    let second = tokio::spawn({
        let waiting = waiting.clone();
        async move {
            waiting
                .run(&key("w"), &fp, |_| async {
                    Ok::<String, std::io::Error>("dup".into())
                })
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    tx.send(()).unwrap();
    assert_eq!(first.await.unwrap().value, "done");
    let r = second.await.unwrap();
    assert_eq!((r.value.as_str(), r.replayed), ("done", true));
}

#[tokio::test(start_paused = true)]
async fn wait_is_bounded() {
    let store = Arc::new(InMemoryIdempotencyStore::new());
    let fp = Fingerprint::of_bytes(b"x");
    let idem = Idempotency::new(store).in_flight(InFlightPolicy::Wait(Duration::from_secs(2)));
    let held = idem
        .store()
        .begin(&key("b"), &fp, &Default::default())
        .await
        .unwrap();
    assert!(matches!(held, counterfoil_idempotency::Begin::Execute(_)));
    let started = tokio::time::Instant::now();
    let r = idem
        .run(&key("b"), &fp, |_| async { Ok::<u8, std::io::Error>(1) })
        .await;
    assert!(matches!(
        r,
        Err(RunError::Idempotency(Error::InFlight { .. }))
    ));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test]
async fn stale_runner_is_fenced() {
    let clock = ManualClock::new(1_000_000);
    let store = Arc::new(InMemoryIdempotencyStore::new().with_clock(Arc::new(clock.clone())));
    let idem = Idempotency::new(store).lease(Duration::from_secs(10));
    let fp = Fingerprint::of_bytes(b"x");
    let r = idem
        .run(&key("s"), &fp, |_| {
            let idem = idem.clone();
            let clock = clock.clone();
            async move {
                // While this run is paused past its lease, another takes over.
                clock.advance(Duration::from_secs(11));
                let other = idem
                    .run(&key("s"), &fp, |_| async { Ok::<u8, &str>(2) })
                    .await
                    .unwrap();
                assert_eq!(other.value, 2);
                Ok::<u8, &str>(1)
            }
        })
        .await;
    assert!(matches!(r, Err(RunError::Idempotency(Error::LeaseLost))));
    let again = idem
        .run(&key("s"), &fp, |_| async { Ok::<u8, &str>(3) })
        .await
        .unwrap();
    assert_eq!((again.value, again.replayed), (2, true));
}
