//! The traffic mix: what each flow does, drawn from a seeded generator so a
//! run can be repeated exactly.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Proportions of the mix.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Mix {
    /// Share of payments sent twice with the same Idempotency-Key.
    #[arg(long, default_value_t = 0.10)]
    pub(crate) dup: f64,
    /// Share of fiscalized payments refunded afterwards.
    #[arg(long, default_value_t = 0.10)]
    pub(crate) refund: f64,
    /// Share of refunds that are partial.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) partial: f64,
    /// Share of payments the provider declines (amount ending in 51).
    #[arg(long, default_value_t = 0.02)]
    pub(crate) decline: f64,
    /// One Z report per this many flows (0: none).
    #[arg(long, default_value_t = 250)]
    pub(crate) z_every: u64,
}

/// What one flow does.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) target: usize,
    pub(crate) printer: usize,
    pub(crate) amount: i64,
    pub(crate) body: Value,
    pub(crate) dup: bool,
    /// Send the duplicate while the first request is still in flight.
    pub(crate) dup_concurrent: bool,
    /// Refund this much after fiscalization.
    pub(crate) refund: Option<i64>,
    pub(crate) z_report: bool,
}

const ITEMS: [(&str, &str); 8] = [
    ("Margherita", "A"),
    ("Espresso", "B"),
    ("Water 0.5l", "B"),
    ("Tiramisu", "A"),
    ("Caesar salad", "A"),
    ("House wine", "C"),
    ("Lasagne", "A"),
    ("Lemonade", "B"),
];

/// Draws flow `n` of a run with `seed`; the same (seed, n) gives the same flow.
pub(crate) fn plan(seed: u64, n: u64, mix: &Mix, targets: &[(String, Vec<String>)]) -> Plan {
    let mut rng = StdRng::seed_from_u64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let target = rng.random_range(0..targets.len().max(1));
    let (restaurant, printers) = targets
        .get(target)
        .map_or(("", &[][..]), |(r, p)| (r.as_str(), p.as_slice()));
    let printer = rng.random_range(0..printers.len().max(1));
    let printer_id = printers.get(printer).map_or("", String::as_str);
    let n_lines = rng.random_range(1..=4);
    let mut lines = Vec::new();
    let mut amount = 0_i64;
    for i in 0..n_lines {
        let (text, vat) = ITEMS[rng.random_range(0..ITEMS.len())];
        // The last line is always one piece, so its price can set the total.
        let qty: i64 = if i + 1 == n_lines {
            1
        } else {
            rng.random_range(1..=3)
        };
        let price: i64 = rng.random_range(150..=2500);
        amount += price * qty;
        lines.push((text, vat, qty, price));
    }
    let decline = rng.random_bool(mix.decline.clamp(0.0, 1.0));
    let rem = amount % 100;
    let adjust = if decline {
        (51 - rem + 100) % 100
    } else if rem == 51 {
        1
    } else {
        0
    };
    amount += adjust;
    if let Some(last) = lines.last_mut() {
        last.3 += adjust;
    }
    let body = json!({
        "restaurant": restaurant,
        "order_ref": format!("LG-{seed:x}-{n}"),
        "amount": amount,
        "currency": "EUR",
        "method": "card",
        "printer": printer_id,
        "lines": lines.iter().map(|(text, vat, qty, price)| json!({
            "text": text, "quantity": qty * 1000, "unit_price": price, "vat": vat
        })).collect::<Vec<_>>(),
    });
    let dup = rng.random_bool(mix.dup.clamp(0.0, 1.0));
    let dup_concurrent = dup && rng.random_bool(0.5);
    let refund = (!decline && rng.random_bool(mix.refund.clamp(0.0, 1.0))).then(|| {
        if rng.random_bool(mix.partial.clamp(0.0, 1.0)) && amount > 1 {
            rng.random_range(1..amount)
        } else {
            amount
        }
    });
    Plan {
        target,
        printer,
        amount,
        body,
        dup,
        dup_concurrent,
        refund,
        z_report: mix.z_every > 0 && n % mix.z_every == mix.z_every - 1,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mix() -> Mix {
        Mix {
            dup: 0.1,
            refund: 0.1,
            partial: 0.5,
            decline: 0.2,
            z_every: 10,
        }
    }

    #[test]
    fn plans_add_up_and_repeat() {
        let targets = vec![("r1".to_owned(), vec!["p1".to_owned(), "p2".to_owned()])];
        let mut declines = 0;
        for n in 0..2000 {
            let p = plan(7, n, &mix(), &targets);
            let q = plan(7, n, &mix(), &targets);
            assert_eq!(p.body, q.body);
            let total: i64 = p.body["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["quantity"].as_i64().unwrap() * l["unit_price"].as_i64().unwrap() / 1000)
                .sum();
            assert_eq!(total, p.amount);
            assert_eq!(p.body["amount"].as_i64().unwrap(), p.amount);
            if p.amount % 100 == 51 {
                declines += 1;
                assert!(p.refund.is_none());
            }
            if let Some(r) = p.refund {
                assert!(r >= 1 && r <= p.amount);
            }
        }
        assert!((250..550).contains(&declines), "{declines}");
    }
}
