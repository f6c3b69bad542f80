//! The record state machine every backend implements; the in-memory store
//! runs it directly and the SQL and Lua versions mirror it.

use std::time::Duration;

use crate::begin::Begin;
use crate::clock::ms;
use crate::error::Error;
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::lease::{BeginOptions, Lease, RecoveryPoint};
use crate::response::StoredResponse;

/// The stored state of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) token: i64,
    pub(crate) lease_until: i64,
    pub(crate) recovery: Option<RecoveryPoint>,
    /// `Some` once completed.
    pub(crate) response: Option<StoredResponse>,
    pub(crate) expires_at: i64,
}

/// The next fencing token: above the previous one and at least the claim
/// time, so that tokens keep increasing even after a record was reaped.
pub(crate) fn next_token(prev: Option<i64>, now: i64) -> i64 {
    prev.map_or(1, |p| p.saturating_add(1)).max(now).max(1)
}

/// Time left until `until`, rounded up to whole milliseconds (at least 1 ms).
pub(crate) fn retry_after(until: i64, now: i64) -> Duration {
    Duration::from_millis(u64::try_from(until.saturating_sub(now)).unwrap_or(0).max(1))
}

/// Decides a claim; returns the record to write (if any) and the answer.
pub(crate) fn begin(
    existing: Option<&Record>,
    key: &IdempotencyKey,
    fp: &Fingerprint,
    now: i64,
    opts: &BeginOptions,
) -> (Option<Record>, Begin) {
    let lease_until = now.saturating_add(ms(opts.lease));
    let expires_at = now.saturating_add(ms(opts.ttl)).max(lease_until);
    let fresh = |prev: Option<i64>, recovery: Option<RecoveryPoint>, taken_over: bool| {
        let token = next_token(prev, now);
        let rec = Record {
            fingerprint: *fp,
            token,
            lease_until,
            recovery: recovery.clone(),
            response: None,
            expires_at,
        };
        let lease = Lease {
            key: std::sync::Arc::new(key.clone()),
            token,
            expires_at_ms: lease_until,
            duration: opts.lease,
            recovery,
            taken_over,
        };
        (Some(rec), Begin::Execute(lease))
    };
    match existing {
        None => fresh(None, None, false),
        Some(r) if r.expires_at <= now => fresh(Some(r.token), None, false),
        Some(r) if r.fingerprint != *fp => (None, Begin::Mismatch),
        Some(Record {
            response: Some(resp),
            ..
        }) => (None, Begin::Replay(resp.clone())),
        Some(r) if r.lease_until > now => (
            None,
            Begin::InFlight {
                retry_after: retry_after(r.lease_until, now),
            },
        ),
        Some(r) => {
            let (rec, b) = fresh(Some(r.token), r.recovery.clone(), true);
            (
                rec.map(|mut x| {
                    x.expires_at = x.expires_at.max(r.expires_at);
                    x
                }),
                b,
            )
        }
    }
}

/// Whether `lease` still holds `rec`.
pub(crate) fn holds(rec: Option<&Record>, lease: &Lease) -> Result<(), Error> {
    match rec {
        Some(r) if r.response.is_none() && r.token == lease.token => Ok(()),
        _ => Err(Error::LeaseLost),
    }
}

/// Extends the lease to `now` plus its duration (the record lives at least
/// that long); the recovery point is kept.
pub(crate) fn renew(rec: &mut Record, lease: &mut Lease, now: i64) {
    let until = now.saturating_add(ms(lease.duration));
    rec.lease_until = until;
    rec.expires_at = rec.expires_at.max(until);
    lease.expires_at_ms = until;
}

/// Applies a checkpoint (which also extends the lease).
pub(crate) fn checkpoint(rec: &mut Record, lease: &mut Lease, now: i64, point: &RecoveryPoint) {
    renew(rec, lease, now);
    rec.recovery = Some(point.clone());
    lease.recovery = Some(point.clone());
}

/// Applies a completion.
pub(crate) fn complete(rec: &mut Record, now: i64, response: &StoredResponse, ttl: Duration) {
    rec.response = Some(response.clone());
    rec.recovery = None;
    rec.lease_until = 0;
    rec.expires_at = now.saturating_add(ms(ttl));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Scope;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn key() -> IdempotencyKey {
        IdempotencyKey::new(Scope::new("t", "p", "op").expect("scope"), "k").expect("key")
    }

    #[derive(Debug, Clone)]
    enum Op {
        Begin(u8),
        Checkpoint(usize),
        Renew(usize),
        Complete(usize),
        Release(usize),
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..2).prop_map(Op::Begin),
            (0usize..4).prop_map(Op::Checkpoint),
            (0usize..4).prop_map(Op::Renew),
            (0usize..4).prop_map(Op::Complete),
            (0usize..4).prop_map(Op::Release),
            (0u16..400).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)))]

        /// At any time at most one lease can write; a completed key replays
        /// what its single successful completion stored; tokens only grow.
        #[test]
        fn at_most_one_writer(ops in proptest::collection::vec(op(), 1..60)) {
            let opts = BeginOptions { lease: Duration::from_millis(100), ttl: Duration::from_millis(1000) };
            let k = key();
            let fps = [Fingerprint::of_bytes(b"a"), Fingerprint::of_bytes(b"b")];
            let mut rec: Option<Record> = None;
            let mut now = 1_000i64;
            let mut leases: Vec<Lease> = Vec::new();
            let mut last_token = 0i64;
            let mut completions: BTreeMap<i64, StoredResponse> = BTreeMap::new();
            for o in ops {
                match o {
                    Op::Begin(i) => {
                        if rec.as_ref().is_some_and(|r| r.expires_at <= now) {
                            completions.clear();
                        }
                        let (w, b) = begin(rec.as_ref(), &k, &fps[usize::from(i)], now, &opts);
                        if let Some(w) = w { rec = Some(w); }
                        match b {
                            Begin::Execute(l) => {
                                prop_assert!(l.token > last_token);
                                last_token = l.token;
                                leases.push(l);
                            }
                            Begin::Replay(r) => {
                                prop_assert_eq!(completions.len(), 1);
                                prop_assert_eq!(completions.values().next(), Some(&r));
                            }
                            Begin::InFlight { retry_after } => prop_assert!(retry_after > Duration::ZERO),
                            Begin::Mismatch => {}
                        }
                    }
                    Op::Checkpoint(i) | Op::Renew(i) | Op::Complete(i) | Op::Release(i) => {
                        let Some(l) = leases.get_mut(i) else { continue };
                        let ok = holds(rec.as_ref(), l).is_ok();
                        // Only the newest lease may write.
                        if ok { prop_assert_eq!(l.token, last_token); }
                        if !ok { continue; }
                        let Some(r) = rec.as_mut() else { continue };
                        match o {
                            Op::Checkpoint(_) => checkpoint(r, l, now, &RecoveryPoint::new("p", vec![1])),
                            Op::Renew(_) => {
                                let before = r.recovery.clone();
                                renew(r, l, now);
                                prop_assert_eq!(&r.recovery, &before);
                                prop_assert!(r.lease_until > now);
                            }
                            Op::Complete(_) => {
                                let resp = StoredResponse::new(200, l.token.to_string());
                                complete(r, now, &resp, opts.ttl);
                                completions.insert(l.token, resp);
                            }
                            _ => { r.lease_until = now; }
                        }
                    }
                    Op::Advance(d) => now += i64::from(d),
                }
            }
        }
    }

    #[test]
    fn takeover_keeps_recovery_point_and_expiry_forgets_it() {
        let opts = BeginOptions {
            lease: Duration::from_millis(10),
            ttl: Duration::from_millis(100),
        };
        let k = key();
        let fp = Fingerprint::of_bytes(b"x");
        let (w, b) = begin(None, &k, &fp, 0, &opts);
        let Begin::Execute(mut l) = b else {
            panic!("execute")
        };
        let mut r = w.expect("record");
        checkpoint(
            &mut r,
            &mut l,
            5,
            &RecoveryPoint::new("charged", b"ch_1".to_vec()),
        );
        assert!(matches!(
            begin(Some(&r), &k, &fp, 14, &opts).1,
            Begin::InFlight { .. }
        ));
        let (w2, b2) = begin(Some(&r), &k, &fp, 15, &opts);
        let Begin::Execute(l2) = b2 else {
            panic!("takeover")
        };
        assert!(l2.is_takeover());
        assert_eq!(
            l2.recovery_point().map(|p| p.phase.as_str()),
            Some("charged")
        );
        let r2 = w2.expect("record");
        assert!(holds(Some(&r2), &l).is_err());
        let (_, b3) = begin(Some(&r2), &k, &fp, 1_000, &opts);
        let Begin::Execute(l3) = b3 else {
            panic!("fresh")
        };
        assert!(l3.recovery_point().is_none());
        assert!(l3.token() > l2.token());
    }
}
