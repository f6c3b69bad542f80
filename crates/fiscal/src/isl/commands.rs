//! ISL command codes, request data and reply parsing, per dialect.
//!
//! Classic requests separate fields with commas; X requests end every
//! field with a TAB and every X reply starts with `ErrorCode`.

use super::Dialect;
use crate::datetime::DeviceDateTime;
use crate::error::Error;
use crate::money::{Money, Qty};
use crate::receipt::{Operator, PriceModifier, ReversalReason, Sale, VatGroup};
use crate::text::{decode_cp1251, encode_cp1251};

/// Open a storno document (X dialect).
pub const OPEN_STORNO_X: u16 = 0x2B;
/// Open a storno document (classic dialect).
pub const OPEN_STORNO_CLASSIC: u16 = 0x2E;
/// Open a fiscal receipt.
pub const OPEN: u16 = 0x30;
/// Register a sale.
pub const SALE: u16 = 0x31;
/// Subtotal, with an optional discount or surcharge.
pub const SUBTOTAL: u16 = 0x33;
/// Total and payment.
pub const PAYMENT: u16 = 0x35;
/// Free text on a fiscal receipt.
pub const TEXT: u16 = 0x36;
/// Close the fiscal receipt.
pub const CLOSE: u16 = 0x38;
/// Cancel the fiscal receipt (only before any payment).
pub const CANCEL: u16 = 0x3C;
/// Read date and time.
pub const DATETIME: u16 = 0x3E;
/// Last fiscal memory record (Z report number).
pub const LAST_FM_RECORD: u16 = 0x40;
/// Daily report (X or Z).
pub const REPORT: u16 = 0x45;
/// Cash in or out.
pub const CASH: u16 = 0x46;
/// Status.
pub const STATUS: u16 = 0x4A;
/// Fiscal transaction status (open, items, amount, tender).
pub const TRANSACTION: u16 = 0x4C;
/// Diagnostic information (model, firmware, serials).
pub const INFO: u16 = 0x5A;
/// Duplicate of the last document.
pub const DUPLICATE: u16 = 0x6D;
/// Last printed document number.
pub const LAST_DOC: u16 = 0x71;

fn text(s: &str) -> Result<Vec<u8>, Error> {
    encode_cp1251(s).ok_or_else(|| Error::Invalid(crate::Invalid::BadText { line: 0 }))
}

/// Joins fields in the dialect's way.
pub fn fields(dialect: Dialect, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        match dialect {
            Dialect::Classic => {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(p);
            }
            Dialect::X => {
                out.extend_from_slice(p);
                out.push(b'\t');
            }
        }
    }
    out
}

/// The tax-group symbol: Cyrillic А..З (code page 1251) on classic
/// devices, `1`..`8` on X devices.
pub fn vat_symbol(dialect: Dialect, v: VatGroup) -> u8 {
    match dialect {
        Dialect::Classic => 0xC0 + v.index() as u8,
        Dialect::X => b'1' + v.index() as u8,
    }
}

/// Parses a tax-group symbol.
pub fn parse_vat(dialect: Dialect, b: u8) -> Option<VatGroup> {
    match dialect {
        Dialect::Classic => b
            .checked_sub(0xC0)
            .and_then(|i| VatGroup::from_index(i.into())),
        Dialect::X => b
            .checked_sub(b'1')
            .and_then(|i| VatGroup::from_index(i.into())),
    }
}

/// Percent with two decimals from basis points: 1250 → `12.50`.
pub fn pct(bp: u16) -> String {
    format!("{}.{:02}", bp / 100, bp % 100)
}

/// Data of `OPEN`.
pub fn open(dialect: Dialect, op: &Operator, unp: Option<&str>) -> Vec<u8> {
    let id = op.id.to_string();
    match dialect {
        Dialect::Classic => {
            let mut parts: Vec<&[u8]> = vec![id.as_bytes(), op.password.as_bytes(), b"1"];
            if let Some(u) = unp {
                parts.push(u.as_bytes());
            }
            fields(dialect, &parts)
        }
        Dialect::X => fields(
            dialect,
            &[
                id.as_bytes(),
                op.password.as_bytes(),
                unp.unwrap_or("").as_bytes(),
                b"1",
                b"",
            ],
        ),
    }
}

/// Reason digit of a storno.
pub fn reason_digit(r: ReversalReason) -> u8 {
    match r {
        ReversalReason::OperatorError => b'0',
        ReversalReason::Refund => b'1',
        ReversalReason::TaxBaseReduction => b'2',
    }
}

/// Command code and data of opening a storno receipt.
pub fn open_storno(
    dialect: Dialect,
    op: &Operator,
    reason: ReversalReason,
    doc_no: u64,
    at: DeviceDateTime,
    fm_serial: &str,
    unp: Option<&str>,
) -> (u16, Vec<u8>) {
    let id = op.id.to_string();
    let doc = doc_no.to_string();
    let at = at.to_string();
    let reason = [reason_digit(reason)];
    match dialect {
        Dialect::Classic => (
            OPEN_STORNO_CLASSIC,
            fields(
                dialect,
                &[
                    id.as_bytes(),
                    op.password.as_bytes(),
                    b"1",
                    &reason,
                    doc.as_bytes(),
                    at.as_bytes(),
                    fm_serial.as_bytes(),
                    unp.unwrap_or("").as_bytes(),
                ],
            ),
        ),
        Dialect::X => (
            OPEN_STORNO_X,
            fields(
                dialect,
                &[
                    id.as_bytes(),
                    op.password.as_bytes(),
                    b"1",
                    &reason,
                    doc.as_bytes(),
                    at.as_bytes(),
                    fm_serial.as_bytes(),
                    b"",
                    b"",
                    b"",
                    unp.unwrap_or("").as_bytes(),
                ],
            ),
        ),
    }
}

/// X modifier type digit and value.
fn x_modifier(m: Option<PriceModifier>) -> (u8, String) {
    match m {
        None => (b'0', "0.00".into()),
        Some(PriceModifier::SurchargePct(bp)) => (b'1', pct(bp)),
        Some(PriceModifier::DiscountPct(bp)) => (b'2', pct(bp)),
        Some(PriceModifier::SurchargeAmt(a)) => (b'3', a.to_string()),
        Some(PriceModifier::DiscountAmt(a)) => (b'4', a.to_string()),
    }
}

/// Classic modifier suffix: `,±pct` or `;±amount`.
fn classic_modifier(m: Option<PriceModifier>) -> String {
    match m {
        None => String::new(),
        Some(PriceModifier::SurchargePct(bp)) => format!(",{}", pct(bp)),
        Some(PriceModifier::DiscountPct(bp)) => format!(",-{}", pct(bp)),
        Some(PriceModifier::SurchargeAmt(a)) => format!(";{a}"),
        Some(PriceModifier::DiscountAmt(a)) => format!(";-{a}"),
    }
}

/// Data of `SALE`.
///
/// # Errors
///
/// [`Error::Invalid`] when the text cannot be encoded.
pub fn sale(dialect: Dialect, s: &Sale) -> Result<Vec<u8>, Error> {
    let name = text(&s.text)?;
    Ok(match dialect {
        Dialect::Classic => {
            let mut out = name;
            out.push(b'\t');
            out.push(vat_symbol(dialect, s.vat));
            out.extend_from_slice(format!("{}*{}", s.unit_price, s.qty).as_bytes());
            out.extend_from_slice(classic_modifier(s.modifier).as_bytes());
            out
        }
        Dialect::X => {
            let (t, v) = x_modifier(s.modifier);
            let dept = s.department.unwrap_or(0).to_string();
            fields(
                dialect,
                &[
                    &name,
                    &[vat_symbol(dialect, s.vat)],
                    s.unit_price.to_string().as_bytes(),
                    s.qty.to_string().as_bytes(),
                    &[t],
                    v.as_bytes(),
                    dept.as_bytes(),
                ],
            )
        }
    })
}

/// Data of `SUBTOTAL` with a modifier.
pub fn subtotal(dialect: Dialect, m: PriceModifier) -> Vec<u8> {
    match dialect {
        Dialect::Classic => format!("10{}", classic_modifier(Some(m))).into_bytes(),
        Dialect::X => {
            let (t, v) = x_modifier(Some(m));
            fields(dialect, &[b"1", b"0", &[t], v.as_bytes()])
        }
    }
}

/// Data of `PAYMENT`.
pub fn payment(dialect: Dialect, mode: u8, amount: Money) -> Vec<u8> {
    match dialect {
        Dialect::Classic => {
            let mut out = vec![b'\t', mode];
            out.extend_from_slice(amount.to_string().as_bytes());
            out
        }
        Dialect::X => fields(dialect, &[&[mode], amount.to_string().as_bytes(), b"1"]),
    }
}

/// Data of `TEXT`.
///
/// # Errors
///
/// [`Error::Invalid`] when the text cannot be encoded.
pub fn comment(dialect: Dialect, s: &str) -> Result<Vec<u8>, Error> {
    let t = text(s)?;
    Ok(match dialect {
        Dialect::Classic => t,
        Dialect::X => fields(dialect, &[&t]),
    })
}

/// Data of `REPORT`.
pub fn report(dialect: Dialect, z: bool) -> Vec<u8> {
    match (dialect, z) {
        (Dialect::Classic, true) => b"0".to_vec(),
        (Dialect::Classic, false) => b"2".to_vec(),
        (Dialect::X, true) => b"Z\t".to_vec(),
        (Dialect::X, false) => b"X\t".to_vec(),
    }
}

/// Data of `CASH` (positive in, negative out).
pub fn cash(dialect: Dialect, amount: Money) -> Vec<u8> {
    match dialect {
        Dialect::Classic => amount.to_string().into_bytes(),
        Dialect::X => {
            let t: &[u8] = if amount.0 < 0 { b"1" } else { b"0" };
            fields(dialect, &[t, Money(amount.0.abs()).to_string().as_bytes()])
        }
    }
}

/// Data of `TRANSACTION`.
pub fn transaction(dialect: Dialect) -> Vec<u8> {
    match dialect {
        Dialect::Classic => b"T".to_vec(),
        Dialect::X => Vec::new(),
    }
}

/// Data of `INFO`.
pub fn info(dialect: Dialect) -> Vec<u8> {
    match dialect {
        Dialect::Classic => b"1".to_vec(),
        Dialect::X => Vec::new(),
    }
}

/// Data of `DUPLICATE`.
pub fn duplicate(dialect: Dialect) -> Vec<u8> {
    match dialect {
        Dialect::Classic => b"1".to_vec(),
        Dialect::X => b"1\t".to_vec(),
    }
}

/// Reply data split into fields, with the X ErrorCode taken off the front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyFields {
    /// X ErrorCode (0 = ok, negative = failure); `None` for classic.
    pub error_code: Option<i64>,
    /// The remaining fields.
    pub fields: Vec<String>,
}

/// Splits reply data.
///
/// # Errors
///
/// [`Error::BadReply`] when an X reply does not start with a numeric ErrorCode.
pub fn split_reply(dialect: Dialect, data: &[u8]) -> Result<ReplyFields, Error> {
    let s = decode_cp1251(data);
    match dialect {
        Dialect::Classic => Ok(ReplyFields {
            error_code: None,
            fields: if s.is_empty() {
                Vec::new()
            } else {
                s.split(',').map(str::to_owned).collect()
            },
        }),
        Dialect::X => {
            let mut it = s.split('\t');
            let code = it
                .next()
                .and_then(|c| c.trim().parse::<i64>().ok())
                .ok_or_else(|| Error::BadReply(format!("no ErrorCode in {s:?}")))?;
            let mut fields: Vec<String> = it.map(str::to_owned).collect();
            if fields.last().is_some_and(String::is_empty) {
                fields.pop();
            }
            Ok(ReplyFields {
                error_code: Some(code),
                fields,
            })
        }
    }
}

impl ReplyFields {
    /// Field `i`, or a [`Error::BadReply`].
    ///
    /// # Errors
    ///
    /// [`Error::BadReply`] when missing.
    pub fn get(&self, i: usize) -> Result<&str, Error> {
        self.fields
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| Error::BadReply(format!("missing field {i} in {:?}", self.fields)))
    }

    /// Field `i` as an unsigned integer.
    ///
    /// # Errors
    ///
    /// [`Error::BadReply`] when missing or not a number.
    pub fn uint(&self, i: usize) -> Result<u64, Error> {
        let f = self.get(i)?;
        f.trim()
            .parse()
            .map_err(|_| Error::BadReply(format!("field {i} not a number: {f:?}")))
    }

    /// Field `i` as money: minor units (classic `TRANSACTION`) or a decimal.
    ///
    /// # Errors
    ///
    /// [`Error::BadReply`] when missing or malformed.
    pub fn money(&self, i: usize, decimal: bool) -> Result<Money, Error> {
        let f = self.get(i)?.trim();
        let v = if decimal {
            Money::parse_decimal(f)
        } else {
            f.parse().ok().map(Money)
        };
        v.ok_or_else(|| Error::BadReply(format!("field {i} not an amount: {f:?}")))
    }
}

/// Formats a quantity for tests and the simulator.
pub fn qty_str(q: Qty) -> String {
    q.to_string()
}
