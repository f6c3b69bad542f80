//! ESC/POS tickets against the loopback sink: never "printed" without a
//! status read after the job.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![cfg(feature = "escpos")]

use counterfoil_fiscal::Error;
use counterfoil_fiscal::sim::escpos::{EscPosSink, SinkState};
use counterfoil_fiscal::ticket::{EscPosPrinter, Ticket, TicketLine, TicketPrinter};

fn ticket() -> Ticket {
    Ticket {
        lines: vec![
            TicketLine::Large("Table 7".into()),
            TicketLine::Bold("2x Espresso".into()),
            TicketLine::Text("no sugar".into()),
            TicketLine::Feed(2),
        ],
        cut: true,
    }
}

#[tokio::test]
async fn prints_and_reads_status_after_every_job() {
    let sink = EscPosSink::start("127.0.0.1:0").await.unwrap();
    let p = EscPosPrinter::new(sink.addr().to_string());
    let st = p.print_ticket(&ticket()).await.unwrap();
    assert!(!st.paper_out && !st.cover_open);
    let got = sink.received();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("2x Espresso") && text.contains("Table 7"),
        "{text}"
    );
    assert_eq!(got[..2], [0x1B, 0x40], "starts with ESC @");
    // Four status requests before and four after the job.
    assert_eq!(sink.status_requests(), 8);
}

#[tokio::test]
async fn paper_out_and_cover_open_are_errors_not_success() {
    let sink = EscPosSink::start("127.0.0.1:0").await.unwrap();
    let p = EscPosPrinter::new(sink.addr().to_string());
    sink.set_state(SinkState {
        paper_out: true,
        ..SinkState::default()
    });
    let e = p.print_ticket(&ticket()).await.unwrap_err();
    assert!(
        matches!(e, Error::NeedsOperator(ref m) if m.code == "E301"),
        "{e}"
    );
    assert!(
        sink.received().is_empty(),
        "nothing sent into an empty printer"
    );
    sink.set_state(SinkState {
        cover_open: true,
        paper_low: true,
        ..SinkState::default()
    });
    let st = p.status().await.unwrap();
    assert!(st.cover_open && st.paper_low);
    let e = p.print_ticket(&ticket()).await.unwrap_err();
    assert!(
        matches!(e, Error::NeedsOperator(ref m) if m.code == "E302"),
        "{e}"
    );
}

#[tokio::test]
async fn unreachable_printer_is_offline() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let e = EscPosPrinter::new(addr.to_string())
        .status()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Offline(_)), "{e}");
}
