//! Device messages with ErpNet.FP-compatible codes (`E###` errors, `W###` warnings).

use serde::{Deserialize, Serialize};
use std::fmt;

/// How serious a [`DeviceMessage`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The command failed or the device cannot print.
    Error,
    /// The device works but needs attention soon (paper low, memory near full).
    Warning,
    /// A state worth showing (receipt open, fiscalized).
    Info,
}

/// One message about the device: a standard code, a text and, when it came
/// from the device, the raw origin (status bit or vendor error code).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceMessage {
    /// Standard code: `E301`, `W201`, ... (see the crate README table).
    pub code: String,
    /// How serious it is.
    pub severity: Severity,
    /// Human-readable text in English.
    pub text: String,
    /// Where it came from, e.g. `status 2.0` or `ErrorCode -111016`.
    pub origin: String,
}

impl DeviceMessage {
    /// A message from the standard table.
    pub fn new(code: Code, origin: impl Into<String>) -> Self {
        Self {
            code: code.code.to_owned(),
            severity: code.severity,
            text: code.text.to_owned(),
            origin: origin.into(),
        }
    }
}

impl fmt::Display for DeviceMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.code, self.text, self.origin)
    }
}

/// An entry of the standard code table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// The code, e.g. `E301`.
    pub code: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// Its text.
    pub text: &'static str,
}

macro_rules! codes {
    ($($name:ident = $code:literal, $sev:ident, $text:literal;)*) => {
        /// The standard codes, the same for every driver. Codes that ErpNet.FP
        /// defines keep its number and meaning; the README table lists them all.
        pub mod codes {
            use super::{Code, Severity};
            $(
                #[doc = concat!("`", $code, "`: ", $text, ".")]
                pub const $name: Code = Code { code: $code, severity: Severity::$sev, text: $text };
            )*
            /// Every code in the table, in order.
            pub const ALL: &[Code] = &[$($name),*];
        }
    };
}

codes! {
    E101_NO_RESPONSE = "E101", Error, "no response from the device";
    E107_BAD_FRAME = "E107", Error, "invalid or corrupt frame";
    E108_BUSY = "E108", Error, "device busy with another connection";
    E201_FM_FULL = "E201", Error, "fiscal memory full";
    E202_FM_ERROR = "E202", Error, "fiscal memory error";
    E203_FM_STORE = "E203", Error, "fiscal memory store failed";
    E204_FM_READ_ONLY = "E204", Error, "fiscal memory is read-only";
    E206_EJ_FULL = "E206", Error, "electronic journal full";
    E301_PAPER_OUT = "E301", Error, "end of paper";
    E302_COVER_OPEN = "E302", Error, "cover is open";
    E303_PRINTER_FAULT = "E303", Error, "printing mechanism failure";
    E304_HEAD_HOT = "E304", Error, "print head overheated";
    E305_CLOCK_NOT_SET = "E305", Error, "real-time clock is not set";
    E401_SYNTAX = "E401", Error, "syntax error in the command";
    E402_BAD_COMMAND = "E402", Error, "invalid command code";
    E403_OVERFLOW = "E403", Error, "overflow during command execution";
    E404_NOT_ALLOWED = "E404", Error, "command not allowed in this mode";
    E405_RAM_RESET = "E405", Error, "device RAM was reset";
    E406_PAYMENT = "E406", Error, "invalid payment";
    E407_RECEIPT_OPEN = "E407", Error, "a fiscal receipt is already open";
    E408_NO_RECEIPT = "E408", Error, "no fiscal receipt is open";
    E409_GENERAL = "E409", Error, "general device error";
    E410_WRONG_PASSWORD = "E410", Error, "wrong operator password";
    E411_TAX_GROUP = "E411", Error, "invalid tax group";
    E499_REJECTED = "E499", Error, "command rejected by the device";
    E502_Z_REQUIRED = "E502", Error, "24-hour block: a Z report is required";
    W201_FM_NEAR_FULL = "W201", Warning, "fiscal memory nearly full";
    W202_EJ_NEAR_FULL = "W202", Warning, "electronic journal nearly full";
    W301_PAPER_LOW = "W301", Warning, "paper is low";
    W401_LOW_BATTERY = "W401", Warning, "low battery";
    I001_RECEIPT_OPEN = "I001", Info, "fiscal receipt is open";
    I002_NONFISCAL_OPEN = "I002", Info, "non-fiscal receipt is open";
    I003_STORNO_OPEN = "I003", Info, "storno receipt is open";
    I004_FISCAL_MODE = "I004", Info, "device is fiscalized";
}
