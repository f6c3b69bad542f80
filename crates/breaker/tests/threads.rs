//! Threads sharing one breaker: no outcome is lost or invented.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use counterfoil_breaker::{CircuitBreaker, ManualClock, State, Window};

fn hammer(
    b: &CircuitBreaker,
    threads: usize,
    per_thread: u64,
    fail_every: u64,
    clock: Option<&ManualClock>,
) {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (b, barrier) = (b.clone(), barrier.clone());
            let clock = clock.cloned();
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per_thread {
                    let p = b.try_acquire().unwrap();
                    if fail_every != 0 && i % fail_every == 0 {
                        p.failure();
                    } else {
                        p.success();
                    }
                    // One thread moves time along now and then.
                    if let (0, Some(c)) = (t, &clock)
                        && i % 1_000 == 999
                    {
                        c.advance(Duration::from_millis(300));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn time_window_counts_every_call_from_every_thread() {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder()
        .window(Window::Time(60))
        .minimum_calls(1_000_000)
        .clock(clock.clone())
        .build()
        .unwrap();
    hammer(&b, 4, 20_000, 100, Some(&clock));
    let s = b.snapshot();
    assert_eq!(s.calls, 80_000);
    assert_eq!(s.failures, 800);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn count_window_counts_every_call_from_every_thread() {
    let b = CircuitBreaker::builder()
        .window(Window::Count(1_000))
        .minimum_calls(1_000)
        .failure_rate(0.5)
        .build()
        .unwrap();
    hammer(&b, 4, 20_000, 100, None);
    let s = b.snapshot();
    assert_eq!(s.calls, 1_000);
    // Every 100th call of each thread failed: about 10 in the last 1,000 calls.
    assert!((1..=40).contains(&s.failures), "{}", s.failures);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn threads_that_all_fail_open_it() {
    let b = CircuitBreaker::builder()
        .window(Window::Time(10))
        .minimum_calls(100)
        .build()
        .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (b, barrier) = (b.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut admitted = 0;
                for _ in 0..10_000 {
                    if let Ok(p) = b.try_acquire() {
                        admitted += 1;
                        p.failure();
                    }
                }
                admitted
            })
        })
        .collect();
    let admitted: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(b.state(), State::Open);
    assert!((100..=102).contains(&admitted), "{admitted}");
}
