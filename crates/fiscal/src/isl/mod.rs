//! Datecs ISL family: codec → link → commands and status tables → driver.
//!
//! * [`codec`]: pure frame encoding and decoding (checksums, escaping, lengths).
//! * [`link`]: sequence numbers, SYN waits, NAK and timeout retransmits.
//! * [`status`]: status-bit and ErrorCode tables mapped to standard codes.
//! * [`commands`]: command codes and their data formats per dialect.
//! * [`DatecsPrinter`]: the [`FiscalPrinter`](crate::FiscalPrinter) driver.

pub mod codec;
pub mod commands;
mod driver;
pub mod link;
pub mod status;
pub mod transport;

pub use driver::{DatecsConfig, DatecsPrinter, PaymentCodes};

use serde::{Deserialize, Serialize};

/// The two framings of the ISL family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dialect {
    /// Classic ISL (FP-2000, FP-800, DP-25, DP-150, ...): one-byte LEN and
    /// CMD, six status bytes, comma-separated data.
    Classic,
    /// Datecs X (FP-700X, DP-25X, DP-150X, ...): four nibble-byte LEN and
    /// CMD, eight status bytes, TAB-separated data starting with ErrorCode.
    X,
}

impl Dialect {
    /// Number of status bytes in a reply.
    pub fn status_len(self) -> usize {
        match self {
            Dialect::Classic => 6,
            Dialect::X => 8,
        }
    }

    /// Largest data field a host may send (after escaping).
    pub fn max_request_data(self) -> usize {
        match self {
            Dialect::Classic => 213,
            Dialect::X => 496,
        }
    }

    /// Largest data field a device may send (after escaping). Classic
    /// replies are limited so that LEN still fits in one byte.
    pub fn max_reply_data(self) -> usize {
        match self {
            Dialect::Classic => 212,
            Dialect::X => 2048,
        }
    }
}

impl std::str::FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "classic" | "c" | "p" => Ok(Dialect::Classic),
            "x" => Ok(Dialect::X),
            _ => Err(format!("unknown dialect {s:?} (classic or x)")),
        }
    }
}
