//! HTTP-level tests of the embedded default (SQLite, in-process agent,
//! simulated provider and printers), each against its own server process.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn payment_ends_as_exactly_one_fiscal_receipt() {
    let s = embedded("happy", &[]);
    let p = s
        .pay(KEY1, "pay-1", &order("demo-1", "demo-1-p1", 2500))
        .await;
    assert_eq!(p["status"], "fiscalized", "{p}");
    assert_eq!(p["receipt"]["printer"], "demo-1-p1");
    assert_eq!(p["receipt"]["amount"], 2500);
    let kinds: Vec<&str> = p["journey"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "payment.pending",
            "payment.authorized",
            "payment.captured",
            "payment.fiscalizing",
            "receipt.printed",
            "payment.fiscalized"
        ]
    );
    let id = p["id"].as_str().unwrap();
    let ledger = s.ledger().await;
    assert_eq!(ledger_count(&ledger, "authorize", id), 1);
    assert_eq!(ledger_count(&ledger, "capture", id), 1);
    let journal = s.journal("demo-1-p1").await;
    assert_eq!(journal_count(&journal, id), 1);
    assert_eq!(journal[0]["amount"], 2500);
}

/// The 202 for a new payment is built without reading it back; it must
/// show what a read shows at that moment: its saga, no refunds and the one
/// `payment.pending` event, with the id a client resumes events from.
#[tokio::test]
async fn a_new_payments_answer_matches_a_read_of_it() {
    let s = embedded("accepted-view", &[]);
    let (status, p) = s
        .post(
            KEY1,
            "/v1/payments",
            &order("demo-1", "demo-1-p1", 1200),
            &[("idempotency-key", "view-1")],
        )
        .await;
    assert_eq!(status, 202, "{p}");
    assert_eq!(p["status"], "pending");
    assert_eq!(p["refunds"], json!([]));
    let journey = p["journey"].as_array().unwrap();
    assert_eq!(journey.len(), 1, "{p}");
    assert_eq!(journey[0]["kind"], "payment.pending");
    let id = p["id"].as_str().unwrap();
    let (status, read) = s.get(KEY1, &format!("/v1/payments/{id}")).await;
    assert_eq!(status, 200);
    assert!(p["saga_id"].is_string(), "{p}");
    assert_eq!(read["saga_id"], p["saga_id"]);
    assert_eq!(
        read["journey"][0], journey[0],
        "the same event, id and time"
    );
    for field in [
        "amount",
        "currency",
        "order_ref",
        "printer",
        "lines",
        "created_at",
    ] {
        assert_eq!(read[field], p[field], "{field}");
    }
    // A printer the restaurant does not have is refused before anything
    // is stored.
    let (status, problem) = s
        .post(
            KEY1,
            "/v1/payments",
            &order("demo-1", "demo-2-p1", 1200),
            &[("idempotency-key", "view-2")],
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (_, page) = s.get(KEY1, "/v1/payments").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
}

#[tokio::test]
async fn refund_ends_with_a_reversal_receipt() {
    let s = embedded("refund", &[]);
    let p = s
        .pay(KEY1, "pay-r", &order("demo-1", "demo-1-p2", 1800))
        .await;
    assert_eq!(p["status"], "fiscalized");
    let id = p["id"].as_str().unwrap();
    let path = format!("/v1/payments/{id}/refunds");
    let body = json!({ "amount": 1800, "reason": "wrong table" });
    let (status, r) = s
        .post(KEY1, &path, &body, &[("idempotency-key", "refund-1")])
        .await;
    assert_eq!(status, 202, "{r}");
    // The same refund again is a replay, not a second refund.
    let (status, again) = s
        .post(KEY1, &path, &body, &[("idempotency-key", "refund-1")])
        .await;
    assert_eq!(status, 202, "the stored answer, replayed");
    assert_eq!(again["id"], r["id"]);
    // More than is left is refused.
    let (status, _) = s
        .post(
            KEY1,
            &path,
            &json!({ "amount": 1, "reason": "more" }),
            &[("idempotency-key", "refund-2")],
        )
        .await;
    assert_eq!(status, 409);
    let p = s
        .wait_payment(KEY1, id, 20, |p| p["refunds"][0]["status"] == "reversed")
        .await;
    let reversal = &p["refunds"][0]["reversal"];
    assert_eq!(reversal["amount"], -1800);
    // The receipt carries what a reversal must quote: the device's time
    // and its fiscal memory serial.
    assert!(
        p["receipt"]["fm_serial"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{p}"
    );
    assert!(p["receipt"]["device_time"].is_string(), "{p}");
    let ledger = s.ledger().await;
    assert_eq!(
        ledger_count(&ledger, "refund", r["id"].as_str().unwrap()),
        1
    );
    let journal = s.journal("demo-1-p2").await;
    assert_eq!(
        journal.iter().filter(|e| e["kind"] == "reversal").count(),
        1
    );
    assert_eq!(journal.iter().filter(|e| e["kind"] == "receipt").count(), 1);
    // The device's journal, labelled by the agent's fiscal journal: the
    // reversal under the refund's sale key, negative.
    let rev = journal.iter().find(|e| e["kind"] == "reversal").unwrap();
    assert_eq!(journal_count(&journal, r["id"].as_str().unwrap()), 1);
    assert_eq!(rev["amount"], -1800);
    assert_eq!(journal_count(&journal, id), 1);
}

#[tokio::test]
async fn a_tcp_printer_is_driven_over_the_isl_protocol() {
    use counterfoil_fiscal::Dialect;
    use counterfoil_fiscal::sim::{EjKind, SimConfig, Simulator};
    // A device on the "LAN": a classic-dialect Datecs simulator the test
    // runs, at a tcp:// address the server knows nothing else about.
    let device = Simulator::start(SimConfig::new(Dialect::Classic))
        .await
        .unwrap();
    let printer = format!("demo-1/lan=tcp://{}", device.addr());
    let s = embedded(
        "tcp",
        &["--printers", &printer, "--printer-dialect", "classic"],
    );
    let p = s.pay(KEY1, "tcp-1", &order("demo-1", "lan", 2100)).await;
    assert_eq!(p["status"], "fiscalized", "{p}");
    assert_eq!(p["receipt"]["printer"], "lan");
    let st = device.state();
    let receipts: Vec<_> = st.ej.iter().filter(|e| e.kind == EjKind::Receipt).collect();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].amount, 2100);
    assert_eq!(p["receipt"]["number"], receipts[0].doc_no);
    // Its status comes from the device actor.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, pr) = s.get(KEY1, "/v1/printers/lan").await;
        if pr["online"] == true && pr["last_document"] == receipts[0].doc_no {
            assert_eq!(pr["paper"], "ok", "{pr}");
            assert_eq!(pr["receipt_open"], false, "{pr}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "printer status never arrived: {pr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn duplicate_requests_charge_and_print_once() {
    let s = embedded("dup", &[]);
    let body = order("demo-1", "demo-1-p1", 990);
    let mut calls = Vec::new();
    for _ in 0..16 {
        let (s, body) = (&s, body.clone());
        calls.push(async move {
            s.post(
                KEY1,
                "/v1/payments",
                &body,
                &[("idempotency-key", "same-key")],
            )
            .await
        });
    }
    let results = futures::future::join_all(calls).await;
    let ids: std::collections::HashSet<String> = results
        .iter()
        .map(|(st, p)| {
            assert!(*st == 200 || *st == 202, "{st}: {p}");
            p["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one payment for one key");
    let id = ids.into_iter().next().unwrap();
    s.wait_payment(KEY1, &id, 20, |p| p["status"] == "fiscalized")
        .await;
    // Same key, different body: refused.
    let (status, problem) = s
        .post(
            KEY1,
            "/v1/payments",
            &order("demo-1", "demo-1-p1", 991),
            &[("idempotency-key", "same-key")],
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let ledger = s.ledger().await;
    assert_eq!(ledger_count(&ledger, "authorize", &id), 1);
    assert_eq!(ledger_count(&ledger, "capture", &id), 1);
    assert_eq!(journal_count(&s.journal("demo-1-p1").await, &id), 1);
}

/// Takes `printer` offline and pays `amount` of restaurant demo-1 on it:
/// the payment is accepted and its receipt waits for the printer. Its id.
async fn pay_while_offline(s: &Server, printer: &str, idem: &str, amount: i64) -> String {
    s.printer_faults(printer, &json!({ "offline": true })).await;
    let (status, p) = s
        .post(
            KEY1,
            "/v1/payments",
            &order("demo-1", printer, amount),
            &[("idempotency-key", idem), ("prefer", "wait=1")],
        )
        .await;
    assert_eq!(status, 202, "{p}");
    p["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn printer_offline_delays_the_receipt_and_prints_it_once() {
    let s = embedded("offline", &[]);
    let id = pay_while_offline(&s, "demo-1-p1", "off-1", 1500).await;
    s.wait_payment(KEY1, &id, 20, |p| p["status"] == "fiscalizing")
        .await;
    // The printer shows as offline, its breaker open, the job queued.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, pr) = s.get(KEY1, "/v1/printers/demo-1-p1").await;
        if pr["online"] == false && pr["queued"] == 1 && pr["breaker"] == "open" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "printer never reported offline: {pr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another printer is not held up by it.
    let other = s
        .pay(KEY1, "off-2", &order("demo-1", "demo-1-p2", 700))
        .await;
    assert_eq!(other["status"], "fiscalized");
    s.printer_faults("demo-1-p1", &json!({ "offline": false }))
        .await;
    let p = s
        .wait_payment(KEY1, &id, 30, |p| p["status"] == "fiscalized")
        .await;
    assert_eq!(p["receipt"]["printer"], "demo-1-p1");
    assert_eq!(journal_count(&s.journal("demo-1-p1").await, &id), 1);
}

#[tokio::test]
async fn reply_lost_after_printing_is_reconciled_not_reprinted() {
    let s = embedded("lostreply", &[]);
    s.printer_faults("demo-1-p1", &json!({ "lose_reply_next": 1 }))
        .await;
    let p = s
        .pay(KEY1, "lost-1", &order("demo-1", "demo-1-p1", 1200))
        .await;
    assert_eq!(p["status"], "fiscalized", "{p}");
    let id = p["id"].as_str().unwrap();
    assert_eq!(journal_count(&s.journal("demo-1-p1").await, id), 1);
}

#[tokio::test]
async fn provider_timeout_after_capture_is_reconciled() {
    let s = embedded("timeout", &["--provider-timeout", "500ms"]);
    s.provider_faults(&json!({ "timeout_after_capture_next": 1 }))
        .await;
    let p = s
        .pay(KEY1, "to-1", &order("demo-1", "demo-1-p1", 3100))
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    let p = s
        .wait_payment(KEY1, &id, 30, |p| p["status"] == "fiscalized")
        .await;
    assert!(p["provider_ref"].as_str().unwrap().starts_with("cap_"));
    let ledger = s.ledger().await;
    assert_eq!(ledger_count(&ledger, "capture", &id), 1, "captured once");
    assert_eq!(
        ledger_count(&ledger, "void", &id),
        0,
        "never voided after the pivot"
    );
    assert_eq!(journal_count(&s.journal("demo-1-p1").await, &id), 1);
}

#[tokio::test]
async fn declined_payments_charge_and_print_nothing() {
    let s = embedded("decline", &[]);
    // Amounts ending in 51 are declined by the simulator.
    let p = s
        .pay(KEY1, "dec-1", &order("demo-1", "demo-1-p1", 1051))
        .await;
    assert_eq!(p["status"], "declined", "{p}");
    let id = p["id"].as_str().unwrap();
    assert_eq!(ledger_count(&s.ledger().await, "capture", id), 0);
    assert_eq!(journal_count(&s.journal("demo-1-p1").await, id), 0);
}

#[tokio::test]
async fn provider_5xx_is_retried() {
    let s = embedded("5xx", &[]);
    s.provider_faults(&json!({ "error_5xx_next": 3 })).await;
    let p = s
        .pay(KEY1, "5xx-1", &order("demo-1", "demo-1-p1", 1400))
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    s.wait_payment(KEY1, &id, 30, |p| p["status"] == "fiscalized")
        .await;
    assert_eq!(ledger_count(&s.ledger().await, "capture", &id), 1);
}

#[tokio::test]
async fn receipt_deadline_parks_and_the_operator_retries() {
    let s = embedded("park", &["--fiscal-deadline", "1s"]);
    s.printer_faults("demo-1-p1", &json!({ "paper_out": true }))
        .await;
    let p = s
        .pay(KEY1, "park-1", &order("demo-1", "demo-1-p1", 1600))
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    let p = s
        .wait_payment(KEY1, &id, 30, |p| p["status"] == "parked")
        .await;
    assert!(p["reason"].as_str().unwrap().contains("deadline"), "{p}");
    let saga = p["saga_id"].as_str().unwrap().to_owned();
    // The list filters by the status the API shows: the row still says
    // `fiscalizing`, the saga parked.
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, page) = s.get(KEY1, "/v1/payments?status=parked").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), std::slice::from_ref(&id), "{page}");
    assert_eq!(page["items"][0]["status"], "parked");
    let (_, page) = s.get(KEY1, "/v1/payments?status=fiscalizing").await;
    assert!(!ids(&page).contains(&id), "{page}");
    // Another restaurant's key never sees it.
    let (_, page) = s.get(KEY2, "/v1/payments?status=parked").await;
    assert!(ids(&page).is_empty(), "{page}");
    // Restaurant keys cannot see the operator endpoints.
    let (status, _) = s.get(KEY1, "/v1/operator/sagas").await;
    assert_eq!(status, 403);
    let (status, parked) = s.get(OPERATOR, "/v1/operator/sagas").await;
    assert_eq!(status, 200);
    assert!(
        parked
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == saga.as_str() && x["subject"] == id.as_str())
    );
    let (status, detail) = s.get(OPERATOR, &format!("/v1/operator/sagas/{saga}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["saga"]["step"], "fiscalize");
    assert_eq!(detail["saga"]["in_doubt"], true);
    assert!(
        detail["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "resolve")
    );
    // Paper refilled: the queued job prints once; the operator retries and
    // the saga reconciles from the printed job.
    s.printer_faults("demo-1-p1", &json!({ "paper_out": false }))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Printed on the device, and the agent's report reached the server.
    while journal_count(&s.journal("demo-1-p1").await, &id) == 0
        || !s.get(KEY1, &format!("/v1/payments/{id}")).await.1["journey"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "receipt.printed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "never printed after the refill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = s
        .post(
            OPERATOR,
            &format!("/v1/operator/sagas/{saga}/retry"),
            &json!({}),
            &[],
        )
        .await;
    assert_eq!(status, 202, "{body}");
    s.wait_payment(KEY1, &id, 30, |p| p["status"] == "fiscalized")
        .await;
    assert_eq!(journal_count(&s.journal("demo-1-p1").await, &id), 1);
    let (_, parked) = s.get(OPERATOR, "/v1/operator/sagas").await;
    assert!(parked.as_array().unwrap().is_empty());
    let (_, page) = s.get(KEY1, "/v1/payments?status=parked").await;
    assert!(ids(&page).is_empty(), "{page}");
}

/// Prints a receipt whose reply never comes while someone moves cash at the
/// keypad: two documents since the baseline, so nobody can tell which was
/// the sale's. Returns the payment id and the receipt's number on the device.
async fn pay_into_an_unknown(s: &Server, idem: &str, amount: i64) -> (String, u64) {
    s.printer_faults("demo-1-p1", &json!({ "hang_after_close": true }))
        .await;
    let printed_before = s.journal("demo-1-p1").await.len();
    let p = s
        .pay(KEY1, idem, &order("demo-1", "demo-1-p1", amount))
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let number = loop {
        let journal = s.journal("demo-1-p1").await;
        if let Some(e) = journal[printed_before..]
            .iter()
            .find(|e| e["kind"] == "receipt")
        {
            break e["number"].as_u64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "never printed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The agent gave up waiting for the reply (were the device to wake
    // while the close frame is still being repeated, the repeat would fetch
    // the lost reply and settle it).
    loop {
        let (_, pr) = s.get(KEY1, "/v1/printers/demo-1-p1").await;
        if pr["online"] == false {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "printer never reported offline: {pr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.printer_faults("demo-1-p1", &json!({ "keypad_cash": 500 }))
        .await;
    let p = s
        .wait_payment(KEY1, &id, 60, |p| p["status"] == "parked")
        .await;
    assert!(p["reason"].as_str().unwrap().contains("unknown"), "{p}");
    (id, number)
}

#[tokio::test]
async fn an_operator_answers_unknown_receipts_and_the_payments_resume() {
    let s = embedded("unknown", &[]);
    let (id, number) = pay_into_an_unknown(&s, "unk-1", 1700).await;
    let job = format!("{id}/receipt");
    // A retry of the saga without an answer for the job prints nothing:
    // the step finds the job's outcome unknown and the saga parks again.
    let (_, p) = s.get(KEY1, &format!("/v1/payments/{id}")).await;
    let saga = p["saga_id"].as_str().unwrap().to_owned();
    let inspect = format!("/v1/operator/sagas/{saga}");
    let logged = |d: &Value| d["log"].as_array().map_or(0, Vec::len);
    let before = logged(&s.get(OPERATOR, &inspect).await.1);
    let documents = s.journal("demo-1-p1").await.len();
    let retry = format!("/v1/operator/sagas/{saga}/retry");
    let (status, body) = s.post(OPERATOR, &retry, &json!({}), &[]).await;
    assert_eq!(status, 202, "{body}");
    let d = s
        .wait_for(OPERATOR, &inspect, 30, |d| {
            logged(d) > before && d["saga"]["status"] == "parked"
        })
        .await;
    assert!(
        d["saga"]["reason"].as_str().unwrap().contains("unknown"),
        "{d}"
    );
    let journal = s.journal("demo-1-p1").await;
    assert_eq!(journal.len(), documents, "{journal:?}");
    // Listed for operators only.
    assert_eq!(s.get(KEY1, "/v1/operator/print-jobs/unknown").await.0, 403);
    let (status, list) = s.get(OPERATOR, "/v1/operator/print-jobs/unknown").await;
    assert_eq!(status, 200, "{list}");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["job"], job.as_str());
    assert_eq!(list[0]["subject"], id.as_str());
    assert_eq!(list[0]["printer"], "demo-1-p1");
    assert!(list[0]["detail"].as_str().unwrap().contains("documents"));
    // Wrong answers are refused.
    let resolve = "/v1/operator/print-jobs/resolve";
    for (body, want) in [
        (json!({ "job": job, "outcome": "printed" }), 422),
        (
            json!({ "job": job, "outcome": "not_printed", "document_number": 3 }),
            422,
        ),
        (json!({ "job": job, "outcome": "maybe" }), 422),
        (
            json!({ "job": "nope/receipt", "outcome": "not_printed" }),
            404,
        ),
    ] {
        let (status, problem) = s.post(OPERATOR, resolve, &body, &[]).await;
        assert_eq!(status, want, "{body}: {problem}");
    }
    // The operator reads the device's journal: the sale printed as `number`.
    let (status, cmd) = s
        .post(
            OPERATOR,
            resolve,
            &json!({ "job": job, "outcome": "printed", "document_number": number }),
            &[("prefer", "wait=10")],
        )
        .await;
    assert_eq!(status, 200, "{cmd}");
    assert_eq!(cmd["outcome"]["result"], "printed", "{cmd}");
    // The payment resumes by itself and ends with that receipt.
    let p = s
        .wait_payment(KEY1, &id, 30, |p| p["status"] == "fiscalized")
        .await;
    assert_eq!(p["receipt"]["number"], number, "{p}");
    assert_eq!(journal_count(&s.journal("demo-1-p1").await, &id), 1);
    let (_, list) = s.get(OPERATOR, "/v1/operator/print-jobs/unknown").await;
    assert!(list.as_array().unwrap().is_empty(), "{list}");
    let (status, _) = s
        .post(
            OPERATOR,
            resolve,
            &json!({ "job": job, "outcome": "printed", "document_number": number }),
            &[],
        )
        .await;
    assert_eq!(status, 409, "answered already");

    // Answered "not printed", the receipt prints again under a new sale key.
    let (id, number) = pay_into_an_unknown(&s, "unk-2", 1800).await;
    let (status, cmd) = s
        .post(
            OPERATOR,
            resolve,
            &json!({ "job": format!("{id}/receipt"), "outcome": "not_printed" }),
            &[("prefer", "wait=10")],
        )
        .await;
    assert_eq!(status, 200, "{cmd}");
    let p = s
        .wait_payment(KEY1, &id, 30, |p| p["status"] == "fiscalized")
        .await;
    assert!(p["receipt"]["number"].as_u64().unwrap() > number, "{p}");
    let journal = s.journal("demo-1-p1").await;
    let keys: Vec<_> = journal
        .iter()
        .filter_map(|e| e["sale_key"].as_str())
        .filter(|k| k.starts_with(id.as_str()))
        .collect();
    assert_eq!(keys, [format!("{id}/receipt.2")], "{journal:?}");
}

#[tokio::test]
async fn operator_resolves_an_unknown_receipt_as_not_printed() {
    let s = embedded("resolve", &["--fiscal-deadline", "1s"]);
    // (The deadline is short so the saga parks quickly; once resolved, the
    // step waits for the same queued job, whose answer it accepts late.)
    s.printer_faults("demo-1-p2", &json!({ "offline": true }))
        .await;
    let p = s
        .pay(KEY1, "res-1", &order("demo-1", "demo-1-p2", 1900))
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    let p = s
        .wait_payment(KEY1, &id, 30, |p| p["status"] == "parked")
        .await;
    let saga = p["saga_id"].as_str().unwrap().to_owned();
    // Wrong answers are refused.
    let (status, _) = s
        .post(
            OPERATOR,
            &format!("/v1/operator/sagas/{saga}/resolve"),
            &json!({ "outcome": "maybe" }),
            &[],
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = s
        .post(
            OPERATOR,
            &format!("/v1/operator/sagas/{saga}/resolve"),
            &json!({ "outcome": "applied" }),
            &[],
        )
        .await;
    assert_eq!(status, 422, "applied needs the document number");
    // Back online, the queued job prints after the saga parked. The
    // operator, unsure, answers "not printed": the step runs again, finds
    // its job printed, and takes that receipt instead of printing another.
    s.printer_faults("demo-1-p2", &json!({ "offline": false }))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Printed on the device, and the agent's report reached the server.
    while journal_count(&s.journal("demo-1-p2").await, &id) == 0
        || !s.get(KEY1, &format!("/v1/payments/{id}")).await.1["journey"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "receipt.printed")
    {
        assert!(std::time::Instant::now() < deadline, "never printed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = s
        .post(
            OPERATOR,
            &format!("/v1/operator/sagas/{saga}/resolve"),
            &json!({ "outcome": "not_applied" }),
            &[],
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let p = s
        .wait_payment(KEY1, &id, 30, |p| p["status"] == "fiscalized")
        .await;
    assert_eq!(p["receipt"]["printer"], "demo-1-p2");
    // One sale, one receipt.
    assert_eq!(journal_count(&s.journal("demo-1-p2").await, &id), 1);
}

#[tokio::test]
async fn a_key_never_sees_or_prints_for_another_restaurant() {
    let s = embedded("tenant", &[]);
    let p = s
        .pay(KEY1, "t-1", &order("demo-1", "demo-1-p1", 1100))
        .await;
    let id = p["id"].as_str().unwrap();
    let (status, body) = s.get(KEY2, &format!("/v1/payments/{id}")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["type"], "/problems/not-found");
    let (status, _) = s.get(KEY2, "/v1/payments?restaurant=demo-1").await;
    assert_eq!(status, 403);
    let (status, page) = s.get(KEY2, "/v1/payments").await;
    assert_eq!(status, 200);
    assert!(page["items"].as_array().unwrap().is_empty());
    // Paying as another restaurant, or on its printer, is refused.
    let (status, _) = s
        .post(
            KEY2,
            "/v1/payments",
            &order("demo-1", "demo-1-p1", 1100),
            &[("idempotency-key", "t-2")],
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .post(
            KEY2,
            "/v1/payments",
            &order("demo-2", "demo-1-p1", 1100),
            &[("idempotency-key", "t-3")],
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = s.get(KEY2, "/v1/printers/demo-1-p1").await;
    assert_eq!(status, 404);
    let (status, _) = s
        .post(KEY2, "/v1/printers/demo-1-p1/reports/z", &json!({}), &[])
        .await;
    assert_eq!(status, 404);
    let (_, printers) = s.get(KEY2, "/v1/printers").await;
    assert!(
        printers
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["restaurant"] == "demo-2")
    );
    // Refunding another restaurant's payment: not found.
    let (status, _) = s
        .post(
            KEY2,
            &format!("/v1/payments/{id}/refunds"),
            &json!({ "amount": 100, "reason": "x" }),
            &[("idempotency-key", "t-4")],
        )
        .await;
    assert_eq!(status, 404);
    // The same idempotency key in another restaurant is another payment.
    let q = s
        .pay(KEY2, "t-1", &order("demo-2", "demo-2-p1", 1100))
        .await;
    assert_ne!(q["id"], p["id"]);
    // Events: demo-2's stream carries nothing of demo-1.
    let ws_url = s.base.replace("http://", "ws://") + "/v1/events?after=0&access_token=" + KEY2;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let mut seen = 0;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await
    {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let e: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(e["restaurant"], "demo-2", "{e}");
            seen += 1;
        }
    }
    assert!(seen > 0, "demo-2 saw its own events");
}

#[tokio::test]
async fn malformed_input_gets_problem_details() {
    let s = embedded("malformed", &["--max-body-bytes", "4096"]);
    let url = s.url("/v1/payments");
    let send =
        |body: String, ct: &'static str, key: Option<&'static str>, auth: Option<&'static str>| {
            let mut r = s.http.post(&url).header("content-type", ct).body(body);
            if let Some(k) = key {
                r = r.header("idempotency-key", k);
            }
            if let Some(a) = auth {
                r = r.bearer_auth(a);
            }
            r.send()
        };
    let good = order("demo-1", "demo-1-p1", 1000).to_string();
    type Case<'a> = (String, &'a str, Option<&'a str>, Option<&'a str>, u16);
    let cases: Vec<Case<'_>> = vec![
        (good.clone(), "application/json", Some("m1"), None, 401),
        (
            good.clone(),
            "application/json",
            Some("m1"),
            Some("rk_nope"),
            401,
        ),
        (
            "{not json".into(),
            "application/json",
            Some("m2"),
            Some(KEY1),
            400,
        ),
        (good.clone(), "application/json", None, Some(KEY1), 400),
        (good.clone(), "text/plain", Some("m3"), Some(KEY1), 415),
        (
            r#"{"restaurant":"demo-1"}"#.into(),
            "application/json",
            Some("m4"),
            Some(KEY1),
            422,
        ),
        (
            good.replace("\"card\"", "\"cash\""),
            "application/json",
            Some("m5"),
            Some(KEY1),
            422,
        ),
        (
            good.replace("\"EUR\"", "\"euro\""),
            "application/json",
            Some("m6"),
            Some(KEY1),
            422,
        ),
        (
            good.replace("\"amount\":1000", "\"amount\":1001"),
            "application/json",
            Some("m7"),
            Some(KEY1),
            422,
        ),
        (
            good.replace("\"amount\":1000", "\"amount\":-5"),
            "application/json",
            Some("m8"),
            Some(KEY1),
            422,
        ),
        (
            good.replace("\"order_ref\"", "\"extra\":1,\"order_ref\""),
            "application/json",
            Some("m9"),
            Some(KEY1),
            422,
        ),
        (
            format!("{{\"pad\":\"{}\"}}", "x".repeat(10_000)),
            "application/json",
            Some("m10"),
            Some(KEY1),
            413,
        ),
    ];
    for (i, (body, ct, key, auth, want)) in cases.into_iter().enumerate() {
        let resp = send(body, ct, key, auth).await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "case {i}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "case {i}"
        );
        let p: Value = resp.json().await.unwrap();
        assert_eq!(p["status"], want, "case {i}: {p}");
        assert!(!p["type"].as_str().unwrap().is_empty(), "case {i}: {p}");
    }
    // Nothing was charged or printed by any of them.
    assert!(s.ledger().await.is_empty());
    let (_, page) = s.get(KEY1, "/v1/payments").await;
    assert!(page["items"].as_array().unwrap().is_empty());
    // Unknown routes and ids are problems too.
    let (status, p) = s.get(KEY1, "/v1/nope").await;
    assert_eq!((status, p["status"].as_u64()), (404, Some(404)));
    let (status, _) = s.get(KEY1, "/v1/payments?status=bogus").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn rate_limit_is_per_key() {
    let s = embedded("rate", &["--rate-limit", "1", "--rate-burst", "3"]);
    for _ in 0..3 {
        assert_eq!(s.get(KEY1, "/v1/printers").await.0, 200);
    }
    let resp = s
        .http
        .get(s.url("/v1/printers"))
        .bearer_auth(KEY1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    // Another key has its own budget.
    assert_eq!(s.get(KEY2, "/v1/printers").await.0, 200);
}

#[tokio::test]
async fn events_resume_from_the_last_id() {
    let s = embedded("ws", &[]);
    let ws_base = s.base.replace("http://", "ws://") + "/v1/events?access_token=" + KEY1;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_base.clone())
        .await
        .unwrap();
    let p = s
        .pay(KEY1, "ws-1", &order("demo-1", "demo-1-p1", 1300))
        .await;
    let id = p["id"].as_str().unwrap().to_owned();
    // Live: read until the payment is fiscalized.
    let last = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let e: Value = serde_json::from_str(&t).unwrap();
            if e["kind"] == "payment.fiscalized" && e["subject"] == id.as_str() {
                break e["id"].as_i64().unwrap();
            }
        }
    };
    ws.close(None).await.unwrap();
    // While disconnected, another payment happens.
    let q = s
        .pay(KEY1, "ws-2", &order("demo-1", "demo-1-p1", 1400))
        .await;
    let qid = q["id"].as_str().unwrap().to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{ws_base}&after={last}"))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let e: Value = serde_json::from_str(&t).unwrap();
            assert!(e["id"].as_i64().unwrap() > last);
            if e["subject"] == qid.as_str() {
                kinds.push(e["kind"].as_str().unwrap().to_owned());
            }
            if e["kind"] == "payment.fiscalized" && e["subject"] == qid.as_str() {
                break;
            }
        }
    }
    assert_eq!(kinds.first().map(String::as_str), Some("payment.pending"));
    assert_eq!(kinds.last().map(String::as_str), Some("payment.fiscalized"));
}

#[tokio::test]
async fn reports_and_cash_reach_the_printer() {
    let s = embedded("reports", &[]);
    s.pay(KEY1, "rep-1", &order("demo-1", "demo-1-p1", 2000))
        .await;
    let (status, x) = s
        .post(
            KEY1,
            "/v1/printers/demo-1-p1/cash",
            &json!({ "amount": 5000 }),
            &[("prefer", "wait=10")],
        )
        .await;
    assert_eq!(status, 200, "{x}");
    let (status, z) = s
        .post(
            KEY1,
            "/v1/printers/demo-1-p1/reports/z",
            &json!({}),
            &[("prefer", "wait=10"), ("idempotency-key", "z-1")],
        )
        .await;
    assert_eq!(status, 200, "{z}");
    assert_eq!(z["outcome"]["result"], "printed");
    assert_eq!(z["outcome"]["document"]["amount"], 2000);
    // Retried with the same key: the same report, not a second one.
    let (_, z2) = s
        .post(
            KEY1,
            "/v1/printers/demo-1-p1/reports/z",
            &json!({}),
            &[("prefer", "wait=10"), ("idempotency-key", "z-1")],
        )
        .await;
    assert_eq!(z2["id"], z["id"]);
    let journal = s.journal("demo-1-p1").await;
    assert_eq!(
        journal.iter().filter(|e| e["kind"] == "z_report").count(),
        1
    );
    assert_eq!(journal.iter().filter(|e| e["kind"] == "cash").count(), 1);
    let (status, _) = s
        .post(KEY1, "/v1/printers/demo-1-p1/reports/q", &json!({}), &[])
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let s = embedded("meta", &[]);
    assert_eq!(
        s.http
            .get(s.url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = s
        .http
        .get(s.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["bus"], "ok (in-process)");
    // Nothing dead-lettered; replaying an unknown one is a 404.
    let (status, dead) = s.get(OPERATOR, "/v1/operator/dead-letters").await;
    assert_eq!((status, dead), (200, json!([])));
    let (status, _) = s
        .post(
            OPERATOR,
            &format!("/v1/operator/dead-letters/{}/replay", uuid::Uuid::new_v4()),
            &json!({}),
            &[],
        )
        .await;
    assert_eq!(status, 404);
    s.pay(KEY1, "meta-1", &order("demo-1", "demo-1-p1", 1000))
        .await;
    // The OpenAPI document parses as OpenAPI 3.1, every schema reference
    // resolves, and it lists the API.
    let text = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert!(doc.openapi.starts_with("3.1"));
    let paths = doc.paths.clone().unwrap_or_default();
    for path in [
        "/v1/payments",
        "/v1/payments/{id}",
        "/v1/payments/{id}/refunds",
        "/v1/printers",
        "/v1/events",
        "/v1/operator/sagas/{id}/resolve",
    ] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    for (path, item) in &paths {
        for (method, op) in item.methods() {
            for (status, resp) in op.responses(&doc) {
                for media in resp.content.values() {
                    if let Some(schema) = &media.schema {
                        schema
                            .resolve(&doc)
                            .unwrap_or_else(|e| panic!("{method} {path} {status}: {e}"));
                    }
                }
            }
        }
    }
    let page = s
        .http
        .get(s.url("/api"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("/openapi.json") && !page.contains("https://"),
        "the API page works offline"
    );
    let console = s
        .http
        .get(s.url("/console"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!console.contains("https://"), "the console works offline");
    // Prometheus text format, checked by promtool when it is installed.
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"));
    assert!(metrics.contains("payments_transitions_total"));
    check_with_promtool(&metrics);
}

fn check_with_promtool(metrics: &str) {
    use std::io::Write;
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(promtool) = promtool else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is required when CI=true (apt-get install prometheus)"
        );
        eprintln!("skipping promtool check: promtool not installed");
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_and_state_survives_a_restart() {
    let dir = temp_dir("restart");
    let mut s = spawn(&dir, &[], &[], true);
    let p = s
        .pay(KEY1, "rs-1", &order("demo-1", "demo-1-p1", 1700))
        .await;
    assert_eq!(p["status"], "fiscalized");
    assert_eq!(s.terminate(Duration::from_secs(15)), Some(0));
    // Same data dir: the payment is still there, and the key still replays.
    let s = spawn(&dir, &[], &[], true);
    let (status, again) = s
        .post(
            KEY1,
            "/v1/payments",
            &{
                let mut b = order("demo-1", "demo-1-p1", 1700);
                b["order_ref"] = p["order_ref"].clone();
                b
            },
            &[("idempotency-key", "rs-1")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], p["id"]);
    assert_eq!(again["status"], "fiscalized");
}

#[tokio::test]
async fn killed_mid_flow_finishes_after_restart_exactly_once() {
    let dir = temp_dir("kill");
    let mut s = spawn(&dir, &[], &[], true);
    // Printer offline: payments stop at the receipt (their jobs queued for
    // the printer, or still waiting to be queued).
    s.printer_faults("demo-1-p1", &json!({ "offline": true }))
        .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, p) = s
            .post(
                KEY1,
                "/v1/payments",
                &order("demo-1", "demo-1-p1", 1000 + i * 10),
                &[("idempotency-key", &format!("k-{i}"))],
            )
            .await;
        assert_eq!(status, 202);
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        s.wait_payment(KEY1, id, 20, |p| {
            p["status"] == "fiscalizing" || p["status"] == "captured"
        })
        .await;
    }
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    drop(s);
    // A new process (the simulated printer starts online) finishes them,
    // once the killed process's leases (saga and relay claims, 15 s each)
    // have lapsed.
    let s = spawn(&dir, &[], &[], true);
    for id in &ids {
        s.wait_payment(KEY1, id, 60, |p| p["status"] == "fiscalized")
            .await;
    }
    let journal = s.journal("demo-1-p1").await;
    for id in &ids {
        assert_eq!(journal_count(&journal, id), 1, "{id}");
    }
}

#[tokio::test]
async fn paper_out_pauses_the_receipt_until_refilled() {
    let s = embedded("paper", &[]);
    s.printer_faults("demo-1-p2", &json!({ "paper_out": true }))
        .await;
    let (status, p) = s
        .post(
            KEY1,
            "/v1/payments",
            &order("demo-1", "demo-1-p2", 1300),
            &[("idempotency-key", "paper-1")],
        )
        .await;
    assert_eq!(status, 202, "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    // The device ran out mid-receipt: the printer shows it, the receipt
    // waits open on the device.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, pr) = s.get(KEY1, "/v1/printers/demo-1-p2").await;
        if pr["paper"] == "out" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "paper never showed out: {pr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, now) = s.get(KEY1, &format!("/v1/payments/{id}")).await;
    assert_eq!(now["status"], "fiscalizing", "{now}");
    s.printer_faults("demo-1-p2", &json!({ "paper_out": false }))
        .await;
    let p = s
        .wait_payment(KEY1, &id, 30, |p| p["status"] == "fiscalized")
        .await;
    assert_eq!(p["receipt"]["amount"], 1300);
    assert_eq!(journal_count(&s.journal("demo-1-p2").await, &id), 1);
}

/// A saga that began waiting under a version whose print steps waited for
/// the bare event names (`receipt.printed`, ...) still gets its receipt:
/// the results consumer delivers the job's named event and, when the saga
/// is not waiting for it, the bare one.
#[tokio::test]
async fn a_saga_waiting_for_bare_event_names_still_gets_its_receipt() {
    use sqlx::Connection as _;
    let s = embedded("barewait", &[]);
    let id = pay_while_offline(&s, "demo-1-p1", "bare-1", 1100).await;
    s.wait_for(KEY1, "/v1/printers/demo-1-p1", 20, |pr| pr["queued"] == 1)
        .await;
    // The saga waits for its job's named events (`receipt.printed#{job}`,
    // ...); make it wait for the same names without the job, as the older
    // version did, changing only that wait.
    let url = format!("sqlite://{}/restaurant.sqlite", s.dir.display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let waits: Vec<(String,)> =
        sqlx::query_as("SELECT wait_events FROM saga_instances WHERE status = 'waiting'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let [(named,)] = waits.as_slice() else {
        panic!("one saga should wait: {waits:?}");
    };
    let job = format!("#{id}/receipt");
    assert_eq!(named.matches(&job).count(), 3, "{named}");
    let bare = named.replace(&job, "");
    assert!(
        bare.contains("receipt.printed") && !bare.contains('#'),
        "{bare}"
    );
    let changed = sqlx::query("UPDATE saga_instances SET wait_events = $1 WHERE wait_events = $2")
        .bind(&bare)
        .bind(named)
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    db.close().await.unwrap();
    s.printer_faults("demo-1-p1", &json!({ "offline": false }))
        .await;
    let p = s
        .wait_payment(KEY1, &id, 30, |p| p["status"] == "fiscalized")
        .await;
    assert_eq!(p["receipt"]["amount"], 1100);
    assert_eq!(journal_count(&s.journal("demo-1-p1").await, &id), 1);
}
