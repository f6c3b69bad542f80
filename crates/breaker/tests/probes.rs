//! Half-open probes under cancellation and contention.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use counterfoil_breaker::{CircuitBreaker, Outcome, State};
use tokio::sync::{Barrier, Notify};

fn half_open(n: u32) -> CircuitBreaker {
    let b = CircuitBreaker::builder()
        .half_open_calls(n)
        .max_wait_in_half_open(None)
        .build()
        .unwrap();
    b.open_for(Duration::ZERO);
    b
}

#[tokio::test]
async fn a_cancelled_probe_releases_its_permit() {
    let b = half_open(1);
    // Cancelled by a timeout.
    let r = tokio::time::timeout(
        Duration::from_millis(10),
        b.call(std::future::pending::<Result<(), ()>>()),
    )
    .await;
    assert!(r.is_err());
    assert_eq!(b.snapshot().probes_in_flight, 0);
    // Cancelled by aborting its task.
    let task = tokio::spawn({
        let b = b.clone();
        async move { b.call(std::future::pending::<Result<(), ()>>()).await }
    });
    while b.snapshot().probes_in_flight == 0 {
        tokio::task::yield_now().await;
    }
    assert!(b.try_acquire().is_err());
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(b.snapshot().probes_in_flight, 0);
    b.call(async { Ok::<_, ()>(()) }).await.unwrap();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_never_admit_more_than_n_probes() {
    const N: u32 = 5;
    const TASKS: usize = 200;
    let b = half_open(N);
    let barrier = Arc::new(Barrier::new(TASKS));
    let release = Arc::new(Notify::new());
    let admitted = Arc::new(AtomicUsize::new(0));
    let attempted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (b, barrier, release, admitted, attempted) = (
            b.clone(),
            barrier.clone(),
            release.clone(),
            admitted.clone(),
            attempted.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let permit = b.try_acquire_owned();
            attempted.fetch_add(1, Ordering::SeqCst);
            if let Ok(p) = permit {
                admitted.fetch_add(1, Ordering::SeqCst);
                let released = release.notified();
                released.await;
                p.record(Outcome::Success);
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        while attempted.load(Ordering::SeqCst) < TASKS {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert_eq!(admitted.load(Ordering::SeqCst), N as usize);
    assert_eq!(b.snapshot().probes_in_flight, N);
    release.notify_waiters();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_in_flight_stay_bounded_while_tasks_churn() {
    const N: usize = 3;
    let b = half_open(N as u32);
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let admitted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (b, running, peak, admitted) =
            (b.clone(), running.clone(), peak.clone(), admitted.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                let call = async {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    admitted.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Err::<(), &str>("declined")
                };
                // Declines are ignored: each probe gives its permit back, so half-open lasts.
                let _ = b
                    .call_classified(call, |_: &Result<(), &str>| Outcome::Ignored)
                    .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        peak.load(Ordering::SeqCst) <= N,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(admitted.load(Ordering::SeqCst) > N);
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.snapshot().probes_in_flight, 0);
}
