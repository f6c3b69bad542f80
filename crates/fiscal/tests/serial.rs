//! The serial transport over a pseudo-terminal pair bridged to the
//! simulator: the same receipt, the same single document.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(all(feature = "serial", unix))]

mod common;

use common::*;
use counterfoil_fiscal::isl::transport::SerialConnector;
use counterfoil_fiscal::{
    DatecsConfig, DatecsPrinter, Dialect, FiscalPrinter, InMemoryJournal, Outcome, PrinterHandle,
};
use std::sync::Arc;
use tokio_serial::SerialPort;

#[tokio::test]
async fn receipt_over_a_serial_line() {
    let (mut master, slave) = tokio_serial::SerialStream::pair().expect("pseudo-terminal pair");
    let path = slave.name().expect("slave path");
    let sim = sim(Dialect::Classic).await;
    let mut tcp = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    // The device end of the line: bytes from the pty master go to the simulator and back.
    tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut master, &mut tcp).await;
    });
    let mut cfg = DatecsConfig::new(Dialect::Classic);
    cfg.link = fast_link();
    let p = Arc::new(DatecsPrinter::new(
        Arc::new(SerialConnector::new(path, 115_200)),
        cfg,
    ));
    let info = p.info().await.unwrap();
    assert_eq!(info.serial, "DT000001");
    let h = PrinterHandle::spawn(
        p as Arc<dyn FiscalPrinter>,
        Arc::new(InMemoryJournal::new()),
        actor_config("serial"),
    );
    let out = h
        .print_receipt("s", receipt("AB000001-0001-0000077", 3))
        .await
        .unwrap();
    assert!(
        matches!(out, Outcome::Printed(ref d) if d.doc_no == 1),
        "{out:?}"
    );
    assert_eq!(ej_count(&sim, "AB000001-0001-0000077"), 1);
    drop(slave);
}
