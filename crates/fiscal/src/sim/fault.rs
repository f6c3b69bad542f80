//! Scriptable faults of the simulator.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Where a simulated power failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CrashPoint {
    /// When the first payment arrives, before it is executed.
    BeforePayment,
    /// Right after the first payment is executed, before its reply.
    AfterPayment,
    /// When the close command arrives, before it is executed.
    BeforeClose,
    /// Right after the receipt is closed, before the reply.
    AfterClose,
}

/// A fault to inject. Frame faults apply to the next frames received;
/// state faults apply at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Fault {
    /// Offline: close the next `n` connections as soon as they are accepted.
    RefuseConnections(u32),
    /// Accept, then go silent: ignore the next `n` frames (not executed).
    Silent(u32),
    /// Reset the connection when the next frame arrives (not executed).
    ResetMidFrame,
    /// Slow: send `n` SYN bytes (one per SYN interval) before the next reply.
    Slow(u32),
    /// Answer the next `n` frames with NAK (not executed).
    Nak(u32),
    /// Corrupt the checksum of the next `n` replies (executed).
    CorruptChecksum(u32),
    /// Execute the next `n` frames and drop their replies.
    ExecuteThenDrop(u32),
    /// Send the next `n` replies twice.
    DuplicateReply(u32),
    /// Run out of paper at the `item`-th sale from now (1 = the next);
    /// paper comes back after `refill_after_polls` status polls (0 = only
    /// when refilled by hand).
    PaperOutAtItem {
        /// Which sale.
        item: u32,
        /// Status polls until the refill.
        refill_after_polls: u32,
    },
    /// Open the cover now; it closes after `close_after_polls` status polls
    /// (0 = only by hand).
    CoverOpen {
        /// Status polls until it closes.
        close_after_polls: u32,
    },
    /// Power failure at a point of the next receipt: connections drop,
    /// the device restarts from its persisted state (keeping an open receipt).
    Crash(CrashPoint),
    /// Hang at a point of the next receipt: the device stops answering
    /// (every frame ignored) until the faults are cleared. With the `After`
    /// points the command is executed first.
    Hang(CrashPoint),
    /// Fiscal memory nearly full: `n` Z reports left.
    FiscalMemoryLeft(u32),
    /// Require a Z report now (as after 24 h without one).
    ZRequired,
}

impl FromStr for Fault {
    type Err = String;

    /// Parses the admin-port syntax: `offline 2`, `silent 1`, `reset`,
    /// `slow 5`, `nak 2`, `corrupt 1`, `drop 1`, `dup 1`, `paper-out 3 2`,
    /// `cover-open 2`, `crash before-payment|after-payment|before-close|after-close`,
    /// `hang <same points>`,
    /// `fm-left 20`, `z-required`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut it = s.split_whitespace();
        let name = it.next().ok_or("empty fault")?;
        let mut num = |default: u32| -> Result<u32, String> {
            match it.next() {
                Some(v) => v.parse().map_err(|_| format!("bad number {v:?}")),
                None => Ok(default),
            }
        };
        Ok(match name {
            "offline" => Fault::RefuseConnections(num(1)?),
            "silent" => Fault::Silent(num(1)?),
            "reset" => Fault::ResetMidFrame,
            "slow" => Fault::Slow(num(5)?),
            "nak" => Fault::Nak(num(1)?),
            "corrupt" => Fault::CorruptChecksum(num(1)?),
            "drop" => Fault::ExecuteThenDrop(num(1)?),
            "dup" => Fault::DuplicateReply(num(1)?),
            "paper-out" => {
                let item = num(1)?;
                Fault::PaperOutAtItem {
                    item,
                    refill_after_polls: num(0)?,
                }
            }
            "cover-open" => Fault::CoverOpen {
                close_after_polls: num(0)?,
            },
            "crash" => Fault::Crash(match s.split_whitespace().nth(1) {
                Some("before-payment") => CrashPoint::BeforePayment,
                Some("after-payment") => CrashPoint::AfterPayment,
                Some("before-close") => CrashPoint::BeforeClose,
                Some("after-close") => CrashPoint::AfterClose,
                other => return Err(format!("bad crash point {other:?}")),
            }),
            "hang" => Fault::Hang(match s.split_whitespace().nth(1) {
                Some("before-payment") => CrashPoint::BeforePayment,
                Some("after-payment") => CrashPoint::AfterPayment,
                Some("before-close") => CrashPoint::BeforeClose,
                Some("after-close") => CrashPoint::AfterClose,
                other => return Err(format!("bad hang point {other:?}")),
            }),
            "fm-left" => Fault::FiscalMemoryLeft(num(20)?),
            "z-required" => Fault::ZRequired,
            other => return Err(format!("unknown fault {other:?}")),
        })
    }
}

/// Pending frame faults.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pending {
    pub(crate) refuse: u32,
    pub(crate) silent: u32,
    pub(crate) reset: bool,
    pub(crate) slow: u32,
    pub(crate) nak: u32,
    pub(crate) corrupt: u32,
    pub(crate) drop: u32,
    pub(crate) dup: u32,
    pub(crate) paper_at: Option<(u32, u32)>,
    pub(crate) refill_after: Option<u32>,
    pub(crate) cover_after: Option<u32>,
    pub(crate) crash: Option<CrashPoint>,
    pub(crate) hang: Option<CrashPoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_admin_syntax() {
        assert_eq!("nak 3".parse(), Ok(Fault::Nak(3)));
        assert_eq!(
            "paper-out 2 4".parse(),
            Ok(Fault::PaperOutAtItem {
                item: 2,
                refill_after_polls: 4
            })
        );
        assert_eq!(
            "crash after-close".parse(),
            Ok(Fault::Crash(CrashPoint::AfterClose))
        );
        assert!("explode".parse::<Fault>().is_err());
    }
}
