//! Device status: decoded flags and standard messages.

use crate::message::{DeviceMessage, Severity};
use serde::{Deserialize, Serialize};

/// The status bits every driver understands, decoded from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
pub struct StatusFlags {
    /// No paper: print commands are refused.
    pub paper_out: bool,
    /// Paper is running low.
    pub paper_low: bool,
    /// The cover is open.
    pub cover_open: bool,
    /// A fiscal receipt is open.
    pub receipt_open: bool,
    /// A non-fiscal (service) receipt is open.
    pub nonfiscal_open: bool,
    /// A storno receipt is open.
    pub storno_open: bool,
    /// Fiscal memory is nearly full.
    pub fm_near_full: bool,
    /// Fiscal memory is full.
    pub fm_full: bool,
    /// Electronic journal is nearly full.
    pub ej_near_full: bool,
    /// Electronic journal is full.
    pub ej_full: bool,
    /// The clock is not set.
    pub clock_not_set: bool,
    /// Printing mechanism failure.
    pub printer_fault: bool,
    /// Print head overheated.
    pub head_overheated: bool,
    /// The device is in fiscal mode.
    pub fiscalized: bool,
}

/// A decoded status reply.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusReport {
    /// The decoded flags.
    pub flags: StatusFlags,
    /// Every set bit that means something, as a standard message.
    pub messages: Vec<DeviceMessage>,
    /// The raw status bytes.
    pub raw: Vec<u8>,
}

impl StatusReport {
    /// True when no message has severity [`Severity::Error`].
    pub fn is_ok(&self) -> bool {
        !self.messages.iter().any(|m| m.severity == Severity::Error)
    }

    /// The first error message, if any.
    pub fn first_error(&self) -> Option<&DeviceMessage> {
        self.messages.iter().find(|m| m.severity == Severity::Error)
    }
}
