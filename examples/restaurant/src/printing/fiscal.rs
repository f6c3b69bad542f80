//! From the server's print jobs to `counterfoil_fiscal` jobs, and from its
//! documents and status back.

use counterfoil_fiscal::{
    DeviceDateTime, Document, Job, Money, OriginalDocument, Paper, PaymentType, PrinterStatus, Qty,
    Receipt, ReportKind, Reversal, ReversalReason, VatGroup as FiscalVat,
};

use crate::domain::{FiscalDocument, ReceiptLine, VatGroup, now_ms};
use crate::store::print_jobs::PrintJob;
use crate::store::printers::PrinterState;

/// The fiscal job for a print job, or why there is none (a job the printer
/// must not be asked for).
pub(crate) fn job(job: &PrintJob) -> Result<Job, String> {
    match job.kind.as_str() {
        "receipt" => Ok(Job::Receipt(receipt(&job.lines, job.amount))),
        "reversal" => {
            let original = job
                .original
                .as_ref()
                .ok_or("a reversal needs its original receipt")?;
            let at = original
                .device_time
                .as_deref()
                .and_then(DeviceDateTime::parse_wire)
                .unwrap_or_else(|| DeviceDateTime::from_unix_millis(original.printed_at));
            let fm_serial = original
                .fm_serial
                .clone()
                .ok_or("the original receipt has no fiscal memory serial")?;
            Ok(Job::Reversal(Reversal {
                original: OriginalDocument {
                    doc_no: original.number,
                    at,
                    fm_serial,
                },
                reason: ReversalReason::Refund,
                receipt: receipt(&job.lines, job.amount),
            }))
        }
        "x_report" => Ok(Job::Report(ReportKind::X)),
        "z_report" => Ok(Job::Report(ReportKind::Z)),
        "cash" => Ok(Job::Cash(Money(job.amount))),
        other => Err(format!("unknown job kind `{other}`")),
    }
}

/// A receipt of `lines`, paid by card (the payment the provider captured).
fn receipt(lines: &[ReceiptLine], amount: i64) -> Receipt {
    lines
        .iter()
        .fold(Receipt::new(), |r, l| {
            r.sale(
                l.text.clone(),
                Money(l.unit_price),
                Qty(l.quantity),
                vat(l.vat),
            )
        })
        .pay(PaymentType::Card, Money(amount))
}

fn vat(v: VatGroup) -> FiscalVat {
    match v {
        VatGroup::A => FiscalVat::A,
        VatGroup::B => FiscalVat::B,
        VatGroup::C => FiscalVat::C,
        VatGroup::D => FiscalVat::D,
        VatGroup::E => FiscalVat::E,
        VatGroup::F => FiscalVat::F,
        VatGroup::G => FiscalVat::G,
        VatGroup::H => FiscalVat::H,
    }
}

/// The server's record of a printed document; reversals count negative.
pub(crate) fn document(printer: &str, kind: &str, d: &Document) -> FiscalDocument {
    let amount = if kind == "reversal" {
        -d.amount.0.abs()
    } else {
        d.amount.0
    };
    FiscalDocument {
        printer: printer.to_owned(),
        number: d.doc_no,
        amount,
        printed_at: now_ms(),
        device_time: d.at.map(|t| t.to_string()),
        fm_serial: d.fm_serial.clone(),
    }
}

/// The state to publish, from the device actor's status.
pub(crate) fn state(s: &PrinterStatus, offline: bool, last_error: Option<String>) -> PrinterState {
    PrinterState {
        online: s.online && !offline,
        paper: match s.paper {
            Paper::Ok => "ok",
            Paper::Low => "low",
            Paper::Out => "out",
            _ => "unknown",
        }
        .into(),
        receipt_open: s.receipt_open,
        last_document: s.last_document,
        z_number: s.z_no,
        last_error: last_error.or_else(|| s.last_error.clone()),
        ..PrinterState::default()
    }
}
