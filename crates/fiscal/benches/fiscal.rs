//! Throughput of the ISL codec and of one device actor.
//!
//! Run with `cargo bench -p counterfoil-fiscal --all-features --bench fiscal`.
//!
//! * codec: encode + decode of a sale frame, against a bare copy of the
//!   same bytes (the raw baseline);
//! * actor: receipts per second through one device actor (journal on
//!   SQLite in memory, and in memory) against a zero-delay simulator over
//!   loopback TCP, against the bare driver printing the same receipt with no
//!   actor and no journal (the baseline).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use counterfoil_fiscal::isl::codec::{Decoder, Direction, Event, encode_request};
use counterfoil_fiscal::isl::transport::TcpConnector;
use counterfoil_fiscal::sim::{SimConfig, Simulator};
use counterfoil_fiscal::{
    ActorConfig, DatecsConfig, DatecsPrinter, Dialect, FiscalPrinter, InMemoryJournal, Journal,
    Money, PaymentType, PrinterHandle, Qty, Receipt, SqliteJournal, VatGroup,
};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SALE: &[u8] = b"Espresso doppio\t2\t2.50\t2.000\t0\t0.00\t0\t";

fn codec_round_trip(dialect: Dialect, seq: u8) -> usize {
    let f = encode_request(dialect, seq, 0x31, SALE).unwrap();
    let mut d = Decoder::new(dialect, Direction::Request);
    d.push(&f);
    match d.next_event() {
        Some(Event::Frame(fr)) => fr.data.len(),
        _ => 0,
    }
}

fn memcpy_baseline(bytes: &[u8]) -> usize {
    let mut v = Vec::with_capacity(bytes.len());
    v.extend_from_slice(black_box(bytes));
    let mut w = Vec::with_capacity(v.len());
    w.extend_from_slice(black_box(&v));
    w.len()
}

fn receipt(i: u64) -> Receipt {
    Receipt::new()
        .sale_number(format!("AB000001-0001-{:07}", i % 10_000_000))
        .sale("Espresso", Money(250), Qty::units(2), VatGroup::B)
        .sale("Croissant", Money(320), Qty::ONE, VatGroup::B)
        .sale("Water", Money(150), Qty::ONE, VatGroup::A)
        .pay(PaymentType::Card, Money(970))
}

fn printer(addr: &str) -> Arc<DatecsPrinter> {
    Arc::new(DatecsPrinter::new(
        Arc::new(TcpConnector::new(addr)),
        DatecsConfig::new(Dialect::X),
    ))
}

fn time_per_iter(iters: u64, mut f: impl FnMut(u64)) -> f64 {
    let t = Instant::now();
    for i in 0..iters {
        f(i);
    }
    t.elapsed().as_secs_f64() / iters as f64
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();

    // --- codec ---
    let frame = encode_request(Dialect::X, 0x21, 0x31, SALE).unwrap();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    for dialect in [Dialect::Classic, Dialect::X] {
        g.bench_function(
            BenchmarkId::new("encode_decode_sale_frame", format!("{dialect:?}")),
            |b| b.iter(|| codec_round_trip(black_box(dialect), 0x21)),
        );
    }
    g.bench_function("baseline_memcpy_same_bytes", |b| {
        b.iter(|| memcpy_baseline(&frame))
    });
    g.finish();

    // --- actor ---
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (sim, handle_mem, handle_sqlite, bare) = rt.block_on(async {
        let sim = Simulator::start(SimConfig::new(Dialect::X)).await.unwrap();
        let addr = sim.addr().to_string();
        // One simulator serves one connection: the three clients take turns
        // through separate simulators of the same kind.
        let sim2 = Simulator::start(SimConfig::new(Dialect::X)).await.unwrap();
        let sim3 = Simulator::start(SimConfig::new(Dialect::X)).await.unwrap();
        let mut cfg = ActorConfig::new("bench");
        cfg.poll_every = Duration::from_secs(3600);
        let mem = PrinterHandle::spawn(
            printer(&addr) as Arc<dyn FiscalPrinter>,
            Arc::new(InMemoryJournal::new()),
            cfg.clone(),
        );
        let sq = SqliteJournal::connect("sqlite::memory:").await.unwrap();
        let sql = PrinterHandle::spawn(
            printer(&sim2.addr().to_string()) as Arc<dyn FiscalPrinter>,
            Arc::new(sq) as Arc<dyn Journal>,
            cfg,
        );
        let bare = printer(&sim3.addr().to_string());
        (vec![sim, sim2, sim3], mem, sql, bare)
    });
    let n = AtomicU64::new(0);
    let mut g = c.benchmark_group("actor");
    g.throughput(Throughput::Elements(1));
    g.bench_function("receipt_via_actor_memory_journal", |b| {
        b.to_async(&rt).iter(|| async {
            let i = n.fetch_add(1, Ordering::Relaxed);
            handle_mem
                .print_receipt(&format!("m{i}"), receipt(i))
                .await
                .unwrap()
        })
    });
    g.bench_function("receipt_via_actor_sqlite_journal", |b| {
        b.to_async(&rt).iter(|| async {
            let i = n.fetch_add(1, Ordering::Relaxed);
            handle_sqlite
                .print_receipt(&format!("s{i}"), receipt(i))
                .await
                .unwrap()
        })
    });
    g.bench_function("baseline_bare_driver_no_actor_no_journal", |b| {
        b.to_async(&rt).iter(|| async {
            let i = n.fetch_add(1, Ordering::Relaxed);
            bare.print_receipt(&receipt(i)).await.unwrap()
        })
    });
    g.finish();
    c.final_summary();

    // --- ratios, measured again in this run with plain timers ---
    let codec = time_per_iter(200_000, |i| {
        black_box(codec_round_trip(Dialect::X, 0x20 + (i % 90) as u8));
    });
    let copy = time_per_iter(200_000, |_| {
        black_box(memcpy_baseline(&frame));
    });
    println!(
        "codec: {:.0} frames/s encode+decode, memcpy baseline {:.0}/s, ratio {:.1}x the baseline's time",
        1.0 / codec,
        1.0 / copy,
        codec / copy
    );
    let k = 300;
    let actor_mem = rt.block_on(async {
        let t = Instant::now();
        for _ in 0..k {
            let i = n.fetch_add(1, Ordering::Relaxed);
            handle_mem
                .print_receipt(&format!("m{i}"), receipt(i))
                .await
                .unwrap();
        }
        t.elapsed().as_secs_f64() / f64::from(k)
    });
    let actor_sql = rt.block_on(async {
        let t = Instant::now();
        for _ in 0..k {
            let i = n.fetch_add(1, Ordering::Relaxed);
            handle_sqlite
                .print_receipt(&format!("s{i}"), receipt(i))
                .await
                .unwrap();
        }
        t.elapsed().as_secs_f64() / f64::from(k)
    });
    let driver = rt.block_on(async {
        let t = Instant::now();
        for _ in 0..k {
            let i = n.fetch_add(1, Ordering::Relaxed);
            bare.print_receipt(&receipt(i)).await.unwrap();
        }
        t.elapsed().as_secs_f64() / f64::from(k)
    });
    println!(
        "actor: {:.0} receipts/s (memory journal), {:.0} receipts/s (SQLite journal); bare driver baseline {:.0} receipts/s; ratio {:.2}x / {:.2}x the baseline's time",
        1.0 / actor_mem,
        1.0 / actor_sql,
        1.0 / driver,
        actor_mem / driver,
        actor_sql / driver
    );
    drop(sim);
}
