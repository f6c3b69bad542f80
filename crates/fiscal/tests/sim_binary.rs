//! The `fiscal-sim` binary: a driver prints through it over TCP and the
//! admin port injects faults and reports state.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::*;
use counterfoil_fiscal::{Dialect, InMemoryJournal, Outcome};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn binary_serves_the_protocol_and_the_admin_port() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fiscal-sim"))
        .args([
            "--dialect",
            "classic",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut device, mut admin) = (None, None);
    tokio::time::timeout(Duration::from_secs(30), async {
        while device.is_none() || admin.is_none() {
            let line = lines.next_line().await.unwrap().expect("simulator output");
            if let Some(a) = line.strip_prefix("simulated fiscal printer on ") {
                device = Some(a.to_owned());
            }
            if let Some(a) = line.strip_prefix("admin port on ") {
                admin = Some(a.to_owned());
            }
        }
    })
    .await
    .expect("simulator started");
    let (device, admin) = (device.unwrap(), admin.unwrap());

    let conn = tokio::net::TcpStream::connect(&admin).await.unwrap();
    let (r, mut w) = conn.into_split();
    let mut answers = BufReader::new(r).lines();
    w.write_all(b"nak 2\n").await.unwrap();
    assert_eq!(answers.next_line().await.unwrap().unwrap(), "ok");
    w.write_all(b"explode\n").await.unwrap();
    assert!(
        answers
            .next_line()
            .await
            .unwrap()
            .unwrap()
            .starts_with("error")
    );

    let h = actor(
        printer_at(&device, Dialect::Classic),
        Arc::new(InMemoryJournal::new()),
        "p",
    );
    let out = h
        .print_receipt("s", receipt("AB000001-0001-0000003", 2))
        .await
        .unwrap();
    assert!(
        matches!(out, Outcome::Printed(ref d) if d.doc_no == 1),
        "{out:?}"
    );

    w.write_all(b"state\n").await.unwrap();
    let state = answers.next_line().await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(v["last_doc_no"], 1);
    assert_eq!(v["ej"][0]["unp"], "AB000001-0001-0000003");
    w.write_all(b"transcript\n").await.unwrap();
    let first = answers.next_line().await.unwrap().unwrap();
    assert!(first.contains("> 01"), "{first}");
    child.kill().await.unwrap();
}
