//! Status-bit tables of both dialects and the Datecs X ErrorCode table,
//! mapped to standard codes and typed errors.

use super::Dialect;
use crate::error::Error;
use crate::message::{Code, DeviceMessage, codes};
use crate::status::{StatusFlags, StatusReport};

/// Which flag a status bit sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// No flag; the bit only produces a message.
    None,
    /// [`StatusFlags::paper_out`].
    PaperOut,
    /// [`StatusFlags::paper_low`].
    PaperLow,
    /// [`StatusFlags::cover_open`].
    CoverOpen,
    /// [`StatusFlags::receipt_open`].
    ReceiptOpen,
    /// [`StatusFlags::nonfiscal_open`].
    NonfiscalOpen,
    /// [`StatusFlags::storno_open`].
    StornoOpen,
    /// [`StatusFlags::fm_near_full`].
    FmNearFull,
    /// [`StatusFlags::fm_full`].
    FmFull,
    /// [`StatusFlags::ej_near_full`].
    EjNearFull,
    /// [`StatusFlags::ej_full`].
    EjFull,
    /// [`StatusFlags::clock_not_set`].
    ClockNotSet,
    /// [`StatusFlags::printer_fault`].
    PrinterFault,
    /// [`StatusFlags::head_overheated`].
    HeadHot,
    /// [`StatusFlags::fiscalized`].
    Fiscal,
}

/// One meaningful status bit: `(byte, bit, code, flag)`.
pub type Bit = (usize, u8, Code, Flag);

/// Classic ISL, six status bytes (DT-P "Status bits").
/// Byte 0 bit 5 ("general error") is the OR of the error bits and byte 4
/// bit 5 the OR of the fiscal-memory errors; both are reported only when no
/// more specific bit is set.
pub const CLASSIC_BITS: &[Bit] = &[
    (0, 0, codes::E401_SYNTAX, Flag::None),
    (0, 1, codes::E402_BAD_COMMAND, Flag::None),
    (0, 2, codes::E305_CLOCK_NOT_SET, Flag::ClockNotSet),
    (0, 4, codes::E303_PRINTER_FAULT, Flag::PrinterFault),
    (0, 6, codes::E302_COVER_OPEN, Flag::CoverOpen),
    (1, 0, codes::E403_OVERFLOW, Flag::None),
    (1, 1, codes::E404_NOT_ALLOWED, Flag::None),
    (1, 2, codes::E405_RAM_RESET, Flag::None),
    (1, 3, codes::W401_LOW_BATTERY, Flag::None),
    (1, 4, codes::I003_STORNO_OPEN, Flag::StornoOpen),
    (2, 0, codes::E301_PAPER_OUT, Flag::PaperOut),
    (2, 1, codes::W301_PAPER_LOW, Flag::PaperLow),
    (2, 2, codes::E206_EJ_FULL, Flag::EjFull),
    (2, 3, codes::I001_RECEIPT_OPEN, Flag::ReceiptOpen),
    (2, 4, codes::W202_EJ_NEAR_FULL, Flag::EjNearFull),
    (2, 5, codes::I002_NONFISCAL_OPEN, Flag::NonfiscalOpen),
    (4, 0, codes::E203_FM_STORE, Flag::None),
    (4, 3, codes::W201_FM_NEAR_FULL, Flag::FmNearFull),
    (4, 4, codes::E201_FM_FULL, Flag::FmFull),
    (4, 6, codes::E304_HEAD_HOT, Flag::HeadHot),
    (5, 0, codes::E204_FM_READ_ONLY, Flag::None),
    (5, 2, codes::E203_FM_STORE, Flag::None),
    (5, 3, codes::I004_FISCAL_MODE, Flag::Fiscal),
];

/// Datecs X, eight status bytes (DT-X "Status bits").
pub const X_BITS: &[Bit] = &[
    (0, 0, codes::E401_SYNTAX, Flag::None),
    (0, 1, codes::E402_BAD_COMMAND, Flag::None),
    (0, 2, codes::E305_CLOCK_NOT_SET, Flag::ClockNotSet),
    (0, 4, codes::E303_PRINTER_FAULT, Flag::PrinterFault),
    (0, 6, codes::E302_COVER_OPEN, Flag::CoverOpen),
    (1, 0, codes::E403_OVERFLOW, Flag::None),
    (1, 1, codes::E404_NOT_ALLOWED, Flag::None),
    (2, 0, codes::E301_PAPER_OUT, Flag::PaperOut),
    (2, 1, codes::W301_PAPER_LOW, Flag::PaperLow),
    (2, 2, codes::E206_EJ_FULL, Flag::EjFull),
    (2, 3, codes::I001_RECEIPT_OPEN, Flag::ReceiptOpen),
    (2, 4, codes::W202_EJ_NEAR_FULL, Flag::EjNearFull),
    (2, 5, codes::I002_NONFISCAL_OPEN, Flag::NonfiscalOpen),
    (4, 0, codes::E202_FM_ERROR, Flag::None),
    (4, 3, codes::W201_FM_NEAR_FULL, Flag::FmNearFull),
    (4, 4, codes::E201_FM_FULL, Flag::FmFull),
    (4, 5, codes::E202_FM_ERROR, Flag::None),
    (4, 6, codes::E202_FM_ERROR, Flag::None),
    (5, 3, codes::I004_FISCAL_MODE, Flag::Fiscal),
];

/// The bit table of a dialect.
pub fn bits(dialect: Dialect) -> &'static [Bit] {
    match dialect {
        Dialect::Classic => CLASSIC_BITS,
        Dialect::X => X_BITS,
    }
}

/// The status bit for a flag in a dialect, as `(byte, bit)`.
pub fn bit_of(dialect: Dialect, flag: Flag) -> Option<(usize, u8)> {
    bits(dialect)
        .iter()
        .find(|b| b.3 == flag)
        .map(|b| (b.0, b.1))
}

/// The status bit for a code in a dialect, as `(byte, bit)`.
pub fn bit_of_code(dialect: Dialect, code: Code) -> Option<(usize, u8)> {
    bits(dialect)
        .iter()
        .find(|b| b.2 == code)
        .map(|b| (b.0, b.1))
}

/// Decodes raw status bytes.
pub fn decode(dialect: Dialect, raw: &[u8]) -> StatusReport {
    let mut flags = StatusFlags::default();
    let mut messages = Vec::new();
    for &(byte, bit, code, flag) in bits(dialect) {
        let set = raw.get(byte).is_some_and(|b| b & (1 << bit) != 0);
        if !set {
            continue;
        }
        match flag {
            Flag::None => {}
            Flag::PaperOut => flags.paper_out = true,
            Flag::PaperLow => flags.paper_low = true,
            Flag::CoverOpen => flags.cover_open = true,
            Flag::ReceiptOpen => flags.receipt_open = true,
            Flag::NonfiscalOpen => flags.nonfiscal_open = true,
            Flag::StornoOpen => flags.storno_open = true,
            Flag::FmNearFull => flags.fm_near_full = true,
            Flag::FmFull => flags.fm_full = true,
            Flag::EjNearFull => flags.ej_near_full = true,
            Flag::EjFull => flags.ej_full = true,
            Flag::ClockNotSet => flags.clock_not_set = true,
            Flag::PrinterFault => flags.printer_fault = true,
            Flag::HeadHot => flags.head_overheated = true,
            Flag::Fiscal => flags.fiscalized = true,
        }
        messages.push(DeviceMessage::new(code, format!("status {byte}.{bit}")));
    }
    let general = raw.first().is_some_and(|b| b & (1 << 5) != 0);
    if general
        && !messages
            .iter()
            .any(|m| m.severity == crate::Severity::Error)
    {
        messages.push(DeviceMessage::new(codes::E409_GENERAL, "status 0.5"));
    }
    StatusReport {
        flags,
        messages,
        raw: raw.to_vec(),
    }
}

/// Datecs X ErrorCode values with a known meaning.
pub const X_ERROR_CODES: &[(i64, Code)] = &[
    (-100_001, codes::E409_GENERAL),
    (-111_003, codes::E401_SYNTAX),
    (-111_008, codes::E404_NOT_ALLOWED),
    (-111_016, codes::E407_RECEIPT_OPEN),
    (-111_017, codes::E408_NO_RECEIPT),
    (-111_018, codes::E406_PAYMENT),
    (-111_019, codes::E411_TAX_GROUP),
    (-111_024, codes::E502_Z_REQUIRED),
    (-111_500, codes::E410_WRONG_PASSWORD),
    (-112_006, codes::E301_PAPER_OUT),
    (-112_007, codes::E302_COVER_OPEN),
    (-113_001, codes::E201_FM_FULL),
];

/// The standard code of a (negative) X ErrorCode; unknown codes map to `E499`.
pub fn x_error_code(code: i64) -> Code {
    X_ERROR_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(codes::E499_REJECTED, |(_, k)| *k)
}

/// The typed error a reply means, if any: an X reply with a negative
/// ErrorCode fails even when every status bit is clean; otherwise the first
/// error bit decides.
pub fn reply_error(report: &StatusReport, x_error: Option<i64>) -> Option<Error> {
    if let Some(code) = x_error
        && code < 0
    {
        return Some(Error::from_code(
            x_error_code(code),
            format!("ErrorCode {code}"),
        ));
    }
    let order = [
        codes::E301_PAPER_OUT.code,
        codes::E302_COVER_OPEN.code,
        codes::E304_HEAD_HOT.code,
    ];
    // Operator-fixable conditions first, then the rest in table order.
    let m = report
        .messages
        .iter()
        .filter(|m| m.severity == crate::Severity::Error)
        .min_by_key(|m| {
            order
                .iter()
                .position(|c| *c == m.code)
                .unwrap_or(order.len())
        })?;
    let code = crate::message::codes::ALL
        .iter()
        .find(|c| c.code == m.code)
        .copied()
        .unwrap_or(codes::E499_REJECTED);
    Some(Error::from_code(code, m.origin.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bit_maps_to_a_code_and_back() {
        for dialect in [Dialect::Classic, Dialect::X] {
            for &(byte, bit, code, _) in bits(dialect) {
                let mut raw = vec![0x80u8; dialect.status_len()];
                raw[byte] |= 1 << bit;
                let r = decode(dialect, &raw);
                assert!(
                    r.messages.iter().any(|m| m.code == code.code),
                    "{dialect:?} {byte}.{bit}"
                );
                let err = reply_error(&r, None);
                assert_eq!(err.is_some(), code.severity == crate::Severity::Error);
                if let Some(e) = err {
                    assert_eq!(e.code(), Some(code.code));
                }
            }
        }
    }

    #[test]
    fn negative_error_code_fails_with_clean_status() {
        let r = decode(Dialect::X, &[0x80; 8]);
        assert!(r.is_ok());
        let e = reply_error(&r, Some(-111_016)).unwrap();
        assert_eq!(e.code(), Some("E407"));
        let e = reply_error(&r, Some(-123_456)).unwrap();
        assert_eq!(e.code(), Some("E499"));
        assert!(matches!(
            reply_error(&r, Some(-111_024)),
            Some(Error::ZReportRequired(_))
        ));
        assert!(reply_error(&r, Some(0)).is_none());
    }

    #[test]
    fn paper_out_wins_over_general_error() {
        let mut raw = [0x80u8; 6];
        raw[0] |= 1 << 5;
        raw[2] |= 1;
        let e = reply_error(&decode(Dialect::Classic, &raw), None).unwrap();
        assert!(matches!(e, Error::NeedsOperator(_)));
        assert_eq!(e.code(), Some("E301"));
    }
}
