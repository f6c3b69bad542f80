//! Closed-state overhead of counterfoil-breaker against a bare call and against recloser and
//! tower-resilience-circuitbreaker, on one thread and on two threads sharing one breaker.
//!
//! Run with `cargo bench -p counterfoil-breaker --all-features --bench breaker`.
//! Every subject runs `iters` calls that succeed, inside a current-thread tokio runtime per
//! thread; the two-thread figure is the slower thread's time per call. The table printed at
//! the end gives each subject's median over criterion's samples, its overhead over the
//! matching bare baseline, and the ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::future::Future;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use counterfoil_breaker::{CircuitBreaker, CircuitBreakerLayer, CircuitBreakerService, Window};
use criterion::{Criterion, criterion_group};
use tower::{Layer, Service, ServiceExt, service_fn};

static SAMPLES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(id: &str, iters: u64, d: Duration) -> Duration {
    let per_call = d.as_nanos() as f64 / iters.max(1) as f64;
    SAMPLES
        .lock()
        .unwrap()
        .entry(id.to_owned())
        .or_default()
        .push(per_call);
    d
}

fn median(id: &str) -> Option<f64> {
    let samples = SAMPLES.lock().unwrap();
    let mut v = samples.get(id)?.clone();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

async fn work(i: u64) -> Result<u64, std::io::Error> {
    Ok(black_box(i))
}

/// Something that makes one successful call.
trait Subject: Clone + Send + 'static {
    fn call(&mut self, i: u64) -> impl Future<Output = u64>;
}

#[derive(Clone)]
struct Bare;
impl Subject for Bare {
    async fn call(&mut self, i: u64) -> u64 {
        work(i).await.unwrap()
    }
}

#[derive(Clone)]
struct BareSync;
impl Subject for BareSync {
    async fn call(&mut self, i: u64) -> u64 {
        let f = || Ok::<u64, std::io::Error>(black_box(i));
        black_box(&f)().unwrap()
    }
}

#[derive(Clone)]
struct Ours(CircuitBreaker);
impl Subject for Ours {
    async fn call(&mut self, i: u64) -> u64 {
        self.0.call(work(i)).await.unwrap()
    }
}

#[derive(Clone)]
struct RecloserSync(Arc<recloser::Recloser>);
impl Subject for RecloserSync {
    async fn call(&mut self, i: u64) -> u64 {
        self.0
            .call(|| Ok::<u64, std::io::Error>(black_box(i)))
            .unwrap()
    }
}

#[derive(Clone)]
struct RecloserAsync(recloser::AsyncRecloser);
impl Subject for RecloserAsync {
    async fn call(&mut self, i: u64) -> u64 {
        self.0.call(work(i)).await.unwrap()
    }
}

/// Any tower service, driven as `ready().await?.call(i).await`.
#[derive(Clone)]
struct Tower<S>(S);
impl<S> Subject for Tower<S>
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    async fn call(&mut self, i: u64) -> u64 {
        self.0.ready().await.unwrap().call(i).await.unwrap()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn run<S: Subject>(s: &mut S, iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        black_box(s.call(i).await);
    }
    start.elapsed()
}

fn one_thread<S: Subject>(c: &mut Criterion, id: &str, subject: S) {
    let rt = runtime();
    c.bench_function(&format!("1T/{id}"), |b| {
        b.iter_custom(|iters| {
            let mut s = subject.clone();
            let d = rt.block_on(run(&mut s, iters));
            record(&format!("1T/{id}"), iters, d)
        })
    });
}

fn two_threads<S: Subject>(c: &mut Criterion, id: &str, subject: S) {
    c.bench_function(&format!("2T/{id}"), |b| {
        b.iter_custom(|iters| {
            let barrier = Arc::new(Barrier::new(2));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let mut s = subject.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        let rt = runtime();
                        rt.block_on(async {
                            barrier.wait();
                            run(&mut s, iters).await
                        })
                    })
                })
                .collect();
            let d = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .max()
                .unwrap();
            record(&format!("2T/{id}"), iters, d)
        })
    });
}

fn both<S: Subject>(c: &mut Criterion, id: &str, subject: S) {
    one_thread(c, id, subject.clone());
    two_threads(c, id, subject);
}

fn svc() -> impl Service<u64, Response = u64, Error = std::io::Error, Future: Send> + Clone + Send {
    service_fn(work)
}

fn subjects(c: &mut Criterion) {
    both(c, "bare", Bare);
    both(c, "bare-sync", BareSync);
    both(c, "counterfoil", Ours(CircuitBreaker::new("bench")));
    both(
        c,
        "counterfoil-time",
        Ours(
            CircuitBreaker::builder()
                .window(Window::Time(10))
                .build()
                .unwrap(),
        ),
    );
    both(
        c,
        "recloser",
        RecloserSync(Arc::new(recloser::Recloser::default())),
    );
    both(
        c,
        "recloser-async",
        RecloserAsync(recloser::AsyncRecloser::from(recloser::Recloser::default())),
    );
    both(c, "tower-bare", Tower(svc()));
    let ours: CircuitBreakerService<_> =
        CircuitBreakerLayer::new(CircuitBreaker::new("bench-tower")).layer(svc());
    both(c, "counterfoil-tower", Tower(ours));
    let theirs = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .unwrap()
        .layer(svc());
    both(c, "tower-resilience", Tower(theirs));
}

fn report() {
    let m = |id: &str| median(id).unwrap_or(f64::NAN);
    println!();
    println!("closed-state success, median ns per call (overhead = subject - its bare baseline)");
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9}",
        "subject", "1T", "1T over", "2T", "2T over"
    );
    let rows = [
        ("bare", "bare"),
        ("bare-sync", "bare-sync"),
        ("counterfoil", "bare"),
        ("counterfoil-time", "bare"),
        ("recloser", "bare-sync"),
        ("recloser-async", "bare"),
        ("tower-bare", "tower-bare"),
        ("counterfoil-tower", "tower-bare"),
        ("tower-resilience", "tower-bare"),
    ];
    let mut over = BTreeMap::new();
    for (id, base) in rows {
        let (a, b) = (m(&format!("1T/{id}")), m(&format!("2T/{id}")));
        let (oa, ob) = (a - m(&format!("1T/{base}")), b - m(&format!("2T/{base}")));
        over.insert(id, (oa, ob));
        println!("{id:<22} {a:>9.2} {oa:>9.2} {b:>9.2} {ob:>9.2}");
    }
    let ours = over["counterfoil"];
    let peers = ["recloser", "recloser-async", "tower-resilience"];
    let (fastest, fo) = peers
        .iter()
        .map(|p| (*p, over[p].0))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    println!();
    println!(
        "counterfoil 1T overhead: {:.2} ns (target <= 15 ns)",
        ours.0
    );
    println!(
        "counterfoil 1T overhead / fastest peer's ({fastest}, {fo:.2} ns): {:.3} (target <= 0.5)",
        ours.0 / fo
    );
    println!(
        "counterfoil 2T overhead {:.2} ns / 1T overhead {:.2} ns: {:.2} (target <= 2; both near zero make this ratio noise)",
        ours.1,
        ours.0,
        ours.1 / ours.0
    );
    for p in [
        "recloser",
        "recloser-async",
        "tower-resilience",
        "counterfoil-tower",
    ] {
        let (a, b) = over[p];
        println!("{p}: 2T overhead / 1T overhead = {:.2}", b / a);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = subjects
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
