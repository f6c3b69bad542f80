//! The payment domain: payments, refunds, receipt lines and their statuses.
//! Money is always integer minor units with an ISO 4217 currency code.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `true` for ids of restaurants and printers: 1-64 of `[A-Za-z0-9_-]`.
pub(crate) fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A VAT group as programmed in the fiscal printer (A..H).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) enum VatGroup {
    A,
    B,
    C,
    D,
    E,
    F,
    G,
    H,
}

/// How the customer pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PaymentMethod {
    /// A card, charged through the payment provider.
    Card,
}

/// One line of the fiscal receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiptLine {
    /// Text printed on the receipt (1-36 characters).
    #[schema(example = "Margherita")]
    pub(crate) text: String,
    /// Quantity in thousandths (1000 = one piece).
    #[schema(example = 1000)]
    pub(crate) quantity: i64,
    /// Unit price in minor units.
    #[schema(example = 1250)]
    pub(crate) unit_price: i64,
    /// VAT group.
    pub(crate) vat: VatGroup,
}

impl ReceiptLine {
    /// The line total in minor units, rounded half up; `None` on overflow.
    pub(crate) fn total(&self) -> Option<i64> {
        let t = i128::from(self.unit_price) * i128::from(self.quantity);
        i64::try_from((t + 500) / 1000).ok()
    }
}

/// Where a payment is in its saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PaymentStatus {
    /// Accepted, not yet at the provider.
    Pending,
    /// Authorized at the provider.
    Authorized,
    /// Captured: the money moved (the saga's pivot).
    Captured,
    /// Waiting for the fiscal printer.
    Fiscalizing,
    /// Printed as a fiscal receipt: done.
    Fiscalized,
    /// Declined by the provider: nothing was charged.
    Declined,
    /// Authorized then released (voided): nothing was charged.
    Voided,
    /// Needs an operator (an in-doubt outcome nobody could resolve).
    Parked,
}

impl PaymentStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::Fiscalizing => "fiscalizing",
            Self::Fiscalized => "fiscalized",
            Self::Declined => "declined",
            Self::Voided => "voided",
            Self::Parked => "parked",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// No more work will happen on its own.
    pub(crate) fn is_final(self) -> bool {
        matches!(
            self,
            Self::Fiscalized | Self::Declined | Self::Voided | Self::Parked
        )
    }

    pub(crate) const ALL: [Self; 8] = [
        Self::Pending,
        Self::Authorized,
        Self::Captured,
        Self::Fiscalizing,
        Self::Fiscalized,
        Self::Declined,
        Self::Voided,
        Self::Parked,
    ];
}

/// Where a refund is in its saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RefundStatus {
    /// Accepted, not yet at the provider.
    Pending,
    /// Refunded at the provider (the pivot); reversal receipt pending.
    Refunded,
    /// Waiting for the printer to print the reversal receipt.
    Reversing,
    /// Reversal receipt printed: done.
    Reversed,
    /// Rejected by the provider: nothing was refunded.
    Rejected,
    /// Needs an operator.
    Parked,
}

impl RefundStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Refunded => "refunded",
            Self::Reversing => "reversing",
            Self::Reversed => "reversed",
            Self::Rejected => "rejected",
            Self::Parked => "parked",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Refunded,
            Self::Reversing,
            Self::Reversed,
            Self::Rejected,
            Self::Parked,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// The fiscal document a printer produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct FiscalDocument {
    /// The printer that printed it.
    pub(crate) printer: String,
    /// The device's document number.
    pub(crate) number: u64,
    /// Amount in minor units.
    pub(crate) amount: i64,
    /// When it was printed (ms since the Unix epoch).
    pub(crate) printed_at: i64,
    /// The date and time the device printed on it (`DD-MM-YY HH:MM:SS`),
    /// which a reversal must quote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) device_time: Option<String>,
    /// Serial number of the fiscal memory that holds it, which a reversal
    /// must quote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fm_serial: Option<String>,
}

/// A payment as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct Payment {
    /// Payment id (UUIDv7).
    pub(crate) id: String,
    /// This payment's URL.
    pub(crate) url: String,
    pub(crate) restaurant: String,
    pub(crate) order_ref: String,
    /// Amount in minor units.
    pub(crate) amount: i64,
    /// ISO 4217 code.
    pub(crate) currency: String,
    pub(crate) method: PaymentMethod,
    /// The printer that prints the receipt.
    pub(crate) printer: String,
    pub(crate) lines: Vec<ReceiptLine>,
    pub(crate) status: PaymentStatus,
    /// Why the payment is declined, voided or parked.
    pub(crate) reason: Option<String>,
    /// The provider's reference for the charge.
    pub(crate) provider_ref: Option<String>,
    /// The fiscal receipt, once printed.
    pub(crate) receipt: Option<FiscalDocument>,
    /// The payment's saga (for the operator API).
    pub(crate) saga_id: Option<String>,
    /// Refunds of this payment.
    pub(crate) refunds: Vec<Refund>,
    /// Every step so far, oldest first.
    pub(crate) journey: Vec<JourneyStep>,
    /// ms since the Unix epoch.
    pub(crate) created_at: i64,
    /// ms since the Unix epoch.
    pub(crate) updated_at: i64,
}

/// A refund as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct Refund {
    pub(crate) id: String,
    pub(crate) payment_id: String,
    /// Amount in minor units.
    pub(crate) amount: i64,
    pub(crate) reason: String,
    pub(crate) status: RefundStatus,
    /// The provider's reference for the refund.
    pub(crate) provider_ref: Option<String>,
    /// The reversal (storno) receipt, once printed.
    pub(crate) reversal: Option<FiscalDocument>,
    /// The refund's saga (for the operator API).
    pub(crate) saga_id: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

/// One step of a payment's journey (from the events log).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct JourneyStep {
    /// Event id.
    pub(crate) id: i64,
    /// What happened, e.g. `payment.captured`.
    pub(crate) kind: String,
    /// ms since the Unix epoch.
    pub(crate) at: i64,
    /// Details (no card data, no secrets).
    pub(crate) detail: serde_json::Value,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_totals_round_half_up_and_never_overflow() {
        let l = |q, p| ReceiptLine {
            text: "x".into(),
            quantity: q,
            unit_price: p,
            vat: VatGroup::A,
        };
        assert_eq!(l(1000, 1250).total(), Some(1250));
        assert_eq!(l(1500, 333).total(), Some(500)); // 499.5 -> 500
        assert_eq!(l(i64::MAX, i64::MAX).total(), None);
    }

    #[test]
    fn statuses_round_trip() {
        for s in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(PaymentStatus::parse("nope"), None);
    }
}
