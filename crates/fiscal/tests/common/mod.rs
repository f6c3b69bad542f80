//! Shared helpers of the integration tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use counterfoil_fiscal::isl::link::LinkConfig;
use counterfoil_fiscal::isl::transport::TcpConnector;
use counterfoil_fiscal::sim::{SimConfig, SimHandle, Simulator};
use counterfoil_fiscal::{
    ActorConfig, DatecsConfig, DatecsPrinter, Dialect, FiscalPrinter, Journal, Money, PaymentType,
    PrinterHandle, Qty, Receipt, VatGroup,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Link settings for loopback: short timeouts, as if the device were fast.
pub fn fast_link() -> LinkConfig {
    LinkConfig {
        reply_timeout: Duration::from_millis(60),
        max_resends: 4,
        max_busy: Duration::from_secs(5),
    }
}

pub fn sim_config(dialect: Dialect) -> SimConfig {
    let mut c = SimConfig::new(dialect);
    c.syn_interval = Duration::from_millis(2);
    c.busy_grace = Duration::from_millis(500);
    c
}

pub async fn sim(dialect: Dialect) -> SimHandle {
    Simulator::start(sim_config(dialect)).await.unwrap()
}

pub fn printer(sim: &SimHandle, dialect: Dialect) -> Arc<DatecsPrinter> {
    printer_at(&sim.addr().to_string(), dialect)
}

pub fn printer_at(addr: &str, dialect: Dialect) -> Arc<DatecsPrinter> {
    let mut cfg = DatecsConfig::new(dialect);
    cfg.link = fast_link();
    cfg.pause_poll = Duration::from_millis(5);
    cfg.pause_limit = Duration::from_secs(20);
    Arc::new(DatecsPrinter::new(
        Arc::new(TcpConnector::new(addr).connect_timeout(Duration::from_secs(1))),
        cfg,
    ))
}

pub fn actor_config(id: &str) -> ActorConfig {
    let mut c = ActorConfig::new(id);
    c.backoff = Duration::from_millis(5);
    c.max_backoff = Duration::from_millis(50);
    c.offline_wait = Duration::from_secs(3);
    c.poll_every = Duration::from_secs(3600);
    c.max_attempts = 4;
    c
}

pub fn actor(p: Arc<DatecsPrinter>, j: Arc<dyn Journal>, id: &str) -> PrinterHandle {
    PrinterHandle::spawn(p as Arc<dyn FiscalPrinter>, j, actor_config(id))
}

/// A receipt of `n` lines, paid by card then cash (with change).
pub fn receipt(unp: &str, n: usize) -> Receipt {
    let mut r = Receipt::new().sale_number(unp);
    let mut total = 0;
    for i in 0..n {
        let price = 150 + 10 * i as i64;
        r = r.sale(format!("Item {i}"), Money(price), Qty(1500), VatGroup::B);
        total += price * 3 / 2;
    }
    r.comment("Thank you")
        .pay(PaymentType::Card, Money(total / 2))
        .pay(PaymentType::Cash, Money(total - total / 2 + 100))
}

pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("fiscal-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Receipts with this UNP in the device's electronic journal.
pub fn ej_count(sim: &SimHandle, unp: &str) -> usize {
    sim.state()
        .ej
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                counterfoil_fiscal::sim::EjKind::Receipt
                    | counterfoil_fiscal::sim::EjKind::Reversal
            ) && e.unp.as_deref() == Some(unp)
        })
        .count()
}

pub fn pg_url() -> Option<String> {
    match std::env::var("TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("TEST_POSTGRES_URL is not set and CI=true");
            }
            eprintln!("skipping: TEST_POSTGRES_URL is not set");
            None
        }
    }
}
