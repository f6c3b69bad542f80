//! Windows, open durations and slow calls against tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use counterfoil_breaker::{CircuitBreaker, OpenDuration, State, TokioClock, Window};
use tokio::time::{advance, sleep};

async fn fail(b: &CircuitBreaker) {
    let _ = b.call(async { Err::<(), _>("boom") }).await;
}

async fn ok(b: &CircuitBreaker) {
    b.call(async { Ok::<_, ()>(()) }).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn time_window_rolls_old_failures_out() {
    let b = CircuitBreaker::builder()
        .window(Window::Time(5))
        .minimum_calls(4)
        .failure_rate(0.5)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    for _ in 0..3 {
        fail(&b).await;
    }
    assert_eq!(b.state(), State::Closed, "3 calls: under the minimum");
    advance(Duration::from_secs(5)).await;
    assert_eq!(b.snapshot().calls, 0, "second 0 has left the 5 s window");
    for _ in 0..3 {
        ok(&b).await;
    }
    fail(&b).await;
    // Had the window kept the old failures it would hold 4 failures in 7 calls and be open.
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().failure_rate, 0.25);
    advance(Duration::from_secs(1)).await;
    fail(&b).await;
    assert_eq!(b.state(), State::Closed, "2 of 5");
    fail(&b).await;
    assert_eq!(b.state(), State::Open, "3 of 6 reaches 50 %");
}

#[tokio::test(start_paused = true)]
async fn time_window_buckets_roll_one_second_at_a_time() {
    let b = CircuitBreaker::builder()
        .window(Window::Time(3))
        .minimum_calls(100)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    for _ in 0..4 {
        ok(&b).await;
        fail(&b).await;
        advance(Duration::from_secs(1)).await;
    }
    // Seconds 1, 2 and 3 are in the window now (at 4.0 s, seconds 2, 3 and the empty 4).
    let s = b.snapshot();
    assert_eq!((s.calls, s.failures), (4, 2));
}

#[tokio::test(start_paused = true)]
async fn open_duration_elapses_then_probes_close() {
    let b = CircuitBreaker::builder()
        .window(Window::ConsecutiveFailures(2))
        .open_duration(OpenDuration::fixed(Duration::from_secs(10)))
        .half_open_calls(1)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    fail(&b).await;
    fail(&b).await;
    assert_eq!(b.state(), State::Open);
    sleep(Duration::from_millis(9_999)).await;
    let err = b.call(async { Ok::<_, ()>(()) }).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_millis(1)));
    sleep(Duration::from_millis(1)).await;
    assert_eq!(b.state(), State::HalfOpen);
    ok(&b).await;
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn open_duration_backs_off_across_failed_recoveries() {
    let b = CircuitBreaker::builder()
        .window(Window::ConsecutiveFailures(1))
        .open_duration(OpenDuration::backoff(
            Duration::from_secs(1),
            Duration::from_secs(8),
        ))
        .half_open_calls(1)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    let mut waited = Vec::new();
    fail(&b).await;
    for _ in 0..5 {
        let start = tokio::time::Instant::now();
        while b.state() == State::Open {
            sleep(Duration::from_millis(100)).await;
        }
        waited.push(start.elapsed().as_secs());
        fail(&b).await; // the probe fails
    }
    assert_eq!(waited, [1, 2, 4, 8, 8]);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker_without_being_cancelled() {
    let b = CircuitBreaker::builder()
        .window(Window::Count(4))
        .minimum_calls(4)
        .slow_calls(Duration::from_secs(2), 0.5)
        .clock(TokioClock::new())
        .build()
        .unwrap();
    for secs in [3, 0, 0, 3] {
        let v = b
            .call(async move {
                sleep(Duration::from_secs(secs)).await;
                Ok::<_, ()>(secs)
            })
            .await
            .unwrap();
        assert_eq!(v, secs, "slow calls complete");
    }
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.snapshot().slow_call_rate, 0.5);
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_cannot_wedge_half_open() {
    let b = CircuitBreaker::builder()
        .half_open_calls(1)
        .max_wait_in_half_open(Some(Duration::from_secs(5)))
        .open_duration(OpenDuration::fixed(Duration::from_secs(1)))
        .clock(TokioClock::new())
        .build()
        .unwrap();
    b.open_for(Duration::ZERO);
    let hung = tokio::spawn({
        let b = b.clone();
        async move { b.call(std::future::pending::<Result<(), ()>>()).await }
    });
    tokio::task::yield_now().await;
    assert!(b.try_acquire().is_err(), "the only probe is taken");
    sleep(Duration::from_secs(5)).await;
    assert_eq!(b.state(), State::Open, "max wait reached: open again");
    sleep(Duration::from_secs(1)).await;
    ok(&b).await;
    assert_eq!(b.state(), State::Closed);
    hung.abort();
}

#[tokio::test(start_paused = true)]
async fn open_to_half_open_happens_on_time_without_calls() {
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let b = CircuitBreaker::builder()
        .window(Window::ConsecutiveFailures(1))
        .open_duration(OpenDuration::fixed(Duration::from_secs(10)))
        .max_wait_in_half_open(Some(Duration::from_secs(5)))
        .clock(TokioClock::new())
        .on_event(move |e| {
            if let counterfoil_breaker::Event::StateTransition { to, .. } = e {
                log.lock().unwrap().push((tokio::time::Instant::now(), *to));
            }
        })
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    fail(&b).await;
    // Nobody calls and nobody looks: the timers alone move the breaker.
    sleep(Duration::from_secs(16)).await;
    let seen: Vec<(u64, State)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(t, s)| ((*t - start).as_secs(), *s))
        .collect();
    assert_eq!(
        seen,
        [(0, State::Open), (10, State::HalfOpen), (15, State::Open)]
    );
}
