//! The `FiscalPrinter` trait every driver implements.

use crate::error::Error;
use crate::money::Money;
use crate::outcome::{Document, Snapshot};
use crate::receipt::{Payment, Receipt, ReportKind, Reversal};
use crate::status::StatusReport;
use crate::validate::Limits;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What a driver and its device can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Driver name, e.g. `datecs-x`.
    pub driver: String,
    /// Limits documents are validated against.
    pub limits: Limits,
    /// True when the device prints and stores a unique sale number.
    pub sale_number: bool,
    /// True when an open receipt can be cancelled after a payment (never on ISL).
    pub cancel_after_payment: bool,
}

/// Identity of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Model name.
    pub model: String,
    /// Firmware version.
    pub firmware: String,
    /// Device serial number.
    pub serial: String,
    /// Fiscal memory serial number.
    pub fm_serial: String,
}

/// A raw reply, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawReply {
    /// Reply data (device encoding).
    pub data: Vec<u8>,
    /// Decoded status.
    pub status: StatusReport,
}

/// A fiscal printer driver.
///
/// Methods that print return [`Ok`] only when the device confirmed the
/// document. On an error the document may or may not exist: the caller
/// (normally the device actor, see [`crate::PrinterHandle`]) reads a
/// [`Snapshot`] and decides with [`crate::reconcile::decide`].
/// A driver validates every document before its first frame.
///
/// # Cancel safety
///
/// No method that prints is cancel safe: a dropped future leaves the
/// document's fate to be read back from the device. The device actor never
/// drops them.
#[async_trait]
pub trait FiscalPrinter: Send + Sync + std::fmt::Debug {
    /// What this driver supports.
    fn capabilities(&self) -> &Capabilities;

    /// The status seen in the last reply, without talking to the device.
    fn last_status(&self) -> Option<StatusReport>;

    /// Reads device identity.
    async fn info(&self) -> Result<DeviceInfo, Error>;

    /// Reads the status.
    async fn status(&self) -> Result<StatusReport, Error>;

    /// Reads counters and open-receipt state.
    async fn snapshot(&self) -> Result<Snapshot, Error>;

    /// Prints a fiscal receipt.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped future can leave a receipt open. The
    /// device actor never drops it.
    async fn print_receipt(&self, receipt: &Receipt) -> Result<Document, Error>;

    /// Prints a reversal (storno) receipt.
    async fn print_reversal(&self, reversal: &Reversal) -> Result<Document, Error>;

    /// Cancels an open receipt that has no payment yet.
    async fn cancel_open(&self) -> Result<(), Error>;

    /// Completes an open receipt with `payments` (the ones not yet made,
    /// never an unrecorded remainder) and closes it.
    async fn finish_open(&self, payments: &[Payment]) -> Result<Document, Error>;

    /// Moves cash into (positive) or out of (negative) the drawer.
    async fn cash_move(&self, amount: Money) -> Result<Document, Error>;

    /// Prints an X or Z report.
    async fn report(&self, kind: ReportKind) -> Result<Document, Error>;

    /// Prints a duplicate of the last document.
    async fn duplicate_last(&self) -> Result<(), Error>;

    /// Sends a raw command, for diagnostics. Never used by the actor.
    async fn raw(&self, cmd: u16, data: &[u8]) -> Result<RawReply, Error>;
}

fn _obj_safe(_: &dyn FiscalPrinter) {}
