//! The documents a fiscal printer prints: receipts, reversals, reports, cash moves.

use crate::datetime::DeviceDateTime;
use crate::money::{Money, Qty};
use serde::{Deserialize, Serialize};

/// A VAT group. The rate lives in the device; the driver maps the group to
/// the device's letter or digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum VatGroup {
    /// Group A (index 0).
    A,
    /// Group B (index 1).
    B,
    /// Group C (index 2).
    C,
    /// Group D (index 3).
    D,
    /// Group E (index 4).
    E,
    /// Group F (index 5).
    F,
    /// Group G (index 6).
    G,
    /// Group H (index 7).
    H,
}

impl VatGroup {
    /// All groups in order.
    pub const ALL: [VatGroup; 8] = [
        VatGroup::A,
        VatGroup::B,
        VatGroup::C,
        VatGroup::D,
        VatGroup::E,
        VatGroup::F,
        VatGroup::G,
        VatGroup::H,
    ];

    /// 0 for A up to 7 for H.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The group with this index.
    pub fn from_index(i: usize) -> Option<VatGroup> {
        Self::ALL.get(i).copied()
    }
}

/// How a payment is made. Each driver maps these to device codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PaymentType {
    /// Cash; the only type that may exceed the total (the device gives change).
    Cash,
    /// Payment card.
    Card,
    /// Cheque.
    Check,
    /// Voucher or coupon.
    Voucher,
    /// External voucher.
    ExtVoucher,
    /// Bank transfer.
    BankTransfer,
    /// Device-specific reserved payment type 1 or 2.
    Reserved(u8),
}

impl PaymentType {
    /// A stable index 0..=7 (used for totals).
    pub fn index(self) -> usize {
        match self {
            PaymentType::Cash => 0,
            PaymentType::Card => 1,
            PaymentType::Check => 2,
            PaymentType::Voucher => 3,
            PaymentType::ExtVoucher => 4,
            PaymentType::BankTransfer => 5,
            PaymentType::Reserved(n) => 5 + usize::from(n.clamp(1, 2)),
        }
    }

    /// The type with this index.
    pub fn from_index(i: usize) -> Option<PaymentType> {
        Some(match i {
            0 => PaymentType::Cash,
            1 => PaymentType::Card,
            2 => PaymentType::Check,
            3 => PaymentType::Voucher,
            4 => PaymentType::ExtVoucher,
            5 => PaymentType::BankTransfer,
            6 => PaymentType::Reserved(1),
            7 => PaymentType::Reserved(2),
            _ => return None,
        })
    }
}

/// A discount or surcharge on a line or on the subtotal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PriceModifier {
    /// Discount in basis points (1000 = 10%).
    DiscountPct(u16),
    /// Discount of a fixed amount.
    DiscountAmt(Money),
    /// Surcharge in basis points.
    SurchargePct(u16),
    /// Surcharge of a fixed amount.
    SurchargeAmt(Money),
}

/// One sale line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sale {
    /// Article name as printed.
    pub text: String,
    /// Price of one unit.
    pub unit_price: Money,
    /// Quantity in thousandths.
    pub qty: Qty,
    /// VAT group.
    pub vat: VatGroup,
    /// Department number, if the device uses departments.
    pub department: Option<u8>,
    /// Discount or surcharge on this line.
    pub modifier: Option<PriceModifier>,
}

/// One line of a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Item {
    /// A sale.
    Sale(Sale),
    /// A free-text comment line.
    Comment(String),
    /// A discount or surcharge on the subtotal so far.
    Subtotal(PriceModifier),
}

/// A payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Payment {
    /// How.
    pub kind: PaymentType,
    /// How much.
    pub amount: Money,
}

/// The operator (cashier) who issues the document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operator {
    /// Operator number on the device, 1..=30.
    pub id: u8,
    /// Operator password (digits).
    pub password: String,
}

impl Default for Operator {
    /// Operator 1 with password `0000` (the factory default on Datecs devices).
    fn default() -> Self {
        Self {
            id: 1,
            password: "0000".to_owned(),
        }
    }
}

/// A fiscal receipt.
///
/// # Examples
///
/// ```
/// use counterfoil_fiscal::{Money, PaymentType, Qty, Receipt, VatGroup};
///
/// let r = Receipt::new()
///     .sale("Espresso", Money(250), Qty::units(2), VatGroup::B)
///     .comment("Thank you")
///     .pay(PaymentType::Card, Money(500));
/// assert_eq!(r.items.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Receipt {
    /// Who issues it.
    pub operator: Operator,
    /// Unique sale number printed on the receipt (BG "UNP"), if the device
    /// supports one: `AB123456-0001-0000001`.
    pub sale_number: Option<String>,
    /// Lines in print order.
    pub items: Vec<Item>,
    /// Payments in order; they must cover the total.
    pub payments: Vec<Payment>,
}

impl Receipt {
    /// An empty receipt for the default operator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the operator.
    pub fn operator(mut self, operator: Operator) -> Self {
        self.operator = operator;
        self
    }

    /// Sets the unique sale number.
    pub fn sale_number(mut self, unp: impl Into<String>) -> Self {
        self.sale_number = Some(unp.into());
        self
    }

    /// Adds a sale line without modifier.
    pub fn sale(self, text: impl Into<String>, unit_price: Money, qty: Qty, vat: VatGroup) -> Self {
        self.item(Item::Sale(Sale {
            text: text.into(),
            unit_price,
            qty,
            vat,
            department: None,
            modifier: None,
        }))
    }

    /// Adds any line.
    pub fn item(mut self, item: Item) -> Self {
        self.items.push(item);
        self
    }

    /// Adds a comment line.
    pub fn comment(self, text: impl Into<String>) -> Self {
        self.item(Item::Comment(text.into()))
    }

    /// Adds a payment.
    pub fn pay(mut self, kind: PaymentType, amount: Money) -> Self {
        self.payments.push(Payment { kind, amount });
        self
    }
}

/// Why a receipt is reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReversalReason {
    /// The operator made a mistake.
    OperatorError,
    /// Goods returned or service refunded.
    Refund,
    /// The tax base was reduced.
    TaxBaseReduction,
}

/// The fiscal document a reversal refers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OriginalDocument {
    /// Its document number.
    pub doc_no: u64,
    /// When it was printed, as the device printed it.
    pub at: DeviceDateTime,
    /// Serial number of the fiscal memory that holds it.
    pub fm_serial: String,
}

/// A reversal (storno) receipt referring to an earlier receipt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reversal {
    /// The reversed document.
    pub original: OriginalDocument,
    /// Why.
    pub reason: ReversalReason,
    /// The lines and payments being returned, all amounts positive.
    pub receipt: Receipt,
}

/// Which daily report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReportKind {
    /// X report: totals so far, nothing reset.
    X,
    /// Z report: closes the fiscal day and stores its totals in fiscal memory.
    Z,
}

/// A job for a fiscal printer, as submitted to its device actor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Job {
    /// Print a fiscal receipt.
    Receipt(Receipt),
    /// Print a reversal receipt.
    Reversal(Reversal),
    /// Print an X or Z report.
    Report(ReportKind),
    /// Cash into the drawer (positive) or out of it (negative).
    Cash(Money),
    /// Print a duplicate of the last document.
    Duplicate,
}

impl Job {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Receipt(_) => "receipt",
            Job::Reversal(_) => "reversal",
            Job::Report(ReportKind::X) => "x_report",
            Job::Report(ReportKind::Z) => "z_report",
            Job::Cash(_) => "cash",
            Job::Duplicate => "duplicate",
        }
    }
}
