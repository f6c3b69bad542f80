//! Heap use, measured with a counting global allocator (dhat in testing mode): no allocation
//! per call in the closed state, and the memory of a registry of 10,000 breakers.
//!
//! A plain `main` (`harness = false`): the allocator's statistics are process-wide, so no
//! other thread (such as the test harness's) may run while it measures.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use counterfoil_breaker::{BreakerRegistry, CircuitBreaker, CircuitBreakerLayer, Outcome, Window};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn ready<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the call was expected to complete at once"),
    }
}

fn blocks() -> u64 {
    dhat::HeapStats::get().total_blocks
}

fn allocations_per_call(b: &CircuitBreaker, calls: u64) -> u64 {
    // Warm up past the count window's filling phase.
    for i in 0..200u64 {
        ready(b.call(async move { Ok::<_, ()>(i) })).unwrap();
    }
    let before = blocks();
    for i in 0..calls {
        ready(b.call(async move { Ok::<_, ()>(i) })).unwrap();
        let p = b.try_acquire().unwrap();
        p.record(Outcome::Success);
    }
    blocks() - before
}

fn main() {
    heap_use();
    println!("heap use: ok");
}

fn heap_use() {
    let _profiler = dhat::Profiler::builder().testing().build();

    let default = CircuitBreaker::new("default");
    assert_eq!(allocations_per_call(&default, 10_000), 0, "count window");
    let time = CircuitBreaker::builder()
        .window(Window::Time(10))
        .slow_calls(Duration::from_secs(1), 0.5)
        .build()
        .unwrap();
    assert_eq!(
        allocations_per_call(&time, 10_000),
        0,
        "time window with slow calls"
    );
    let consecutive = CircuitBreaker::builder()
        .window(Window::ConsecutiveFailures(5))
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&consecutive, 10_000), 0, "consecutive");

    // Failures below the threshold take the slow path; it does not allocate either.
    let before = blocks();
    for i in 0..10_000u64 {
        let r = ready(default.call(async move { if i % 10 == 0 { Err(()) } else { Ok(i) } }));
        assert_eq!(r.is_ok(), i % 10 != 0);
    }
    assert_eq!(blocks() - before, 0, "closed with some failures");

    // The tower service.
    let mut svc = CircuitBreakerLayer::new(default.clone())
        .layer(service_fn(|n: u64| async move { Ok::<_, ()>(n) }));
    let before = blocks();
    for i in 0..10_000u64 {
        ready(svc.call(i)).unwrap();
    }
    assert_eq!(blocks() - before, 0, "tower service");

    // 10,000 keyed breakers.
    let registry: BreakerRegistry<String> = BreakerRegistry::builder().build().unwrap();
    let keys: Vec<String> = (0..10_000).map(|i| format!("printer-{i:05}")).collect();
    let before = dhat::HeapStats::get().curr_bytes;
    for k in &keys {
        ready(registry.get(k).call(async { Ok::<_, ()>(()) })).unwrap();
    }
    let bytes = dhat::HeapStats::get().curr_bytes - before;
    println!(
        "registry of {} breakers: {} bytes ({:.1} MB, {} bytes each)",
        registry.len(),
        bytes,
        bytes as f64 / 1e6,
        bytes / registry.len()
    );
    assert_eq!(registry.len(), 10_000);
    assert!(bytes < 10_000_000, "{bytes} bytes");
}
