//! Validation of documents before anything is sent, and their totals.

use crate::money::{Money, mul_div_round};
use crate::receipt::{Item, Payment, PaymentType, PriceModifier, Receipt, Sale};
use crate::text::encode_cp1251;
use serde::{Deserialize, Serialize};

/// Device limits that a document must respect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest article name. Default: 32.
    pub item_text: usize,
    /// Longest comment line. Default: 42.
    pub comment_text: usize,
    /// Most lines (sales, comments, subtotal modifiers) on one receipt. Default: 200.
    pub max_items: usize,
    /// Most payments on one receipt. Default: 8.
    pub max_payments: usize,
    /// Largest absolute line or receipt amount. Default: 9 999 999.99.
    pub max_amount: Money,
    /// Largest quantity in thousandths. Default: 99 999.999.
    pub max_qty: i64,
    /// Longest unique sale number. Default: 21 (`AB123456-0001-0000001`).
    pub sale_number: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            item_text: 32,
            comment_text: 42,
            max_items: 200,
            max_payments: 8,
            max_amount: Money(999_999_999),
            max_qty: 99_999_999,
            sale_number: 21,
        }
    }
}

/// Why a document is invalid. Carries the 0-based line index where it applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// The receipt has no sale line.
    #[error("the receipt has no sale line")]
    NoSales,
    /// Too many lines.
    #[error("too many lines (at most {max})")]
    TooManyItems {
        /// The limit.
        max: usize,
    },
    /// A text is longer than the device prints.
    #[error("line {line}: text longer than {max} characters")]
    TextTooLong {
        /// Line index.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// A text holds a character the device cannot print (or a control character).
    #[error("line {line}: unsupported character in text")]
    BadText {
        /// Line index.
        line: usize,
    },
    /// Quantity is zero, negative or too large.
    #[error("line {line}: quantity out of range")]
    BadQuantity {
        /// Line index.
        line: usize,
    },
    /// Price or line amount is negative or too large.
    #[error("line {line}: amount out of range")]
    BadAmount {
        /// Line index.
        line: usize,
    },
    /// A modifier is out of range (over 100 %, or makes the amount negative).
    #[error("line {line}: discount or surcharge out of range")]
    BadModifier {
        /// Line index.
        line: usize,
    },
    /// Department out of range (1..=99).
    #[error("line {line}: department out of range")]
    BadDepartment {
        /// Line index.
        line: usize,
    },
    /// The total is zero or negative.
    #[error("the total must be positive")]
    NonPositiveTotal,
    /// No payment, too many, or a payment that is not positive.
    #[error("payments missing, too many, or not positive")]
    BadPayments,
    /// Payments do not cover the total.
    #[error("payments {paid} do not cover the total {total}")]
    Underpaid {
        /// Receipt total.
        total: Money,
        /// Sum of payments.
        paid: Money,
    },
    /// Payments exceed the total and the excess is not in cash.
    #[error("payments {paid} exceed the total {total} and the last payment is not cash")]
    ChangeNotInCash {
        /// Receipt total.
        total: Money,
        /// Sum of payments.
        paid: Money,
    },
    /// Operator number or password out of range.
    #[error("operator number must be 1..=30 and the password 1..=8 digits")]
    BadOperator,
    /// The unique sale number is empty, too long or not printable ASCII.
    #[error("unique sale number must be 1..={max} printable ASCII characters without commas")]
    BadSaleNumber {
        /// The limit.
        max: usize,
    },
    /// A cash move of zero or beyond the limits.
    #[error("cash amount out of range")]
    BadCashAmount,
}

/// The amounts a valid receipt comes to, computed exactly as the device does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    /// The receipt total.
    pub total: Money,
    /// The total per VAT group, A..H.
    pub by_vat: [Money; 8],
    /// Number of sale lines.
    pub sales: u32,
    /// Sum of payments.
    pub paid: Money,
    /// Change given in cash.
    pub change: Money,
}

/// Amount of one sale line before its modifier: price × qty, rounded.
pub(crate) fn line_gross(s: &Sale) -> Option<i64> {
    mul_div_round(s.unit_price.0, s.qty.0, 1000)
}

/// The signed adjustment a modifier makes to `base`.
pub(crate) fn modifier_delta(base: i64, m: PriceModifier) -> Option<i64> {
    Some(match m {
        PriceModifier::DiscountPct(bp) => -mul_div_round(base, i64::from(bp), 10_000)?,
        PriceModifier::SurchargePct(bp) => mul_div_round(base, i64::from(bp), 10_000)?,
        PriceModifier::DiscountAmt(a) => -a.0,
        PriceModifier::SurchargeAmt(a) => a.0,
    })
}

fn modifier_ok(m: PriceModifier, limits: &Limits) -> bool {
    match m {
        PriceModifier::DiscountPct(bp) | PriceModifier::SurchargePct(bp) => {
            (1..=10_000).contains(&bp)
        }
        PriceModifier::DiscountAmt(a) | PriceModifier::SurchargeAmt(a) => {
            a.0 > 0 && a <= limits.max_amount
        }
    }
}

fn check_text(s: &str, max: usize, line: usize) -> Result<(), Invalid> {
    if s.chars().count() > max {
        return Err(Invalid::TextTooLong { line, max });
    }
    if encode_cp1251(s).is_none() {
        return Err(Invalid::BadText { line });
    }
    Ok(())
}

/// Checks the sale number.
pub(crate) fn check_sale_number(s: &str, limits: &Limits) -> Result<(), Invalid> {
    let ok = !s.is_empty()
        && s.len() <= limits.sale_number
        && s.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if ok {
        Ok(())
    } else {
        Err(Invalid::BadSaleNumber {
            max: limits.sale_number,
        })
    }
}

/// Validates a receipt and computes its totals.
///
/// # Errors
///
/// [`Invalid`] naming the first problem found.
pub fn validate_receipt(r: &Receipt, limits: &Limits) -> Result<Totals, Invalid> {
    let op = &r.operator;
    if !(1..=30).contains(&op.id)
        || op.password.is_empty()
        || op.password.len() > 8
        || !op.password.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Invalid::BadOperator);
    }
    if let Some(unp) = &r.sale_number {
        check_sale_number(unp, limits)?;
    }
    if r.items.len() > limits.max_items {
        return Err(Invalid::TooManyItems {
            max: limits.max_items,
        });
    }
    let mut t = Totals::default();
    let max = limits.max_amount.0;
    for (line, item) in r.items.iter().enumerate() {
        match item {
            Item::Sale(s) => {
                check_text(&s.text, limits.item_text, line)?;
                if s.qty.0 <= 0 || s.qty.0 > limits.max_qty {
                    return Err(Invalid::BadQuantity { line });
                }
                if s.unit_price.0 < 0 || s.unit_price.0 > max {
                    return Err(Invalid::BadAmount { line });
                }
                if let Some(d) = s.department
                    && !(1..=99).contains(&d)
                {
                    return Err(Invalid::BadDepartment { line });
                }
                let gross = line_gross(s).ok_or(Invalid::BadAmount { line })?;
                if gross > max {
                    return Err(Invalid::BadAmount { line });
                }
                let net = match s.modifier {
                    Some(m) => {
                        if !modifier_ok(m, limits) {
                            return Err(Invalid::BadModifier { line });
                        }
                        let d = modifier_delta(gross, m).ok_or(Invalid::BadModifier { line })?;
                        gross + d
                    }
                    None => gross,
                };
                if net < 0 || net > max {
                    return Err(Invalid::BadModifier { line });
                }
                let v = &mut t.by_vat[s.vat.index()];
                *v = Money(v.0 + net);
                t.total = Money(t.total.0 + net);
                if t.total.0 > max {
                    return Err(Invalid::BadAmount { line });
                }
                t.sales += 1;
            }
            Item::Comment(c) => check_text(c, limits.comment_text, line)?,
            Item::Subtotal(m) => {
                if !modifier_ok(*m, limits) || t.total.0 <= 0 {
                    return Err(Invalid::BadModifier { line });
                }
                let d = apply_subtotal(&mut t, *m).ok_or(Invalid::BadModifier { line })?;
                if d.is_none() {
                    return Err(Invalid::BadModifier { line });
                }
            }
        }
    }
    if t.sales == 0 {
        return Err(Invalid::NoSales);
    }
    if t.total.0 <= 0 {
        return Err(Invalid::NonPositiveTotal);
    }
    check_payments(&r.payments, t.total, limits).map(|(paid, change)| {
        t.paid = paid;
        t.change = change;
        t
    })
}

/// Applies a subtotal modifier, spreading it over the VAT groups in
/// proportion (the last non-zero group takes the rounding rest).
/// Returns `Some(None)` when the result would be negative.
pub(crate) fn apply_subtotal(t: &mut Totals, m: PriceModifier) -> Option<Option<()>> {
    let base = t.total.0;
    let delta = modifier_delta(base, m)?;
    if base + delta < 0 {
        return Some(None);
    }
    let mut rest = delta;
    let last = t.by_vat.iter().rposition(|v| v.0 != 0)?;
    for i in 0..8 {
        if t.by_vat[i].0 == 0 {
            continue;
        }
        let share = if i == last {
            rest
        } else {
            mul_div_round(delta, t.by_vat[i].0, base)?
        };
        rest -= share;
        t.by_vat[i] = Money(t.by_vat[i].0 + share);
    }
    t.total = Money(base + delta);
    Some(Some(()))
}

/// Checks payments against a total: returns (paid, change).
pub(crate) fn check_payments(
    payments: &[Payment],
    total: Money,
    limits: &Limits,
) -> Result<(Money, Money), Invalid> {
    if payments.is_empty()
        || payments.len() > limits.max_payments
        || payments
            .iter()
            .any(|p| p.amount.0 <= 0 || p.amount > limits.max_amount)
        || payments
            .iter()
            .any(|p| matches!(p.kind, PaymentType::Reserved(n) if !(1..=2).contains(&n)))
    {
        return Err(Invalid::BadPayments);
    }
    let paid = Money(payments.iter().map(|p| p.amount.0).sum());
    if paid < total {
        return Err(Invalid::Underpaid { total, paid });
    }
    // The device closes the receipt at the first payment that covers the
    // total, so every later payment would be refused: only the last payment
    // may go over, and only in cash.
    let before_last = paid.0 - payments.last().map_or(0, |p| p.amount.0);
    if before_last >= total.0 {
        return Err(Invalid::BadPayments);
    }
    let change = Money(paid.0 - total.0);
    if change.0 > 0 && payments.last().map(|p| p.kind) != Some(PaymentType::Cash) {
        return Err(Invalid::ChangeNotInCash { total, paid });
    }
    Ok((paid, change))
}

/// Validates a cash move (positive in, negative out).
///
/// # Errors
///
/// [`Invalid::BadCashAmount`] for zero or an amount beyond the limits.
pub fn validate_cash(amount: Money, limits: &Limits) -> Result<(), Invalid> {
    if amount.0 == 0 || amount.0.unsigned_abs() > limits.max_amount.0.unsigned_abs() {
        Err(Invalid::BadCashAmount)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Qty;
    use crate::receipt::{Operator, VatGroup};
    use proptest::prelude::*;

    fn base() -> Receipt {
        Receipt::new().sale("Coffee", Money(199), Qty(1500), VatGroup::B)
    }

    #[test]
    fn totals_with_modifiers() {
        let r = base()
            .item(Item::Sale(Sale {
                text: "Cake".into(),
                unit_price: Money(400),
                qty: Qty::ONE,
                vat: VatGroup::A,
                department: None,
                modifier: Some(PriceModifier::DiscountPct(1000)),
            }))
            .item(Item::Subtotal(PriceModifier::SurchargeAmt(Money(10))))
            .pay(PaymentType::Cash, Money(1000));
        let t = validate_receipt(&r, &Limits::default()).unwrap();
        assert_eq!(t.total, Money(299 + 360 + 10));
        assert_eq!(t.by_vat.iter().map(|m| m.0).sum::<i64>(), t.total.0);
        assert_eq!(t.change, Money(1000 - 669));
    }

    #[test]
    fn rejects_bad_receipts() {
        let l = Limits::default();
        assert_eq!(
            validate_receipt(&base(), &l),
            Err(Invalid::BadPayments),
            "no payment"
        );
        assert_eq!(
            validate_receipt(&base().pay(PaymentType::Card, Money(100)), &l),
            Err(Invalid::Underpaid {
                total: Money(299),
                paid: Money(100)
            })
        );
        assert!(matches!(
            validate_receipt(&base().pay(PaymentType::Card, Money(300)), &l),
            Err(Invalid::ChangeNotInCash { .. })
        ));
        assert_eq!(
            validate_receipt(
                &base()
                    .pay(PaymentType::Cash, Money(299))
                    .pay(PaymentType::Cash, Money(1)),
                &l
            ),
            Err(Invalid::BadPayments),
            "a payment after the total is covered"
        );
        let long = Receipt::new()
            .sale("x".repeat(33), Money(1), Qty::ONE, VatGroup::A)
            .pay(PaymentType::Cash, Money(1));
        assert_eq!(
            validate_receipt(&long, &l),
            Err(Invalid::TextTooLong { line: 0, max: 32 })
        );
        let tab = base().comment("a\tb").pay(PaymentType::Cash, Money(299));
        assert_eq!(
            validate_receipt(&tab, &l),
            Err(Invalid::BadText { line: 1 })
        );
        let zero = Receipt::new()
            .sale("x", Money(1), Qty(0), VatGroup::A)
            .pay(PaymentType::Cash, Money(1));
        assert_eq!(
            validate_receipt(&zero, &l),
            Err(Invalid::BadQuantity { line: 0 })
        );
        let op = base()
            .operator(Operator {
                id: 0,
                password: "1".into(),
            })
            .pay(PaymentType::Cash, Money(299));
        assert_eq!(validate_receipt(&op, &l), Err(Invalid::BadOperator));
        let unp = base().sale_number("a,b").pay(PaymentType::Cash, Money(299));
        assert!(matches!(
            validate_receipt(&unp, &l),
            Err(Invalid::BadSaleNumber { .. })
        ));
        assert_eq!(
            validate_receipt(&Receipt::new().pay(PaymentType::Cash, Money(1)), &l),
            Err(Invalid::NoSales)
        );
    }

    proptest! {
        #[test]
        fn vat_split_always_sums_to_total(
            lines in proptest::collection::vec((1i64..100_000, 1i64..5_000, 0usize..8), 1..10),
            sub in proptest::option::of(1u16..10_000),
        ) {
            let mut r = Receipt::new();
            for (p, q, v) in &lines {
                r = r.sale("x", Money(*p), Qty(*q), VatGroup::ALL[*v]);
            }
            if let Some(bp) = sub {
                r = r.item(Item::Subtotal(PriceModifier::DiscountPct(bp)));
            }
            let t0 = validate_receipt(&r.clone().pay(PaymentType::Cash, Money(999_999_999)), &Limits::default());
            if let Err(Invalid::Underpaid { total, .. }) | Err(Invalid::ChangeNotInCash { total, .. }) = t0 {
                prop_assert!(total.0 >= 0);
            }
            if let Ok(t) = t0 {
                prop_assert_eq!(t.by_vat.iter().map(|m| m.0).sum::<i64>(), t.total.0);
                let exact = r.pay(PaymentType::Card, t.total);
                prop_assert_eq!(validate_receipt(&exact, &Limits::default()).map(|x| x.total), Ok(t.total));
            }
        }
    }
}
