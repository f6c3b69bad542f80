//! Money in minor units and quantities in thousandths.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of money in minor units (cents, stotinki): `Money(1234)` is 12.34.
///
/// ISL devices work with two decimal places; the driver writes amounts as
/// `12.34` on the wire and never uses floating point.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(pub i64);

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(0);

    /// The amount in minor units.
    pub fn minor(self) -> i64 {
        self.0
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// `self - other`, or `None` on overflow.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    /// Parses a decimal amount such as `12.34`, `-0.5` or `7` into minor units.
    ///
    /// Returns `None` for anything else, including more than two decimals.
    pub fn parse_decimal(s: &str) -> Option<Money> {
        parse_fixed(s, 2).map(Money)
    }
}

impl fmt::Display for Money {
    /// Formats as a decimal with two places: `Money(-5)` is `-0.05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_fixed(f, self.0, 2)
    }
}

/// A quantity in thousandths: `Qty(1500)` is 1.5 units, `Qty::ONE` is one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Qty(pub i64);

impl Qty {
    /// One unit.
    pub const ONE: Qty = Qty(1000);

    /// Whole units: `Qty::units(3)` is three.
    pub fn units(n: i64) -> Qty {
        Qty(n.saturating_mul(1000))
    }

    /// Parses a decimal quantity such as `1.5` or `2.125`.
    pub fn parse_decimal(s: &str) -> Option<Qty> {
        parse_fixed(s, 3).map(Qty)
    }
}

impl fmt::Display for Qty {
    /// Formats with three decimals: `Qty(1500)` is `1.500`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_fixed(f, self.0, 3)
    }
}

fn write_fixed(f: &mut fmt::Formatter<'_>, v: i64, places: u32) -> fmt::Result {
    let scale = 10u64.pow(places);
    let sign = if v < 0 { "-" } else { "" };
    let abs = v.unsigned_abs();
    write!(
        f,
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = places as usize
    )
}

/// Parses a fixed-point decimal with at most `places` decimals into an integer.
pub(crate) fn parse_fixed(s: &str, places: u32) -> Option<i64> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if body.is_empty() {
        return None;
    }
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if frac.len() > places as usize
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || int.len() > 15
    {
        return None;
    }
    let mut v: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    for _ in 0..places {
        v = v.checked_mul(10)?;
    }
    let mut f: i64 = 0;
    for (i, b) in frac.bytes().enumerate() {
        let digit = i64::from(b - b'0');
        f += digit * 10i64.pow(places - 1 - i as u32);
    }
    v = v.checked_add(f)?;
    Some(if neg { -v } else { v })
}

/// `a * b / div`, rounded half away from zero, in 128-bit arithmetic.
///
/// Returns `None` when the result does not fit in an `i64`.
pub(crate) fn mul_div_round(a: i64, b: i64, div: i64) -> Option<i64> {
    if div == 0 {
        return None;
    }
    let p = i128::from(a) * i128::from(b);
    let d = i128::from(div);
    let q = p / d;
    let r = p % d;
    let q = if 2 * r.abs() >= d.abs() {
        if (p < 0) != (d < 0) { q - 1 } else { q + 1 }
    } else {
        q
    };
    i64::try_from(q).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(Money(1234).to_string(), "12.34");
        assert_eq!(Money(-5).to_string(), "-0.05");
        assert_eq!(Qty(1500).to_string(), "1.500");
        assert_eq!(Money::parse_decimal("12.3"), Some(Money(1230)));
        assert_eq!(Money::parse_decimal(".5"), Some(Money(50)));
        assert_eq!(Money::parse_decimal("1.234"), None);
        assert_eq!(Money::parse_decimal("1e3"), None);
        assert_eq!(Money::parse_decimal(""), None);
        assert_eq!(Qty::parse_decimal("2.125"), Some(Qty(2125)));
    }

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(mul_div_round(1, 5, 10), Some(1));
        assert_eq!(mul_div_round(-1, 5, 10), Some(-1));
        assert_eq!(mul_div_round(1, 4, 10), Some(0));
        assert_eq!(mul_div_round(199, 1500, 1000), Some(299));
        assert_eq!(mul_div_round(i64::MAX, 10, 1), None);
    }

    proptest! {
        #[test]
        fn money_display_round_trips(v in -1_000_000_000_000i64..1_000_000_000_000) {
            prop_assert_eq!(Money::parse_decimal(&Money(v).to_string()), Some(Money(v)));
            prop_assert_eq!(Qty::parse_decimal(&Qty(v).to_string()), Some(Qty(v)));
        }
    }
}
