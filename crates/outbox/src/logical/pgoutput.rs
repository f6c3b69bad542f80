//! The few records of PostgreSQL's `pgoutput` logical replication protocol
//! (version 1, with `messages`) that the stream relay reads.
//!
//! See "Logical Replication Message Formats" in the PostgreSQL manual.

use crate::Error;

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// A transaction starts.
    Begin,
    /// A message written by `pg_logical_emit_message`.
    Message {
        /// Whether it was emitted inside a transaction (decoded only if it committed).
        transactional: bool,
        /// The prefix it was emitted with.
        prefix: &'a [u8],
        /// Its content.
        content: &'a [u8],
    },
    /// A transaction committed; the slot may be advanced to `end_lsn`.
    Commit {
        /// The end of the commit record.
        end_lsn: u64,
    },
    /// Anything else (relations, row changes, origins, types): skipped.
    Other,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return Err(truncated());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn cstr(&mut self) -> Result<&'a [u8], Error> {
        let end = self.0.iter().position(|&b| b == 0).ok_or_else(truncated)?;
        let s = self.take(end)?;
        self.take(1)?;
        Ok(s)
    }
}

fn truncated() -> Error {
    Error::Corrupt("pgoutput record truncated".into())
}

/// Parses one record.
///
/// # Errors
///
/// [`Error::Corrupt`] for a truncated record; never panics.
pub(crate) fn parse(data: &[u8]) -> Result<Record<'_>, Error> {
    let mut r = Reader(data);
    match r.u8()? {
        b'B' => {
            // final LSN, commit time, xid
            r.take(8 + 8 + 4)?;
            Ok(Record::Begin)
        }
        b'M' => {
            let flags = r.u8()?;
            let _lsn = r.u64()?;
            let prefix = r.cstr()?;
            let len = usize::try_from(r.u32()?).map_err(|_| truncated())?;
            let content = r.take(len)?;
            Ok(Record::Message {
                transactional: flags & 1 == 1,
                prefix,
                content,
            })
        }
        b'C' => {
            let _flags = r.u8()?;
            let _commit_lsn = r.u64()?;
            let end_lsn = r.u64()?;
            let _commit_time = r.u64()?;
            Ok(Record::Commit { end_lsn })
        }
        _ => Ok(Record::Other),
    }
}

/// `X/Y` text form of an LSN.
pub(crate) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    // Records captured from PostgreSQL 15 (`pg_logical_slot_peek_binary_changes`
    // with pgoutput, proto_version 1, messages true).
    const BEGIN: &str = "42000000001d877790000304f8bb8e41d3001a3046";
    const MESSAGE: &str = "4d01000000001d876ce063662e70726f626500000000030102ff";
    const COMMIT: &str = "4300000000001d877790000000001d8777c0000304f8bb8e41d3";

    fn bytes(h: &str) -> Vec<u8> {
        hex::decode(h).unwrap()
    }

    #[test]
    fn parses_captured_records() {
        assert_eq!(parse(&bytes(BEGIN)).unwrap(), Record::Begin);
        assert_eq!(
            parse(&bytes(MESSAGE)).unwrap(),
            Record::Message {
                transactional: true,
                prefix: b"cf.probe",
                content: &[1, 2, 0xff],
            }
        );
        assert_eq!(
            parse(&bytes(COMMIT)).unwrap(),
            Record::Commit {
                end_lsn: 0x1D87_77C0
            }
        );
        assert_eq!(format_lsn(0x1D87_77C0), "0/1D8777C0");
        assert_eq!(format_lsn(0x0000_0002_0000_00A0), "2/A0");
    }

    #[test]
    fn every_truncation_is_an_error() {
        for rec in [MESSAGE, COMMIT, BEGIN] {
            let b = bytes(rec);
            for n in 0..b.len() {
                assert!(parse(&b[..n]).is_err(), "{rec} cut at {n}");
            }
        }
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panicking(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&data);
        }
    }
}
