//! A driver process killed with SIGKILL in the middle of a receipt, then
//! restarted: the receipt ends printed exactly once.
//!
//! The parent test runs the simulator on loopback TCP and re-runs this test
//! binary as the driver process (the `crash_child` test, which does nothing
//! unless `FISCAL_CRASH_CHILD` is set).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(feature = "sqlite")]

mod common;

use common::*;
use counterfoil_fiscal::sim::{CrashPoint, EjKind, Fault, SimHandle};
use counterfoil_fiscal::{
    Dialect, FiscalPrinter, JobState, Journal, Outcome, PrinterHandle, SqliteJournal,
};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};

const CHILD_ENV: &str = "FISCAL_CRASH_CHILD";
const UNP: &str = "AB000001-0001-0000042";

#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (addr, db, dialect) = (parts[0], parts[1], parts[2].parse::<Dialect>().unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let journal = SqliteJournal::connect(&format!("sqlite://{db}"))
            .await
            .unwrap();
        let p = printer_at(addr, dialect);
        let h = PrinterHandle::spawn(
            p as Arc<dyn FiscalPrinter>,
            Arc::new(journal),
            actor_config("p1"),
        );
        let out = h.print_receipt("sale-42", receipt(UNP, 5)).await.unwrap();
        println!("CHILD-OUTCOME {}", serde_json::to_string(&out).unwrap());
    });
}

fn spawn_child(sim: &SimHandle, db: &str, dialect: Dialect) -> Child {
    let exe = std::env::current_exe().unwrap();
    Command::new(exe)
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{db}|{dialect:?}", sim.addr()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn finish(child: Child) -> Outcome {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("restarted driver finished")
        .unwrap();
    assert!(out.status.success(), "child failed: {:?}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.split_once("CHILD-OUTCOME ").map(|(_, rest)| rest.trim()))
        .unwrap_or_else(|| panic!("no outcome in {text}"));
    serde_json::from_str(line).unwrap()
}

async fn kill(mut child: Child) {
    child.kill().await.unwrap(); // SIGKILL
}

fn count(sim: &SimHandle, kind: EjKind) -> usize {
    sim.state().ej.iter().filter(|e| e.kind == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_payment_then_restarted() {
    for dialect in [Dialect::X, Dialect::Classic] {
        let dir = temp_dir("crash1");
        let db = dir.join("journal.db").display().to_string();
        let sim = counterfoil_fiscal::sim::Simulator::start(sim_config(dialect))
            .await
            .unwrap();
        // The driver stops at the third sale: paper out, receipt open, nothing paid.
        sim.inject(Fault::PaperOutAtItem {
            item: 3,
            refill_after_polls: 0,
        });
        let child = spawn_child(&sim, &db, dialect);
        tokio::time::timeout(
            Duration::from_secs(60),
            sim.wait_for(|s| s.paper_out && s.open.is_some()),
        )
        .await
        .expect("driver reached the middle of the receipt");
        kill(child).await;
        assert_eq!(sim.state().open.as_ref().unwrap().items, 2);
        sim.refill_paper();

        let out = finish(spawn_child(&sim, &db, dialect)).await;
        assert!(matches!(out, Outcome::Printed(_)), "{out:?}");
        assert_eq!(ej_count(&sim, UNP), 1);
        assert_eq!(
            count(&sim, EjKind::Cancelled),
            1,
            "the half receipt was cancelled"
        );
        let j = SqliteJournal::connect(&format!("sqlite://{db}"))
            .await
            .unwrap();
        let rec = j.get("sale-42").await.unwrap().unwrap();
        assert_eq!(rec.state, JobState::Printed);
        assert_eq!(rec.attempt, 2);
        assert_eq!(
            j.totals("p1").await.unwrap().receipts_amount,
            sim.state().day.receipts_amount
        );
        sim.shutdown();
        std::fs::remove_dir_all(dir).ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_payment_then_restarted() {
    for dialect in [Dialect::X, Dialect::Classic] {
        let dir = temp_dir("crash2");
        let db = dir.join("journal.db").display().to_string();
        let sim = counterfoil_fiscal::sim::Simulator::start(sim_config(dialect))
            .await
            .unwrap();
        // The device stops answering right after the card payment.
        sim.inject(Fault::Hang(CrashPoint::AfterPayment));
        let child = spawn_child(&sim, &db, dialect);
        tokio::time::timeout(
            Duration::from_secs(60),
            sim.wait_for(|s| s.open.as_ref().is_some_and(|o| o.tender > 0)),
        )
        .await
        .expect("driver paid in part");
        kill(child).await;
        sim.clear_faults();

        let out = finish(spawn_child(&sim, &db, dialect)).await;
        let Outcome::Printed(doc) = out else {
            panic!("{out:?}")
        };
        assert!(doc.recovered);
        assert_eq!(ej_count(&sim, UNP), 1);
        assert_eq!(count(&sim, EjKind::Cancelled), 0);
        let st = sim.state();
        // Finished with the recorded payments: card stays card, cash is cash.
        let r = receipt(UNP, 5);
        assert_eq!(st.day.by_payment[1], r.payments[0].amount.0);
        assert_eq!(
            st.day.by_payment[0],
            st.day.receipts_amount - r.payments[0].amount.0
        );
        sim.shutdown();
        std::fs::remove_dir_all(dir).ok();
    }
}
