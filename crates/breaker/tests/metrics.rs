//! The `metrics` feature: transitions, rejections and thresholds reach the recorder.
#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use counterfoil_breaker::{CircuitBreaker, Window};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

#[derive(Debug, Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.0.store(value as u64, Ordering::SeqCst);
    }
}

/// Keeps every counter and gauge by its name and labels.
#[derive(Debug, Default)]
struct Collect(Mutex<BTreeMap<String, Arc<Cell>>>);

impl Collect {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.0.lock().unwrap().entry(name).or_default().clone()
    }

    fn get(&self, name: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| c.0.load(Ordering::SeqCst))
    }
}

impl Recorder for Collect {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn transitions_rejections_and_thresholds_are_counted() {
    let recorder = Collect::default();
    metrics::with_local_recorder(&recorder, || {
        let b = CircuitBreaker::builder()
            .name("psp")
            .window(Window::ConsecutiveFailures(2))
            .build()
            .unwrap();
        for _ in 0..2 {
            b.try_acquire().unwrap().failure();
        }
        for _ in 0..3 {
            assert!(b.try_acquire().is_err());
        }
        b.reset();
    });
    assert_eq!(
        recorder.get("counterfoil_breaker_transitions_total{breaker=psp,to=open}"),
        1
    );
    assert_eq!(
        recorder.get("counterfoil_breaker_rejected_total{breaker=psp}"),
        3
    );
    assert_eq!(
        recorder.get(
            "counterfoil_breaker_threshold_exceeded_total{breaker=psp,threshold=consecutive_failures}"
        ),
        1
    );
    assert_eq!(
        recorder.get("counterfoil_breaker_resets_total{breaker=psp}"),
        1
    );
    // The gauge holds the state code of the last transition: closed is 0.
    assert_eq!(recorder.get("counterfoil_breaker_state{breaker=psp}"), 0);
}
