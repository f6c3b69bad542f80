#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod actor;
mod clock;
mod datetime;
mod error;
pub mod isl;
pub mod journal;
mod message;
mod money;
mod outcome;
mod printer;
mod receipt;
pub mod reconcile;
pub mod sim;
mod status;
mod text;
pub mod ticket;
mod validate;

pub use actor::{ActorConfig, Paper, PrinterHandle, PrinterStatus, Resolution};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use datetime::DeviceDateTime;
pub use error::Error;
pub use isl::{DatecsConfig, DatecsPrinter, Dialect};
#[cfg(feature = "postgres")]
pub use journal::PgJournal;
#[cfg(feature = "sqlite")]
pub use journal::SqliteJournal;
pub use journal::{InMemoryJournal, JobRecord, JobState, Journal, JournalTotals};
pub use message::{Code, DeviceMessage, Severity, codes};
pub use money::{Money, Qty};
pub use outcome::{Document, Evidence, NotPrinted, OpenReceipt, Outcome, Snapshot};
pub use printer::{Capabilities, DeviceInfo, FiscalPrinter, RawReply};
pub use receipt::{
    Item, Job, Operator, OriginalDocument, Payment, PaymentType, PriceModifier, Receipt,
    ReportKind, Reversal, ReversalReason, Sale, VatGroup,
};
pub use status::{StatusFlags, StatusReport};
pub use validate::{Invalid, Limits, Totals, validate_cash, validate_receipt};
