//! End to end over real TCP sockets on loopback: driver + actor + journal
//! against the simulator, one test per fault.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use counterfoil_fiscal::isl::codec::{Decoder, Direction, Event};
use counterfoil_fiscal::sim::{CrashPoint, EjKind, Fault, Simulator};
use counterfoil_fiscal::{
    Dialect, Error, FiscalPrinter, InMemoryJournal, Job, Journal, Money, OriginalDocument, Outcome,
    Paper, ReportKind, Reversal, ReversalReason,
};
use std::sync::Arc;
use std::time::Duration;

const BOTH: [Dialect; 2] = [Dialect::Classic, Dialect::X];

async fn printed_once(
    dialect: Dialect,
    fault: Fault,
) -> (Outcome, counterfoil_fiscal::sim::SimHandle) {
    let sim = sim(dialect).await;
    let p = printer(&sim, dialect);
    let j = Arc::new(InMemoryJournal::new());
    let h = actor(p, j.clone(), "p1");
    // Warm up: the first frames of the actor (status poll) go through clean.
    h.refresh_status().await.unwrap();
    sim.inject(fault);
    let r = receipt("AB000001-0001-0000001", 4);
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        h.print_receipt("sale-1", r.clone()),
    )
    .await
    .expect("job finished")
    .unwrap();
    assert!(
        matches!(out, Outcome::Printed(_)),
        "{dialect:?} {fault:?}: {out:?}"
    );
    assert_eq!(
        ej_count(&sim, "AB000001-0001-0000001"),
        1,
        "{dialect:?} {fault:?}"
    );
    // Same job id again: the recorded outcome, no second document.
    let again = h.print_receipt("sale-1", r).await.unwrap();
    assert_eq!(again, out);
    assert_eq!(ej_count(&sim, "AB000001-0001-0000001"), 1);
    // Device totals equal journal totals.
    let dev = sim.state().all_totals();
    let jt = j.totals("p1").await.unwrap();
    assert_eq!(dev.receipts, jt.receipts);
    assert_eq!(dev.receipts_amount, jt.receipts_amount);
    (out, sim)
}

#[tokio::test]
async fn every_document_kind_on_both_dialects() {
    for dialect in BOTH {
        let sim = sim(dialect).await;
        let p = printer(&sim, dialect);
        let info = p.info().await.unwrap();
        assert_eq!(info.serial, "DT000001");
        assert_eq!(info.fm_serial, "DT000001FM");
        let j = Arc::new(InMemoryJournal::new());
        let h = actor(p.clone(), j.clone(), "p1");
        let r = receipt("AB000001-0001-0000001", 3);
        let doc = match h.print_receipt("s1", r.clone()).await.unwrap() {
            Outcome::Printed(d) => d,
            o => panic!("{o:?}"),
        };
        assert_eq!(doc.doc_no, 1);
        assert!(!doc.recovered);
        assert_eq!(doc.fm_serial.as_deref(), Some("DT000001FM"));
        assert_eq!(doc.serial.as_deref(), Some("DT000001"));
        let total = counterfoil_fiscal::validate_receipt(&r, &Default::default())
            .unwrap()
            .total;
        assert_eq!(doc.amount, total);
        let st = sim.state();
        assert_eq!(st.day.receipts_amount, total.0);
        assert_eq!(
            st.day.by_payment.iter().sum::<i64>(),
            total.0,
            "change comes out of cash"
        );

        let rev = Reversal {
            original: OriginalDocument {
                doc_no: doc.doc_no,
                at: doc.at.unwrap(),
                fm_serial: doc.fm_serial.clone().unwrap(),
            },
            reason: ReversalReason::Refund,
            receipt: receipt("AB000001-0001-0000002", 1),
        };
        let o = h.submit("r1", Job::Reversal(rev)).await.unwrap();
        assert!(
            matches!(o, Outcome::Printed(ref d) if d.doc_no == 2),
            "{o:?}"
        );
        let o = h.submit("cash-in", Job::Cash(Money(5000))).await.unwrap();
        assert!(
            matches!(o, Outcome::Printed(ref d) if d.doc_no == 3),
            "{o:?}"
        );
        let o = h.submit("cash-out", Job::Cash(Money(-1000))).await.unwrap();
        assert!(matches!(o, Outcome::Printed(_)), "{o:?}");
        let o = h.submit("dup", Job::Duplicate).await.unwrap();
        assert!(matches!(o, Outcome::Printed(_)), "{o:?}");
        let o = h.submit("x", Job::Report(ReportKind::X)).await.unwrap();
        assert!(matches!(o, Outcome::Printed(_)), "{o:?}");
        let o = h.submit("z", Job::Report(ReportKind::Z)).await.unwrap();
        assert!(
            matches!(o, Outcome::Printed(ref d) if d.z_no == Some(1)),
            "{o:?}"
        );
        let st = sim.state();
        assert_eq!(st.z_no, 1);
        assert_eq!(st.fiscal_memory.receipts, 1);
        assert_eq!(st.fiscal_memory.reversals, 1);
        assert_eq!(st.fiscal_memory.cash_in, 5000);
        let kinds: Vec<EjKind> = st.ej.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EjKind::Receipt,
                EjKind::Reversal,
                EjKind::CashIn,
                EjKind::CashOut,
                EjKind::Duplicate,
                EjKind::XReport,
                EjKind::ZReport
            ]
        );
        let s = h.refresh_status().await.unwrap();
        assert!(s.online);
        assert_eq!(s.paper, Paper::Ok);
        assert_eq!(s.last_document, Some(5));
        assert_eq!(s.z_no, Some(1));
        assert!(!s.receipt_open);
        let t = j.totals("p1").await.unwrap();
        assert_eq!((t.receipts, t.reversals), (1, 1));
    }
}

#[tokio::test]
async fn invalid_receipts_never_reach_the_device() {
    let sim = sim(Dialect::X).await;
    let h = actor(
        printer(&sim, Dialect::X),
        Arc::new(InMemoryJournal::new()),
        "p1",
    );
    let mut r = receipt("AB000001-0001-0000001", 2);
    r.payments.truncate(1);
    let e = h.print_receipt("bad", r).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid(counterfoil_fiscal::Invalid::Underpaid { .. })
        ),
        "{e}"
    );
    assert!(h.job("bad").await.unwrap().is_none());
    // Only read-only commands reached the device.
    let mut d = Decoder::new(Dialect::X, Direction::Request);
    for t in sim.transcript().iter().filter(|t| t.from_host) {
        d.push(&t.bytes);
    }
    while let Some(ev) = d.next_event() {
        if let Event::Frame(f) = ev {
            assert!(
                [0x4A, 0x4C, 0x71, 0x40].contains(&f.cmd),
                "sent {:#x}",
                f.cmd
            );
        }
    }
}

#[tokio::test]
async fn same_job_id_with_other_content_is_a_conflict() {
    let sim = sim(Dialect::X).await;
    let h = actor(
        printer(&sim, Dialect::X),
        Arc::new(InMemoryJournal::new()),
        "p1",
    );
    h.print_receipt("s", receipt("AB000001-0001-0000001", 1))
        .await
        .unwrap();
    let e = h
        .print_receipt("s", receipt("AB000001-0001-0000001", 2))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
}

#[tokio::test]
async fn wire_faults_print_exactly_once() {
    for dialect in BOTH {
        for fault in [
            Fault::Nak(3),
            Fault::CorruptChecksum(3),
            Fault::ExecuteThenDrop(2),
            Fault::DuplicateReply(4),
            Fault::Slow(20),
            Fault::Silent(2),
            Fault::RefuseConnections(2),
        ] {
            let (out, _) = printed_once(dialect, fault).await;
            assert!(!out.document().unwrap().recovered, "{dialect:?} {fault:?}");
        }
    }
}

#[tokio::test]
async fn connection_reset_mid_frame_is_reconciled() {
    for dialect in BOTH {
        printed_once(dialect, Fault::ResetMidFrame).await;
    }
}

#[tokio::test]
async fn power_failures_around_payment_and_close() {
    for dialect in BOTH {
        for point in [
            CrashPoint::BeforePayment,
            CrashPoint::AfterPayment,
            CrashPoint::BeforeClose,
            CrashPoint::AfterClose,
        ] {
            let (out, sim) = printed_once(dialect, Fault::Crash(point)).await;
            let d = out.document().unwrap();
            let cancelled = sim
                .state()
                .ej
                .iter()
                .filter(|e| e.kind == EjKind::Cancelled)
                .count();
            match point {
                // Open, nothing paid: cancelled, then printed by a second attempt.
                CrashPoint::BeforePayment => {
                    assert_eq!(cancelled, 1);
                    assert!(!d.recovered);
                }
                // Paid in part or in full: finished with the recorded payments.
                CrashPoint::AfterPayment | CrashPoint::BeforeClose | CrashPoint::AfterClose => {
                    assert_eq!(cancelled, 0, "{point:?}");
                    assert!(d.recovered, "{point:?}");
                }
            }
            // The card part stays card: no remainder booked as cash.
            let st = sim.state();
            assert!(st.day.by_payment[1] > 0, "{point:?}");
        }
    }
}

#[tokio::test]
async fn paper_out_pauses_and_resumes_after_refill() {
    for dialect in BOTH {
        let sim = sim(dialect).await;
        let p = printer(&sim, dialect);
        let h = actor(p, Arc::new(InMemoryJournal::new()), "p1");
        h.refresh_status().await.unwrap();
        sim.inject(Fault::PaperOutAtItem {
            item: 2,
            refill_after_polls: 0,
        });
        let job = {
            let h = h.clone();
            tokio::spawn(async move {
                h.print_receipt("s", receipt("AB000001-0001-0000009", 3))
                    .await
            })
        };
        sim.wait_for(|s| s.paper_out && s.open.is_some()).await;
        // Paused: the console sees paper out and an open receipt.
        tokio::time::timeout(Duration::from_secs(10), async {
            while h.status().paper != Paper::Out {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert!(!job.is_finished());
        assert_eq!(sim.state().open.as_ref().map(|o| o.items), Some(1));
        sim.refill_paper();
        let out = tokio::time::timeout(Duration::from_secs(20), job)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(out, Outcome::Printed(_)), "{out:?}");
        assert_eq!(ej_count(&sim, "AB000001-0001-0000009"), 1);
        assert_eq!(
            sim.state()
                .ej
                .iter()
                .filter(|e| e.kind == EjKind::Cancelled)
                .count(),
            0
        );
    }
}

#[tokio::test]
async fn cover_open_pauses_until_closed() {
    printed_once(
        Dialect::X,
        Fault::CoverOpen {
            close_after_polls: 3,
        },
    )
    .await;
    printed_once(
        Dialect::Classic,
        Fault::PaperOutAtItem {
            item: 3,
            refill_after_polls: 2,
        },
    )
    .await;
}

#[tokio::test]
async fn z_report_required_after_24_hours() {
    for dialect in BOTH {
        let clock = counterfoil_fiscal::ManualClock::new(1_700_000_000_000);
        let mut cfg = sim_config(dialect);
        cfg.clock = Arc::new(clock.clone());
        let sim = Simulator::start(cfg).await.unwrap();
        let h = actor(
            printer(&sim, dialect),
            Arc::new(InMemoryJournal::new()),
            "p1",
        );
        clock.advance(25 * 3600 * 1000);
        let out = h
            .print_receipt("s", receipt("AB000001-0001-0000001", 1))
            .await
            .unwrap();
        let Outcome::NotPrinted(np) = out else {
            panic!("{out:?}")
        };
        let expect = if dialect == Dialect::X {
            "E502"
        } else {
            "E404"
        };
        assert_eq!(np.code.as_deref(), Some(expect), "{np:?}");
        assert!(sim.state().open.is_none());
        let z = h.submit("z", Job::Report(ReportKind::Z)).await.unwrap();
        assert!(matches!(z, Outcome::Printed(_)));
        // Resubmitting a job that was not printed prints it now.
        let out = h
            .print_receipt("s", receipt("AB000001-0001-0000001", 1))
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Printed(_)), "{out:?}");
        assert_eq!(h.job("s").await.unwrap().unwrap().attempt, 2);
    }
}

#[tokio::test]
async fn fiscal_memory_near_full_is_a_warning() {
    let sim = sim(Dialect::X).await;
    sim.inject(Fault::FiscalMemoryLeft(10));
    let p = printer(&sim, Dialect::X);
    let st = p.status().await.unwrap();
    assert!(st.flags.fm_near_full);
    assert!(st.messages.iter().any(|m| m.code == "W201"));
    assert!(st.is_ok());
    sim.inject(Fault::FiscalMemoryLeft(0));
    let h = actor(p, Arc::new(InMemoryJournal::new()), "p1");
    let out = h.submit("z", Job::Report(ReportKind::Z)).await.unwrap();
    let Outcome::NotPrinted(np) = out else {
        panic!("{out:?}")
    };
    assert_eq!(np.code.as_deref(), Some("E201"));
}

#[tokio::test]
async fn x_error_code_fails_even_with_clean_status_bits() {
    let sim = sim(Dialect::X).await;
    let p = printer(&sim, Dialect::X);
    // Open a receipt behind the driver's back.
    let raw = p.raw(0x30, b"1\t0000\t\t1\t\t").await.unwrap();
    assert!(raw.status.is_ok());
    // Opening again: the device answers ErrorCode -111016 with no error bit set.
    let e = p
        .print_receipt(&receipt("AB000001-0001-0000001", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Rejected(ref m) if m.code == "E407"),
        "{e}"
    );
    assert!(p.last_status().unwrap().is_ok(), "no error bit was set");
}

#[tokio::test]
async fn leftover_open_receipt_without_payment_is_cancelled_first() {
    let sim = sim(Dialect::Classic).await;
    let p = printer(&sim, Dialect::Classic);
    p.raw(0x30, b"1,0000,1").await.unwrap();
    let h = actor(p, Arc::new(InMemoryJournal::new()), "p1");
    let out = h
        .print_receipt("s", receipt("AB000001-0001-0000001", 2))
        .await
        .unwrap();
    assert!(
        matches!(out, Outcome::Printed(ref d) if d.doc_no == 1),
        "{out:?}"
    );
}

#[tokio::test]
async fn second_connection_is_busy() {
    let sim = sim(Dialect::X).await;
    let a = printer(&sim, Dialect::X);
    a.status().await.unwrap();
    let b = printer(&sim, Dialect::X);
    let e = b.status().await.unwrap_err();
    assert!(matches!(e, Error::Offline(_)), "{e}");
    // The first connection is unaffected.
    a.status().await.unwrap();
}

#[tokio::test]
async fn power_cycle_keeps_an_open_receipt_in_the_state_file() {
    let dir = temp_dir("state");
    let mut cfg = sim_config(Dialect::X);
    cfg.state_file = Some(dir.join("device.json"));
    let sim = Simulator::start(cfg.clone()).await.unwrap();
    let p = printer(&sim, Dialect::X);
    p.raw(0x30, b"1\t0000\tAB000001-0001-0000001\t1\t\t")
        .await
        .unwrap();
    p.raw(0x31, b"Tea\t2\t1.50\t1.000\t0\t0.00\t0\t")
        .await
        .unwrap();
    sim.power_cycle();
    sim.shutdown();
    // A new simulator process on the same file.
    cfg.addr = "127.0.0.1:0".into();
    let sim2 = Simulator::start(cfg).await.unwrap();
    let o = sim2.state().open.expect("receipt still open");
    assert_eq!((o.items, o.amount), (1, 150));
    let p2 = printer(&sim2, Dialect::X);
    let snap = p2.snapshot().await.unwrap();
    assert_eq!(snap.open.unwrap().amount, Money(150));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn journal_is_appended_beside_the_state_file_and_survives_a_torn_line() {
    let dir = temp_dir("ej");
    let mut cfg = sim_config(Dialect::X);
    cfg.state_file = Some(dir.join("device.json"));
    let sim = Simulator::start(cfg.clone()).await.unwrap();
    let h = actor(
        printer(&sim, Dialect::X),
        Arc::new(InMemoryJournal::new()),
        "p1",
    );
    for i in 1..=3 {
        let unp = format!("AB000001-0001-{i:07}");
        let out = h.print_receipt(&format!("s{i}"), receipt(&unp, 1)).await;
        assert!(matches!(out, Ok(Outcome::Printed(_))), "{out:?}");
    }
    let before = sim.state();
    assert_eq!(before.ej.len(), 3);
    sim.shutdown();
    // The state file holds the counters, not the journal, a line per
    // change; the journal file one line per entry.
    let text = std::fs::read_to_string(dir.join("device.json")).unwrap();
    assert!(text.lines().count() > 3, "{text}");
    for line in text.lines() {
        let state: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(state["ej"], serde_json::json!([]));
    }
    let ej_file = dir.join("device.ej.jsonl");
    assert_eq!(
        std::fs::read_to_string(&ej_file).unwrap().lines().count(),
        3
    );
    // A crash between the two writes: an entry for a document the state
    // never recorded, then a line cut short.
    let mut extra: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&ej_file)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    extra["doc_no"] = serde_json::json!(before.last_doc_no + 1);
    let mut text = std::fs::read_to_string(&ej_file).unwrap();
    text.push_str(&format!("{extra}\n{{\"doc_no\": 9"));
    std::fs::write(&ej_file, text).unwrap();
    cfg.addr = "127.0.0.1:0".into();
    let sim2 = Simulator::start(cfg).await.unwrap();
    assert_eq!(sim2.state(), before);
    assert_eq!(
        std::fs::read_to_string(&ej_file).unwrap().lines().count(),
        3
    );
    sim2.shutdown();
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn state_file_appends_a_line_per_change_skips_a_torn_one_and_stays_short() {
    let dir = temp_dir("state-log");
    let path = dir.join("device.json");
    let mut cfg = sim_config(Dialect::X);
    cfg.state_file = Some(path.clone());
    let sim = Simulator::start(cfg.clone()).await.unwrap();
    let lines = || std::fs::read_to_string(&path).unwrap().lines().count();
    let first = sim.state().last_doc_no;
    for _ in 0..10 {
        sim.cash_at_keypad(Money(100)).unwrap();
    }
    assert_eq!(lines(), 10);
    // Many more changes: the file is started over every 256 lines.
    for _ in 0..600 {
        sim.cash_at_keypad(Money(100)).unwrap();
    }
    assert!(lines() <= 256, "{} lines", lines());
    let before = sim.state();
    assert_eq!(before.last_doc_no, first + 610);
    sim.shutdown();
    // A crash in the middle of a line: the line before it is the state.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"dialect\":\"X\",\"model").unwrap();
    drop(f);
    cfg.addr = "127.0.0.1:0".into();
    let sim2 = Simulator::start(cfg.clone()).await.unwrap();
    assert_eq!(sim2.state(), before);
    // Rewritten at start with that state alone, then appended to again.
    assert_eq!(lines(), 1);
    sim2.cash_at_keypad(Money(50)).unwrap();
    sim2.power_cycle();
    let after = sim2.state();
    assert_eq!(after.last_doc_no, first + 611);
    sim2.shutdown();
    // A file of the previous version, one state without a line end, loads.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.lines().last().unwrap()).unwrap();
    cfg.addr = "127.0.0.1:0".into();
    let sim3 = Simulator::start(cfg.clone()).await.unwrap();
    assert_eq!(sim3.state(), after);
    sim3.shutdown();
    // A file with no line that decodes, or no line at all, is an error,
    // not a fresh device.
    for bad in [&b"{\"dialect\":"[..], b"", b"\n\n"] {
        std::fs::write(&path, bad).unwrap();
        cfg.addr = "127.0.0.1:0".into();
        assert!(
            Simulator::start(cfg.clone()).await.is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn transcript_records_every_frame() {
    let sim = sim(Dialect::Classic).await;
    let p = printer(&sim, Dialect::Classic);
    p.status().await.unwrap();
    let t = sim.transcript();
    assert_eq!(t.len(), 2);
    assert!(t[0].from_host && !t[1].from_host);
    assert_eq!(t[0].bytes[0], 0x01);
    assert_eq!(t[0].bytes[3], 0x4A);
    assert!(t[0].to_string().contains("> 01"));
    // A limit of 0 keeps none (a long-running simulator does not grow).
    let mut cfg = sim_config(Dialect::Classic);
    cfg.transcript_limit = 0;
    let quiet = Simulator::start(cfg).await.unwrap();
    let p = printer(&quiet, Dialect::Classic);
    p.status().await.unwrap();
    assert!(quiet.transcript().is_empty());
    assert_eq!(quiet.frames(), 1);
}

#[tokio::test]
async fn offline_device_then_back() {
    let sim = sim(Dialect::X).await;
    let addr = sim.addr();
    let h = actor(
        printer(&sim, Dialect::X),
        Arc::new(InMemoryJournal::new()),
        "p1",
    );
    h.refresh_status().await.unwrap();
    assert!(h.status().online);
    // Offline for longer than the actor waits: nothing sent, not printed (E101).
    sim.inject(Fault::RefuseConnections(1_000_000));
    sim.power_cycle();
    let out = h
        .print_receipt("s", receipt("AB000001-0001-0000001", 1))
        .await
        .unwrap();
    let Outcome::NotPrinted(np) = out else {
        panic!("{out:?}")
    };
    assert_eq!(np.code.as_deref(), Some("E101"));
    let s = h.refresh_status().await.unwrap();
    assert!(!s.online);
    assert!(s.last_error.is_some());
    // Back online: the same job prints, once.
    sim.clear_faults();
    let out = h
        .print_receipt("s", receipt("AB000001-0001-0000001", 1))
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Printed(_)), "{out:?}");
    assert_eq!(ej_count(&sim, "AB000001-0001-0000001"), 1);
    assert_eq!(sim.addr(), addr);
}

#[tokio::test]
async fn unknown_is_never_retried_and_a_person_resolves_it() {
    let sim = sim(Dialect::X).await;
    let p = printer(&sim, Dialect::X);
    let j = Arc::new(InMemoryJournal::new());
    // A baseline from before two documents were printed: the evidence is
    // ambiguous (the counter moved by two).
    let base = p.snapshot().await.unwrap();
    let r = receipt("AB000001-0001-0000001", 1);
    j.record_intent("p1", "s", &Job::Receipt(r.clone()), 1, &base, 0)
        .await
        .unwrap();
    let h0 = actor(
        printer(&sim, Dialect::X),
        Arc::new(InMemoryJournal::new()),
        "other",
    );
    drop(p);
    h0.submit("c1", Job::Cash(Money(100))).await.unwrap();
    h0.submit("c2", Job::Cash(Money(100))).await.unwrap();
    drop(h0);
    let h = actor(printer(&sim, Dialect::X), j.clone(), "p1");
    let out = h.print_receipt("s", r.clone()).await.unwrap();
    assert!(matches!(out, Outcome::Unknown(_)), "{out:?}");
    assert_eq!(h.unknown_jobs().await.unwrap().len(), 1);
    // Submitting again does not print.
    assert_eq!(h.print_receipt("s", r.clone()).await.unwrap(), out);
    assert_eq!(ej_count(&sim, "AB000001-0001-0000001"), 0);
    let resolved = h
        .resolve("s", counterfoil_fiscal::Resolution::NotPrinted)
        .await
        .unwrap();
    assert!(matches!(resolved, Outcome::NotPrinted(_)));
    let out = h.print_receipt("s", r).await.unwrap();
    assert!(matches!(out, Outcome::Printed(_)), "{out:?}");
    assert_eq!(ej_count(&sim, "AB000001-0001-0000001"), 1);
}

#[tokio::test]
async fn device_silent_mid_receipt_leaves_the_job_pending_until_it_returns() {
    let sim = sim(Dialect::X).await;
    let j = Arc::new(InMemoryJournal::new());
    let mut cfg = actor_config("p1");
    cfg.offline_wait = Duration::from_millis(300);
    let h = counterfoil_fiscal::PrinterHandle::spawn(
        printer(&sim, Dialect::X) as Arc<dyn FiscalPrinter>,
        j.clone(),
        cfg,
    );
    sim.inject(Fault::Hang(CrashPoint::AfterPayment));
    let r = receipt("AB000001-0001-0000001", 2);
    let e = h.print_receipt("s", r.clone()).await.unwrap_err();
    assert!(matches!(e, Error::Offline(_)), "{e}");
    let rec = h.job("s").await.unwrap().unwrap();
    assert_eq!(rec.state, counterfoil_fiscal::JobState::Pending);
    assert!(rec.baseline.is_some());
    assert_eq!(h.refresh_status().await.unwrap().pending_jobs, 1);
    // The device answers again: the pending job is finished with its recorded payments.
    sim.clear_faults();
    let out = h.print_receipt("s", r).await.unwrap();
    assert!(
        matches!(out, Outcome::Printed(ref d) if d.recovered),
        "{out:?}"
    );
    assert_eq!(ej_count(&sim, "AB000001-0001-0000001"), 1);
    assert_eq!(h.refresh_status().await.unwrap().pending_jobs, 0);
}

#[tokio::test]
async fn a_silent_printer_never_delays_another() {
    let slow = sim(Dialect::X).await;
    let fast = sim(Dialect::X).await;
    let j: Arc<InMemoryJournal> = Arc::new(InMemoryJournal::new());
    let mut cfg = actor_config("slow");
    cfg.offline_wait = Duration::from_secs(30);
    let a = counterfoil_fiscal::PrinterHandle::spawn(
        printer(&slow, Dialect::X) as Arc<dyn FiscalPrinter>,
        j.clone(),
        cfg,
    );
    let b = actor(printer(&fast, Dialect::X), j.clone(), "fast");
    slow.inject(Fault::Silent(u32::MAX));
    let stuck = {
        let a = a.clone();
        tokio::spawn(async move {
            a.print_receipt("a1", receipt("AB000001-0001-0000001", 2))
                .await
        })
    };
    for i in 0..5 {
        let unp = format!("AB000002-0001-{i:07}");
        let out = b
            .print_receipt(&format!("b{i}"), receipt(&unp, 2))
            .await
            .unwrap();
        assert!(matches!(out, Outcome::Printed(_)), "{out:?}");
    }
    assert!(
        !stuck.is_finished(),
        "the silent printer's job is still waiting"
    );
    slow.clear_faults();
    let out = tokio::time::timeout(Duration::from_secs(30), stuck)
        .await
        .unwrap()
        .unwrap();
    // Once the device answers the job ends: printed once, or not printed.
    match out.unwrap() {
        Outcome::Printed(_) => assert_eq!(ej_count(&slow, "AB000001-0001-0000001"), 1),
        Outcome::NotPrinted(_) => assert_eq!(ej_count(&slow, "AB000001-0001-0000001"), 0),
        o => panic!("{o:?}"),
    }
}

#[tokio::test]
async fn the_actor_polls_status_while_idle() {
    let sim = sim(Dialect::Classic).await;
    let mut cfg = actor_config("p1");
    cfg.poll_every = Duration::from_millis(20);
    let h = counterfoil_fiscal::PrinterHandle::spawn(
        printer(&sim, Dialect::Classic) as Arc<dyn FiscalPrinter>,
        Arc::new(InMemoryJournal::new()),
        cfg,
    );
    let mut rx = h.subscribe();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.online))
        .await
        .unwrap()
        .unwrap();
    sim.inject(Fault::CoverOpen {
        close_after_polls: 0,
    });
    let s = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.cover_open))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert!(s.messages.iter().any(|m| m.code == "E302"), "{s:?}");
    sim.close_cover();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| !s.cover_open))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_keypad_document_behind_a_lost_reply_is_unknown_and_a_person_resolves_it_printed() {
    let sim = sim(Dialect::X).await;
    let j = Arc::new(InMemoryJournal::new());
    let h = actor(printer(&sim, Dialect::X), j.clone(), "p1");
    // The receipt prints and the device freezes before it answers; while
    // it is frozen, someone moves cash at the keypad.
    sim.inject(Fault::Hang(CrashPoint::AfterClose));
    let r = receipt("AB000001-0001-0000001", 2);
    let first = tokio::spawn({
        let h = h.clone();
        let r = r.clone();
        async move { h.print_receipt("s", r).await }
    });
    sim.wait_for(|d| d.ej.iter().any(|e| e.kind == EjKind::Receipt))
        .await;
    let receipt_no = sim.state().last_doc_no;
    let cash_no = sim.cash_at_keypad(Money(500)).unwrap();
    assert_eq!(cash_no, receipt_no + 1);
    // The keypad refuses what the device refuses.
    assert!(sim.cash_at_keypad(Money(-1_000_000)).is_err());
    // The first attempt gives up on the frozen device (were the device to
    // wake while the driver still repeats the close frame, the repeat would
    // fetch the lost reply and settle it).
    let gave_up = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("the attempt gives up on a frozen device")
        .unwrap();
    assert!(gave_up.is_err(), "{gave_up:?}");
    sim.clear_faults();
    // Two documents since the baseline: nobody can tell which was ours.
    let out = h.print_receipt("s", r.clone()).await.unwrap();
    assert!(matches!(out, Outcome::Unknown(_)), "{out:?}");
    assert_eq!(h.unknown_jobs().await.unwrap().len(), 1);
    // A person reads the journal: it printed as `receipt_no`.
    let doc = counterfoil_fiscal::Document {
        doc_no: receipt_no,
        amount: Money(200),
        at: None,
        z_no: None,
        recovered: true,
        fm_serial: None,
        serial: None,
    };
    let resolved = h
        .resolve("s", counterfoil_fiscal::Resolution::Printed(doc))
        .await
        .unwrap();
    let Outcome::Printed(d) = &resolved else {
        panic!("{resolved:?}")
    };
    assert_eq!(d.doc_no, receipt_no);
    // Stamped like any printed document, so a reversal can refer to it.
    assert!(d.fm_serial.is_some(), "{d:?}");
    assert!(h.unknown_jobs().await.unwrap().is_empty());
    // Asked again, the job answers the resolution and prints nothing more.
    assert_eq!(h.print_receipt("s", r).await.unwrap(), resolved);
    assert_eq!(ej_count(&sim, "AB000001-0001-0000001"), 1);
    // A second answer is refused.
    assert!(matches!(
        h.resolve("s", counterfoil_fiscal::Resolution::NotPrinted)
            .await,
        Err(Error::Conflict(_))
    ));
}
