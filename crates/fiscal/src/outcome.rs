//! What became of a document: printed, not printed, or unknown.

use crate::datetime::DeviceDateTime;
use crate::money::Money;
use serde::{Deserialize, Serialize};

/// A printed fiscal document, as the device numbered it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Document {
    /// The device's document number (global counter).
    pub doc_no: u64,
    /// The document amount (receipt total; cash moved; zero for reports).
    pub amount: Money,
    /// When the device printed it, when known.
    pub at: Option<DeviceDateTime>,
    /// Z report number, for Z reports.
    pub z_no: Option<u32>,
    /// True when the driver did not see the reply and the document was
    /// established from the device's counters afterwards.
    pub recovered: bool,
    /// Serial number of the fiscal memory that holds the document (what a
    /// reversal's [`OriginalDocument`](crate::OriginalDocument) refers to),
    /// when the device told it.
    #[serde(default)]
    pub fm_serial: Option<String>,
    /// The device's serial number, when the device told it.
    #[serde(default)]
    pub serial: Option<String>,
}

/// An open fiscal or storno receipt, as the device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpenReceipt {
    /// True for a storno (reversal) receipt.
    pub storno: bool,
    /// Sale lines registered so far.
    pub items: u32,
    /// Amount registered so far.
    pub amount: Money,
    /// Amount paid so far.
    pub tender: Money,
}

/// The device's counters and open-receipt state at one moment: the
/// baseline recorded before a document, and the evidence read after.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    /// Number of the last document printed.
    pub last_doc_no: u64,
    /// Number of the last Z report.
    pub z_no: u32,
    /// The open receipt, if one is open.
    pub open: Option<OpenReceipt>,
    /// Items and amount of the last closed receipt (when none is open).
    pub last_receipt: Option<OpenReceipt>,
}

/// Why a document was not printed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NotPrinted {
    /// Standard code, when there is one (`E301`, `E502`, ...).
    pub code: Option<String>,
    /// What happened.
    pub reason: String,
}

/// What the driver saw when it could not decide: for a person to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Evidence {
    /// Counters before the first frame.
    pub baseline: Option<Snapshot>,
    /// Counters read afterwards.
    pub observed: Option<Snapshot>,
    /// Why the evidence is not conclusive.
    pub note: String,
}

/// The end of a job: exactly one document, none, or unknown. Never two.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// The device printed exactly one document.
    Printed(Document),
    /// The device printed nothing; the job may be submitted again.
    NotPrinted(NotPrinted),
    /// The evidence does not tell; a person must look at the device's
    /// journal. Never retried automatically.
    Unknown(Evidence),
}

impl Outcome {
    /// The printed document, if any.
    pub fn document(&self) -> Option<&Document> {
        match self {
            Outcome::Printed(d) => Some(d),
            _ => None,
        }
    }
}
