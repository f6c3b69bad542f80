//! Deciding what happened to a document from device evidence.
//!
//! The recipe, applied after a crash, a timeout or any error once the first
//! frame of a document may have reached the device:
//!
//! | device now | decision |
//! |---|---|
//! | receipt open, nothing paid | cancel it → not printed (retry) |
//! | receipt open, partly paid, amount matches | pay the *recorded* payments not yet made, close → printed |
//! | closed, counter advanced by exactly one, amount matches | printed |
//! | closed, counter unchanged | not printed |
//! | anything else | unknown, for a person |

use crate::money::Money;
use crate::outcome::{Document, Snapshot};
use crate::receipt::{Job, Payment, ReportKind};
use crate::validate::{Limits, validate_receipt};

/// What a job should leave behind on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A fiscal or storno receipt with this total and these payments.
    Receipt {
        /// Receipt total.
        total: Money,
        /// True for a storno receipt.
        storno: bool,
        /// The recorded payments, in order.
        payments: Vec<Payment>,
    },
    /// One document (cash in/out) moving the document counter by one.
    Counter {
        /// Amount of the document.
        amount: Money,
    },
    /// A Z report moving the Z counter by one.
    ZReport,
    /// A non-fiscal print (X report, duplicate): repeating it is harmless.
    NonFiscal,
}

impl Expect {
    /// What `job` should leave behind. `None` when the job is invalid.
    pub fn of(job: &Job, limits: &Limits) -> Option<Expect> {
        Some(match job {
            Job::Receipt(r) => Expect::Receipt {
                total: validate_receipt(r, limits).ok()?.total,
                storno: false,
                payments: r.payments.clone(),
            },
            Job::Reversal(r) => Expect::Receipt {
                total: validate_receipt(&r.receipt, limits).ok()?.total,
                storno: true,
                payments: r.receipt.payments.clone(),
            },
            Job::Cash(a) => Expect::Counter { amount: *a },
            Job::Report(ReportKind::Z) => Expect::ZReport,
            Job::Report(ReportKind::X) | Job::Duplicate => Expect::NonFiscal,
        })
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The document exists exactly once.
    Printed(Document),
    /// Nothing was printed.
    NotPrinted(String),
    /// Our receipt is open without payment: cancel it; then it is not printed.
    CancelOpen,
    /// Our receipt is open and paid in part or in full: make these recorded
    /// payments (possibly none) and close.
    FinishOpen(Vec<Payment>),
    /// The evidence does not tell.
    Unknown(String),
}

/// The recorded payments still to be made once `tender` has been paid.
pub fn remaining_payments(payments: &[Payment], tender: Money) -> Vec<Payment> {
    let mut left = tender.0;
    let mut out = Vec::new();
    for p in payments {
        if left >= p.amount.0 {
            left -= p.amount.0;
            continue;
        }
        out.push(Payment {
            kind: p.kind,
            amount: Money(p.amount.0 - left),
        });
        left = 0;
    }
    out
}

/// Decides from the baseline (read before the first frame) and the
/// observed state (read now).
pub fn decide(expect: &Expect, baseline: &Snapshot, observed: &Snapshot) -> Decision {
    let Some(delta) = observed.last_doc_no.checked_sub(baseline.last_doc_no) else {
        return Decision::Unknown("document counter went backwards".into());
    };
    if baseline.open.is_some() {
        return Decision::Unknown("a receipt was already open before the job".into());
    }
    match expect {
        Expect::Receipt {
            total,
            storno,
            payments,
        } => match observed.open {
            Some(o) => {
                if delta != 0 {
                    Decision::Unknown(format!(
                        "a receipt is open and {delta} documents were printed since the baseline"
                    ))
                } else if o.storno != *storno {
                    Decision::Unknown("the open receipt is of another kind".into())
                } else if o.tender.0 == 0 {
                    Decision::CancelOpen
                } else if o.amount != *total {
                    Decision::Unknown(format!(
                        "the open receipt is paid in part but its amount {} is not ours {}",
                        o.amount, total
                    ))
                } else {
                    // Paid in full but not closed: nothing left to pay, just close.
                    Decision::FinishOpen(remaining_payments(payments, o.tender))
                }
            }
            None => match delta {
                0 => Decision::NotPrinted("the device did not print the receipt".into()),
                // Devices do not say whether the last closed receipt was a
                // storno; the counter moving by exactly one and the amount
                // are the evidence.
                1 => match observed.last_receipt {
                    Some(last) if last.amount == *total => Decision::Printed(Document {
                        doc_no: observed.last_doc_no,
                        amount: *total,
                        at: None,
                        z_no: None,
                        recovered: true,
                        fm_serial: None,
                        serial: None,
                    }),
                    Some(last) => Decision::Unknown(format!(
                        "one document was printed but its amount {} is not ours {}",
                        last.amount, total
                    )),
                    None => Decision::Unknown("the device did not report the last receipt".into()),
                },
                n => Decision::Unknown(format!("{n} documents were printed since the baseline")),
            },
        },
        Expect::Counter { amount } => match (observed.open, delta) {
            (None, 0) => Decision::NotPrinted("the device did not print the document".into()),
            (None, 1) => Decision::Printed(Document {
                doc_no: observed.last_doc_no,
                amount: *amount,
                at: None,
                z_no: None,
                recovered: true,
                fm_serial: None,
                serial: None,
            }),
            (Some(_), _) => Decision::Unknown("a receipt is open".into()),
            (None, n) => {
                Decision::Unknown(format!("{n} documents were printed since the baseline"))
            }
        },
        Expect::ZReport => match observed.z_no.checked_sub(baseline.z_no) {
            Some(0) => Decision::NotPrinted("the Z counter did not move".into()),
            Some(1) => Decision::Printed(Document {
                doc_no: observed.last_doc_no,
                amount: Money::ZERO,
                at: None,
                z_no: Some(observed.z_no),
                recovered: true,
                fm_serial: None,
                serial: None,
            }),
            _ => Decision::Unknown("the Z counter moved by more than one".into()),
        },
        Expect::NonFiscal => Decision::NotPrinted("non-fiscal print; safe to repeat".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::OpenReceipt;
    use crate::receipt::PaymentType;
    use proptest::prelude::*;

    fn snap(doc: u64, open: Option<OpenReceipt>, last: Option<OpenReceipt>) -> Snapshot {
        Snapshot {
            last_doc_no: doc,
            z_no: 3,
            open,
            last_receipt: last,
        }
    }

    fn rec(amount: i64, tender: i64) -> OpenReceipt {
        OpenReceipt {
            storno: false,
            items: 2,
            amount: Money(amount),
            tender: Money(tender),
        }
    }

    fn expect() -> Expect {
        Expect::Receipt {
            total: Money(1000),
            storno: false,
            payments: vec![
                Payment {
                    kind: PaymentType::Card,
                    amount: Money(600),
                },
                Payment {
                    kind: PaymentType::Cash,
                    amount: Money(500),
                },
            ],
        }
    }

    #[test]
    fn the_recipe() {
        let base = snap(10, None, Some(rec(5, 5)));
        let e = expect();
        assert_eq!(
            decide(&e, &base, &snap(10, Some(rec(700, 0)), None)),
            Decision::CancelOpen
        );
        assert_eq!(
            decide(&e, &base, &snap(10, Some(rec(1000, 600)), None)),
            Decision::FinishOpen(vec![Payment {
                kind: PaymentType::Cash,
                amount: Money(500)
            }])
        );
        assert_eq!(
            decide(&e, &base, &snap(10, Some(rec(1000, 200)), None)),
            Decision::FinishOpen(vec![
                Payment {
                    kind: PaymentType::Card,
                    amount: Money(400)
                },
                Payment {
                    kind: PaymentType::Cash,
                    amount: Money(500)
                }
            ]),
            "never a remainder as cash: the card payment is finished as card"
        );
        assert_eq!(
            decide(&e, &base, &snap(10, Some(rec(1000, 1100)), None)),
            Decision::FinishOpen(vec![]),
            "paid in full, not closed: just close"
        );
        assert!(matches!(
            decide(&e, &base, &snap(10, Some(rec(999, 600)), None)),
            Decision::Unknown(_)
        ));
        assert!(matches!(
            decide(&e, &base, &snap(11, None, Some(rec(1000, 1100)))),
            Decision::Printed(d) if d.doc_no == 11 && d.recovered
        ));
        assert!(matches!(
            decide(&e, &base, &snap(11, None, Some(rec(990, 1100)))),
            Decision::Unknown(_)
        ));
        assert!(matches!(
            decide(&e, &base, &snap(10, None, Some(rec(5, 5)))),
            Decision::NotPrinted(_)
        ));
        assert!(matches!(
            decide(&e, &base, &snap(12, None, Some(rec(1000, 1000)))),
            Decision::Unknown(_)
        ));
        assert!(matches!(
            decide(&e, &base, &snap(9, None, None)),
            Decision::Unknown(_)
        ));
    }

    proptest! {
        #[test]
        fn remaining_plus_tender_is_the_payments(amounts in proptest::collection::vec(1i64..10_000, 1..6),
                                                  frac in 0.0f64..1.0) {
            let payments: Vec<Payment> = amounts.iter().map(|a| Payment { kind: PaymentType::Card, amount: Money(*a) }).collect();
            let sum: i64 = amounts.iter().sum();
            let tender = ((sum as f64) * frac) as i64;
            let rest = remaining_payments(&payments, Money(tender));
            prop_assert_eq!(rest.iter().map(|p| p.amount.0).sum::<i64>(), sum - tender);
            prop_assert!(rest.iter().all(|p| p.amount.0 > 0));
        }

        #[test]
        fn printed_only_when_advanced_by_exactly_one(base_doc in 0u64..1000, delta in 0u64..4, open in any::<bool>(),
                                                     amount in 1i64..2000) {
            let base = snap(base_doc, None, None);
            let obs = if open { snap(base_doc + delta, Some(rec(amount, 0)), None) }
                      else { snap(base_doc + delta, None, Some(rec(amount, amount))) };
            let d = decide(&expect(), &base, &obs);
            if let Decision::Printed(doc) = &d {
                prop_assert!(!open && delta == 1 && amount == 1000);
                prop_assert_eq!(doc.doc_no, base_doc + 1);
            }
            if delta == 0 && !open { prop_assert!(matches!(d, Decision::NotPrinted(_))); }
            if delta > 1 { prop_assert!(matches!(d, Decision::Unknown(_))); }
        }
    }
}
