//! The simulated device: state machine, counters, fiscal memory and
//! electronic journal. Pure: no I/O; the server feeds it commands.

use crate::datetime::DeviceDateTime;
use crate::isl::Dialect;
use crate::isl::commands as c;
use crate::isl::status::{Flag, bit_of, bit_of_code};
use crate::message::codes;
use crate::money::{Money, Qty};
use crate::receipt::{PaymentType, PriceModifier, Sale};
use crate::text::decode_cp1251;
use crate::validate::{Totals, apply_subtotal, line_gross, modifier_delta};
use serde::{Deserialize, Serialize};

/// Totals over documents, per fiscal day or over the fiscal memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceTotals {
    /// Fiscal receipts closed.
    pub receipts: u64,
    /// Their amounts.
    pub receipts_amount: i64,
    /// Storno receipts closed.
    pub reversals: u64,
    /// Their amounts.
    pub reversals_amount: i64,
    /// Sales per VAT group (receipts minus reversals).
    pub by_vat: [i64; 8],
    /// Takings per payment type (change deducted from cash).
    pub by_payment: [i64; 8],
    /// Cash in.
    pub cash_in: i64,
    /// Cash out.
    pub cash_out: i64,
}

impl DeviceTotals {
    fn add(&mut self, o: &DeviceTotals) {
        self.receipts += o.receipts;
        self.receipts_amount += o.receipts_amount;
        self.reversals += o.reversals;
        self.reversals_amount += o.reversals_amount;
        for i in 0..8 {
            self.by_vat[i] += o.by_vat[i];
            self.by_payment[i] += o.by_payment[i];
        }
        self.cash_in += o.cash_in;
        self.cash_out += o.cash_out;
    }
}

/// Kind of an electronic-journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EjKind {
    /// Fiscal receipt.
    Receipt,
    /// Storno receipt.
    Reversal,
    /// A receipt cancelled before payment (not numbered).
    Cancelled,
    /// X report (not numbered).
    XReport,
    /// Z report.
    ZReport,
    /// Cash in.
    CashIn,
    /// Cash out.
    CashOut,
    /// Duplicate of the last document (not numbered).
    Duplicate,
}

/// One entry of the electronic journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EjEntry {
    /// Document number (0 for unnumbered entries).
    pub doc_no: u64,
    /// Kind.
    pub kind: EjKind,
    /// Unique sale number, for receipts that carried one.
    pub unp: Option<String>,
    /// Amount.
    pub amount: i64,
    /// Device time, ms since the epoch.
    pub at: i64,
    /// Printed lines.
    pub lines: Vec<String>,
}

/// An open fiscal or storno receipt.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OpenDoc {
    /// Storno receipt.
    pub storno: bool,
    /// Unique sale number.
    pub unp: Option<String>,
    /// Sale lines.
    pub items: u32,
    /// Amount so far.
    pub amount: i64,
    /// Amount per VAT group.
    pub by_vat: [i64; 8],
    /// Payments so far (payment index, amount).
    pub payments: Vec<(usize, i64)>,
    /// Sum of payments.
    pub tender: i64,
    /// Printed lines.
    pub lines: Vec<String>,
}

/// Summary of the last closed receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LastReceipt {
    /// Storno receipt.
    pub storno: bool,
    /// Sale lines.
    pub items: u32,
    /// Amount.
    pub amount: i64,
    /// Sum of payments.
    pub tender: i64,
}

/// The whole persistent state of a simulated device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Dialect spoken.
    pub dialect: Dialect,
    /// Model name.
    pub model: String,
    /// Device serial number.
    pub serial: String,
    /// Fiscal memory serial number.
    pub fm_serial: String,
    /// Last document number.
    pub last_doc_no: u64,
    /// Last Z report number.
    pub z_no: u32,
    /// Time of the last Z report (or of the first sale of the day), ms.
    pub day_started_at: i64,
    /// The open receipt.
    pub open: Option<OpenDoc>,
    /// Last closed receipt.
    pub last_receipt: Option<LastReceipt>,
    /// Totals of the current fiscal day.
    pub day: DeviceTotals,
    /// Totals stored in fiscal memory by Z reports.
    pub fiscal_memory: DeviceTotals,
    /// The electronic journal.
    pub ej: Vec<EjEntry>,
    /// Paper out.
    pub paper_out: bool,
    /// Paper low.
    pub paper_low: bool,
    /// Cover open.
    pub cover_open: bool,
    /// Free fiscal memory records (Z reports left).
    pub fm_records_left: u32,
    /// A Z report is required (forced, or 24 h since the day started).
    pub z_required: bool,
    /// Cash in the drawer.
    pub drawer: i64,
}

impl DeviceState {
    /// A fresh, fiscalized device.
    pub fn new(dialect: Dialect, serial: &str, now: i64) -> Self {
        Self {
            dialect,
            model: match dialect {
                Dialect::Classic => "DP-25 (simulated)".into(),
                Dialect::X => "FP-700X (simulated)".into(),
            },
            serial: serial.to_owned(),
            fm_serial: format!("{serial}FM"),
            last_doc_no: 0,
            z_no: 0,
            day_started_at: now,
            open: None,
            last_receipt: None,
            day: DeviceTotals::default(),
            fiscal_memory: DeviceTotals::default(),
            ej: Vec::new(),
            paper_out: false,
            paper_low: false,
            cover_open: false,
            fm_records_left: 1800,
            z_required: false,
            drawer: 0,
        }
    }

    /// Totals of every closed document: fiscal memory plus the current day.
    pub fn all_totals(&self) -> DeviceTotals {
        let mut t = self.fiscal_memory;
        t.add(&self.day);
        t
    }

    /// Status bytes computed from the state plus a command error.
    pub fn status_bytes(&self, err: Option<CmdErr>) -> Vec<u8> {
        let d = self.dialect;
        let mut raw = vec![0x80u8; d.status_len()];
        let mut set = |p: Option<(usize, u8)>| {
            if let Some((byte, bit)) = p {
                raw[byte] |= 1 << bit;
            }
        };
        if self.paper_out {
            set(bit_of(d, Flag::PaperOut));
        }
        if self.paper_low {
            set(bit_of(d, Flag::PaperLow));
        }
        if self.cover_open {
            set(bit_of(d, Flag::CoverOpen));
        }
        if let Some(o) = &self.open {
            set(bit_of(d, Flag::ReceiptOpen));
            if o.storno && d == Dialect::Classic {
                set(bit_of(d, Flag::StornoOpen));
            }
        }
        if self.fm_records_left == 0 {
            set(bit_of(d, Flag::FmFull));
        } else if self.fm_records_left < 50 {
            set(bit_of(d, Flag::FmNearFull));
        }
        set(bit_of(d, Flag::Fiscal));
        if d == Dialect::Classic
            && let Some(e) = err
        {
            let code = match e {
                CmdErr::Syntax | CmdErr::TaxGroup => Some(codes::E401_SYNTAX),
                CmdErr::BadCommand => Some(codes::E402_BAD_COMMAND),
                CmdErr::NotAllowed
                | CmdErr::ReceiptOpen
                | CmdErr::NoReceipt
                | CmdErr::Payment
                | CmdErr::ZRequired => Some(codes::E404_NOT_ALLOWED),
                CmdErr::PaperOut | CmdErr::CoverOpen | CmdErr::FmFull => None,
            };
            if let Some(code) = code {
                set(bit_of_code(d, code));
                raw[0] |= 1 << 5; // general error
            }
        }
        raw
    }
}

/// Why the device refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdErr {
    /// Malformed data.
    Syntax,
    /// Unknown command.
    BadCommand,
    /// Not allowed in this state.
    NotAllowed,
    /// A receipt is already open.
    ReceiptOpen,
    /// No receipt is open.
    NoReceipt,
    /// Payment not possible.
    Payment,
    /// Unknown tax group.
    TaxGroup,
    /// 24 h since the day started: Z report required.
    ZRequired,
    /// No paper.
    PaperOut,
    /// Cover open.
    CoverOpen,
    /// Fiscal memory full.
    FmFull,
}

impl CmdErr {
    /// The X ErrorCode of this refusal.
    pub fn x_code(self) -> i64 {
        match self {
            CmdErr::Syntax => -111_003,
            CmdErr::BadCommand => -100_001,
            CmdErr::NotAllowed => -111_008,
            CmdErr::ReceiptOpen => -111_016,
            CmdErr::NoReceipt => -111_017,
            CmdErr::Payment => -111_018,
            CmdErr::TaxGroup => -111_019,
            CmdErr::ZRequired => -111_024,
            CmdErr::PaperOut => -112_006,
            CmdErr::CoverOpen => -112_007,
            CmdErr::FmFull => -113_001,
        }
    }
}

/// What executing a command did, for fault hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// Reply data.
    pub data: Vec<u8>,
    /// Status bytes.
    pub status: Vec<u8>,
    /// The command changed persistent state.
    pub changed: bool,
}

fn split(d: Dialect, data: &[u8]) -> Vec<String> {
    let s = decode_cp1251(data);
    match d {
        Dialect::Classic => {
            if s.is_empty() {
                Vec::new()
            } else {
                s.split(',').map(str::to_owned).collect()
            }
        }
        Dialect::X => {
            let mut v: Vec<String> = s.split('\t').map(str::to_owned).collect();
            if v.last().is_some_and(String::is_empty) {
                v.pop();
            }
            v
        }
    }
}

fn reply(d: Dialect, parts: &[String]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    match d {
        Dialect::Classic => {
            out.extend_from_slice(parts.join(",").as_bytes());
        }
        Dialect::X => {
            out.extend_from_slice(b"0\t");
            for p in parts {
                out.extend_from_slice(p.as_bytes());
                out.push(b'\t');
            }
        }
    }
    out
}

fn parse_modifier(d: Dialect, kind: &str, value: &str) -> Result<Option<PriceModifier>, CmdErr> {
    let pct = |v: &str| -> Result<u16, CmdErr> {
        crate::money::parse_fixed(v, 2)
            .and_then(|x| u16::try_from(x).ok())
            .ok_or(CmdErr::Syntax)
    };
    let amt = |v: &str| Money::parse_decimal(v).ok_or(CmdErr::Syntax);
    match d {
        Dialect::X => Ok(match kind {
            "0" | "" => None,
            "1" => Some(PriceModifier::SurchargePct(pct(value)?)),
            "2" => Some(PriceModifier::DiscountPct(pct(value)?)),
            "3" => Some(PriceModifier::SurchargeAmt(amt(value)?)),
            "4" => Some(PriceModifier::DiscountAmt(amt(value)?)),
            _ => return Err(CmdErr::Syntax),
        }),
        Dialect::Classic => {
            // kind is "," or ";", value is signed
            let (neg, v) = match value.strip_prefix('-') {
                Some(v) => (true, v),
                None => (false, value),
            };
            Ok(match (kind, neg) {
                (",", false) => Some(PriceModifier::SurchargePct(pct(v)?)),
                (",", true) => Some(PriceModifier::DiscountPct(pct(v)?)),
                (";", false) => Some(PriceModifier::SurchargeAmt(amt(v)?)),
                (";", true) => Some(PriceModifier::DiscountAmt(amt(v)?)),
                _ => None,
            })
        }
    }
}

fn parse_sale(d: Dialect, data: &[u8]) -> Result<Sale, CmdErr> {
    match d {
        Dialect::Classic => {
            let tab = data
                .iter()
                .position(|&b| b == b'\t')
                .ok_or(CmdErr::Syntax)?;
            let text = decode_cp1251(&data[..tab]);
            let rest = &data[tab + 1..];
            let (&vat_b, rest) = rest.split_first().ok_or(CmdErr::Syntax)?;
            let vat = c::parse_vat(d, vat_b).ok_or(CmdErr::TaxGroup)?;
            let rest = decode_cp1251(rest);
            let (body, modifier) = match rest.find([',', ';']) {
                Some(i) => (&rest[..i], parse_modifier(d, &rest[i..=i], &rest[i + 1..])?),
                None => (rest.as_str(), None),
            };
            let (price, qty) = match body.split_once('*') {
                Some((p, q)) => (p, Qty::parse_decimal(q).ok_or(CmdErr::Syntax)?),
                None => (body, Qty::ONE),
            };
            Ok(Sale {
                text,
                unit_price: Money::parse_decimal(price).ok_or(CmdErr::Syntax)?,
                qty,
                vat,
                department: None,
                modifier,
            })
        }
        Dialect::X => {
            let f = split(d, data);
            if f.len() < 7 {
                return Err(CmdErr::Syntax);
            }
            let vat = f[1]
                .bytes()
                .next()
                .and_then(|b| c::parse_vat(d, b))
                .ok_or(CmdErr::TaxGroup)?;
            let dept: u8 = f[6].parse().map_err(|_| CmdErr::Syntax)?;
            Ok(Sale {
                text: f[0].clone(),
                unit_price: Money::parse_decimal(&f[2]).ok_or(CmdErr::Syntax)?,
                qty: Qty::parse_decimal(&f[3]).ok_or(CmdErr::Syntax)?,
                vat,
                department: (dept != 0).then_some(dept),
                modifier: parse_modifier(d, &f[4], &f[5])?,
            })
        }
    }
}

fn payment_index(d: Dialect, mode: u8) -> Option<usize> {
    crate::isl::PaymentCodes::default_for(d)
        .0
        .iter()
        .position(|&m| m == mode)
}

/// Commands that print and so need paper and a closed cover.
pub(crate) fn prints(cmd: u16) -> bool {
    matches!(
        cmd,
        c::OPEN
            | c::OPEN_STORNO_CLASSIC
            | c::OPEN_STORNO_X
            | c::SALE
            | c::SUBTOTAL
            | c::PAYMENT
            | c::TEXT
            | c::CLOSE
            | c::CANCEL
            | c::REPORT
            | c::CASH
            | c::DUPLICATE
    )
}

impl DeviceState {
    fn z_blocked(&self, now: i64, z_after: i64) -> bool {
        self.z_required || now - self.day_started_at > z_after
    }

    /// Executes one command at time `now`; `z_after` is the 24-hour block in ms.
    pub fn execute(&mut self, cmd: u16, data: &[u8], now: i64, z_after: i64) -> Executed {
        let d = self.dialect;
        match self.run(cmd, data, now, z_after) {
            Ok((parts, changed)) => Executed {
                data: reply(d, &parts),
                status: self.status_bytes(None),
                changed,
            },
            Err(e) => Executed {
                data: match d {
                    Dialect::Classic if cmd == c::PAYMENT => b"F".to_vec(),
                    Dialect::Classic => Vec::new(),
                    Dialect::X => format!("{}\t", e.x_code()).into_bytes(),
                },
                status: self.status_bytes(Some(e)),
                changed: false,
            },
        }
    }

    pub(crate) fn run(
        &mut self,
        cmd: u16,
        data: &[u8],
        now: i64,
        z_after: i64,
    ) -> Result<(Vec<String>, bool), CmdErr> {
        let d = self.dialect;
        if prints(cmd) {
            if self.cover_open {
                return Err(CmdErr::CoverOpen);
            }
            if self.paper_out {
                return Err(CmdErr::PaperOut);
            }
        }
        let f = split(d, data);
        match cmd {
            c::OPEN | c::OPEN_STORNO_CLASSIC | c::OPEN_STORNO_X => {
                if self.open.is_some() {
                    return Err(CmdErr::ReceiptOpen);
                }
                if self.fm_records_left == 0 {
                    return Err(CmdErr::FmFull);
                }
                if self.z_blocked(now, z_after) {
                    return Err(CmdErr::ZRequired);
                }
                let op: u8 = f
                    .first()
                    .and_then(|s| s.parse().ok())
                    .ok_or(CmdErr::Syntax)?;
                if !(1..=30).contains(&op) || f.get(1).is_none_or(|p| p.is_empty()) {
                    return Err(CmdErr::Syntax);
                }
                let storno = cmd != c::OPEN;
                if storno {
                    let idx = match d {
                        Dialect::Classic => (3, 4, 5, 6, 7),
                        Dialect::X => (3, 4, 5, 6, 10),
                    };
                    let doc: u64 = f
                        .get(idx.1)
                        .and_then(|s| s.parse().ok())
                        .ok_or(CmdErr::Syntax)?;
                    if doc == 0 || doc > self.last_doc_no {
                        return Err(CmdErr::Syntax);
                    }
                    f.get(idx.2)
                        .and_then(|s| DeviceDateTime::parse_wire(s))
                        .ok_or(CmdErr::Syntax)?;
                    if f.get(idx.3).is_none_or(|s| s.is_empty()) {
                        return Err(CmdErr::Syntax);
                    }
                }
                let unp = match (d, storno) {
                    (Dialect::Classic, false) => f.get(3),
                    (Dialect::X, false) => f.get(2),
                    (Dialect::Classic, true) => f.get(7),
                    (Dialect::X, true) => f.get(10),
                }
                .filter(|s| !s.is_empty())
                .cloned();
                self.open = Some(OpenDoc {
                    storno,
                    lines: vec![if storno {
                        "STORNO".into()
                    } else {
                        "FISCAL RECEIPT".into()
                    }],
                    unp,
                    ..OpenDoc::default()
                });
                let n = (self.last_doc_no + 1).to_string();
                Ok((vec![n.clone(), n], true))
            }
            c::SALE => {
                let o = self.open.as_mut().ok_or(CmdErr::NoReceipt)?;
                if o.tender > 0 {
                    return Err(CmdErr::NotAllowed);
                }
                let s = parse_sale(d, data)?;
                if s.qty.0 <= 0 || s.unit_price.0 < 0 {
                    return Err(CmdErr::Syntax);
                }
                let gross = line_gross(&s).ok_or(CmdErr::Syntax)?;
                let net = match s.modifier {
                    Some(m) => gross + modifier_delta(gross, m).ok_or(CmdErr::Syntax)?,
                    None => gross,
                };
                if net < 0 {
                    return Err(CmdErr::Syntax);
                }
                o.items += 1;
                o.amount += net;
                o.by_vat[s.vat.index()] += net;
                o.lines.push(format!(
                    "{} {}x{} {}",
                    s.text,
                    s.qty,
                    s.unit_price,
                    Money(net)
                ));
                Ok((Vec::new(), true))
            }
            c::TEXT => {
                let o = self.open.as_mut().ok_or(CmdErr::NoReceipt)?;
                o.lines.push(f.first().cloned().unwrap_or_default());
                Ok((Vec::new(), true))
            }
            c::SUBTOTAL => {
                let o = self.open.as_mut().ok_or(CmdErr::NoReceipt)?;
                if o.tender > 0 {
                    return Err(CmdErr::NotAllowed);
                }
                let m = match d {
                    Dialect::Classic => {
                        let s = decode_cp1251(data);
                        match s.find([',', ';']) {
                            Some(i) => parse_modifier(d, &s[i..=i], &s[i + 1..])?,
                            None => None,
                        }
                    }
                    Dialect::X => parse_modifier(
                        d,
                        f.get(2).map_or("0", String::as_str),
                        f.get(3).map_or("0", String::as_str),
                    )?,
                };
                if let Some(m) = m {
                    if o.amount <= 0 {
                        return Err(CmdErr::NotAllowed);
                    }
                    let mut t = Totals {
                        total: Money(o.amount),
                        by_vat: o.by_vat.map(Money),
                        ..Totals::default()
                    };
                    apply_subtotal(&mut t, m)
                        .flatten()
                        .ok_or(CmdErr::NotAllowed)?;
                    o.amount = t.total.0;
                    o.by_vat = t.by_vat.map(|m| m.0);
                    o.lines.push(format!("SUBTOTAL {}", t.total));
                }
                Ok((vec![Money(o.amount).to_string()], true))
            }
            c::PAYMENT => {
                let o = self.open.as_mut().ok_or(CmdErr::NoReceipt)?;
                if o.items == 0 || o.tender >= o.amount {
                    return Err(CmdErr::Payment);
                }
                let (mode, amount) = match d {
                    Dialect::Classic => {
                        let s = decode_cp1251(data);
                        let s = s.strip_prefix('\t').ok_or(CmdErr::Syntax)?;
                        let mut ch = s.chars();
                        let m = ch.next().ok_or(CmdErr::Syntax)?;
                        (
                            m as u8,
                            Money::parse_decimal(ch.as_str()).ok_or(CmdErr::Syntax)?,
                        )
                    }
                    Dialect::X => (
                        f.first()
                            .and_then(|s| s.bytes().next())
                            .ok_or(CmdErr::Syntax)?,
                        f.get(1)
                            .and_then(|s| Money::parse_decimal(s))
                            .ok_or(CmdErr::Syntax)?,
                    ),
                };
                let idx = payment_index(d, mode).ok_or(CmdErr::Payment)?;
                if amount.0 <= 0 {
                    return Err(CmdErr::Syntax);
                }
                o.tender += amount.0;
                o.payments.push((idx, amount.0));
                o.lines.push(format!(
                    "{:?} {amount}",
                    PaymentType::from_index(idx).unwrap_or(PaymentType::Cash)
                ));
                let (code, rest) = if o.tender >= o.amount {
                    ("R", o.tender - o.amount)
                } else {
                    ("D", o.amount - o.tender)
                };
                Ok((
                    match d {
                        Dialect::Classic => vec![format!("{code}{}", Money(rest))],
                        Dialect::X => vec![code.into(), Money(rest).to_string()],
                    },
                    true,
                ))
            }
            c::CLOSE => {
                let o = self.open.as_ref().ok_or(CmdErr::NoReceipt)?;
                if o.tender < o.amount || o.items == 0 {
                    return Err(CmdErr::Payment);
                }
                let Some(o) = self.open.take() else {
                    return Err(CmdErr::NoReceipt);
                };
                self.last_doc_no += 1;
                let sign = if o.storno { -1 } else { 1 };
                if o.storno {
                    self.day.reversals += 1;
                    self.day.reversals_amount += o.amount;
                } else {
                    self.day.receipts += 1;
                    self.day.receipts_amount += o.amount;
                }
                for i in 0..8 {
                    self.day.by_vat[i] += sign * o.by_vat[i];
                }
                let change = o.tender - o.amount;
                for (idx, a) in &o.payments {
                    self.day.by_payment[*idx] += sign * a;
                }
                self.day.by_payment[0] -= sign * change;
                self.drawer += sign
                    * (o.payments
                        .iter()
                        .filter(|p| p.0 == 0)
                        .map(|p| p.1)
                        .sum::<i64>()
                        - change);
                self.last_receipt = Some(LastReceipt {
                    storno: o.storno,
                    items: o.items,
                    amount: o.amount,
                    tender: o.tender,
                });
                self.ej.push(EjEntry {
                    doc_no: self.last_doc_no,
                    kind: if o.storno {
                        EjKind::Reversal
                    } else {
                        EjKind::Receipt
                    },
                    unp: o.unp,
                    amount: o.amount,
                    at: now,
                    lines: o.lines,
                });
                let n = self.last_doc_no.to_string();
                Ok((vec![n.clone(), n], true))
            }
            c::CANCEL => {
                let o = self.open.as_ref().ok_or(CmdErr::NoReceipt)?;
                if o.tender > 0 {
                    return Err(CmdErr::NotAllowed);
                }
                let Some(o) = self.open.take() else {
                    return Err(CmdErr::NoReceipt);
                };
                self.ej.push(EjEntry {
                    doc_no: 0,
                    kind: EjKind::Cancelled,
                    unp: o.unp,
                    amount: o.amount,
                    at: now,
                    lines: o.lines,
                });
                Ok((Vec::new(), true))
            }
            c::DATETIME => Ok((
                vec![DeviceDateTime::from_unix_millis(now).to_string()],
                false,
            )),
            c::LAST_FM_RECORD => Ok((vec![self.z_no.to_string()], false)),
            c::LAST_DOC => Ok((vec![self.last_doc_no.to_string()], false)),
            c::STATUS => Ok((Vec::new(), false)),
            c::TRANSACTION => {
                let (open, storno, items, amount, tender) = match (&self.open, &self.last_receipt) {
                    (Some(o), _) => (
                        if o.storno { 2 } else { 1 },
                        o.storno,
                        o.items,
                        o.amount,
                        o.tender,
                    ),
                    (None, Some(l)) => (0, l.storno, l.items, l.amount, l.tender),
                    (None, None) => (0, false, 0, 0, 0),
                };
                let _ = storno;
                Ok((
                    match d {
                        Dialect::Classic => vec![
                            u8::from(open != 0).to_string(),
                            items.to_string(),
                            amount.to_string(),
                            tender.to_string(),
                        ],
                        Dialect::X => vec![
                            open.to_string(),
                            (self.last_doc_no + u64::from(open != 0)).to_string(),
                            items.to_string(),
                            Money(amount).to_string(),
                            Money(tender).to_string(),
                        ],
                    },
                    false,
                ))
            }
            c::INFO => Ok((
                match d {
                    Dialect::Classic => vec![
                        self.model.clone(),
                        "1.00 01Jan26".into(),
                        "ABCD".into(),
                        "00000000".into(),
                        self.serial.clone(),
                        self.fm_serial.clone(),
                    ],
                    Dialect::X => vec![
                        self.model.clone(),
                        "1.00".into(),
                        "01Jan26".into(),
                        "0000".into(),
                        "ABCD".into(),
                        "00000000".into(),
                        self.serial.clone(),
                        self.fm_serial.clone(),
                    ],
                },
                false,
            )),
            c::REPORT => {
                let z = match (d, f.first().map(String::as_str)) {
                    (Dialect::Classic, Some("0")) | (Dialect::X, Some("Z")) => true,
                    (Dialect::Classic, Some("2")) | (Dialect::X, Some("X")) => false,
                    _ => return Err(CmdErr::Syntax),
                };
                if self.open.is_some() {
                    return Err(CmdErr::NotAllowed);
                }
                let total = self.day.receipts_amount - self.day.reversals_amount;
                if !z {
                    self.ej.push(EjEntry {
                        doc_no: 0,
                        kind: EjKind::XReport,
                        unp: None,
                        amount: total,
                        at: now,
                        lines: vec!["X REPORT".into()],
                    });
                    return Ok((
                        vec![(self.z_no + 1).to_string(), Money(total).to_string()],
                        true,
                    ));
                }
                if self.fm_records_left == 0 {
                    return Err(CmdErr::FmFull);
                }
                self.fm_records_left -= 1;
                self.z_no += 1;
                self.last_doc_no += 1;
                let day = std::mem::take(&mut self.day);
                self.fiscal_memory.add(&day);
                self.day_started_at = now;
                self.z_required = false;
                self.ej.push(EjEntry {
                    doc_no: self.last_doc_no,
                    kind: EjKind::ZReport,
                    unp: None,
                    amount: total,
                    at: now,
                    lines: vec![format!("Z REPORT {}", self.z_no)],
                });
                Ok((vec![self.z_no.to_string(), Money(total).to_string()], true))
            }
            c::CASH => {
                if self.open.is_some() {
                    return Err(CmdErr::NotAllowed);
                }
                if self.z_blocked(now, z_after) {
                    return Err(CmdErr::ZRequired);
                }
                let amount = match d {
                    Dialect::Classic => f.first().and_then(|s| Money::parse_decimal(s)),
                    Dialect::X => {
                        let a = f.get(1).and_then(|s| Money::parse_decimal(s));
                        match f.first().map(String::as_str) {
                            Some("0") => a,
                            Some("1") => a.map(|m| Money(-m.0)),
                            _ => None,
                        }
                    }
                }
                .ok_or(CmdErr::Syntax)?;
                if amount.0 == 0 || self.drawer + amount.0 < 0 {
                    return Err(CmdErr::NotAllowed);
                }
                self.drawer += amount.0;
                self.last_doc_no += 1;
                if amount.0 > 0 {
                    self.day.cash_in += amount.0;
                } else {
                    self.day.cash_out -= amount.0;
                }
                self.ej.push(EjEntry {
                    doc_no: self.last_doc_no,
                    kind: if amount.0 > 0 {
                        EjKind::CashIn
                    } else {
                        EjKind::CashOut
                    },
                    unp: None,
                    amount: amount.0,
                    at: now,
                    lines: vec![format!("CASH {amount}")],
                });
                let mut parts = vec![
                    Money(self.drawer).to_string(),
                    Money(self.day.cash_in).to_string(),
                    Money(self.day.cash_out).to_string(),
                ];
                if d == Dialect::Classic {
                    parts.insert(0, "P".into());
                }
                Ok((parts, true))
            }
            c::DUPLICATE => {
                if self.open.is_some() || self.last_receipt.is_none() {
                    return Err(CmdErr::NotAllowed);
                }
                self.ej.push(EjEntry {
                    doc_no: 0,
                    kind: EjKind::Duplicate,
                    unp: None,
                    amount: 0,
                    at: now,
                    lines: vec!["DUPLICATE".into()],
                });
                Ok((vec!["1".into()], true))
            }
            _ => Err(CmdErr::BadCommand),
        }
    }
}
