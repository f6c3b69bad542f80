//! Non-fiscal tickets (kitchen orders, pre-bills) on ESC/POS printers.
//!
//! ESC/POS over TCP is fire-and-forget, so a job is never reported as
//! printed without reading the printer's real-time status (`DLE EOT 1..4`)
//! after it.

use crate::error::Error;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One line of a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketLine {
    /// Plain text.
    Text(String),
    /// Bold text.
    Bold(String),
    /// Double-size text (table numbers, order numbers).
    Large(String),
    /// Blank lines.
    Feed(u8),
}

/// A non-fiscal ticket.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ticket {
    /// Lines in order.
    pub lines: Vec<TicketLine>,
    /// Cut the paper at the end.
    pub cut: bool,
}

/// A ticket printer's real-time status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TicketStatus {
    /// Offline (DLE EOT 1, bit 3).
    pub offline: bool,
    /// Cover open (DLE EOT 2, bit 2).
    pub cover_open: bool,
    /// Stopped by paper end (DLE EOT 2, bit 5).
    pub paper_stop: bool,
    /// An error occurred (DLE EOT 2, bit 6).
    pub error: bool,
    /// Autocutter error (DLE EOT 3, bit 3).
    pub cutter_error: bool,
    /// Unrecoverable error (DLE EOT 3, bit 5).
    pub unrecoverable: bool,
    /// Paper near end (DLE EOT 4, bits 2-3).
    pub paper_low: bool,
    /// Paper end (DLE EOT 4, bits 5-6).
    pub paper_out: bool,
}

impl TicketStatus {
    /// Decodes the four reply bytes of `DLE EOT 1`, `2`, `3` and `4`.
    ///
    /// # Errors
    ///
    /// [`Error::BadReply`] when a byte does not have the fixed pattern
    /// `0xx1xx10`.
    pub fn decode(r: [u8; 4]) -> Result<Self, Error> {
        if r.iter().any(|b| b & 0b1001_0011 != 0b0001_0010) {
            return Err(Error::BadReply(format!("not a DLE EOT reply: {r:02X?}")));
        }
        Ok(Self {
            offline: r[0] & (1 << 3) != 0,
            cover_open: r[1] & (1 << 2) != 0,
            paper_stop: r[1] & (1 << 5) != 0,
            error: r[1] & (1 << 6) != 0,
            cutter_error: r[2] & (1 << 3) != 0,
            unrecoverable: r[2] & (1 << 5) != 0,
            paper_low: r[3] & 0b0000_1100 != 0,
            paper_out: r[3] & 0b0110_0000 != 0,
        })
    }

    /// The error this status means for a job just sent, if any.
    pub fn job_error(&self) -> Option<Error> {
        use crate::message::{DeviceMessage, codes};
        let m = |c, o: &str| DeviceMessage::new(c, o.to_owned());
        if self.paper_out || self.paper_stop {
            Some(Error::NeedsOperator(m(codes::E301_PAPER_OUT, "DLE EOT 4")))
        } else if self.cover_open {
            Some(Error::NeedsOperator(m(codes::E302_COVER_OPEN, "DLE EOT 2")))
        } else if self.unrecoverable || self.cutter_error || self.error {
            Some(Error::Fatal(m(codes::E303_PRINTER_FAULT, "DLE EOT 3")))
        } else if self.offline {
            Some(Error::Offline("printer reports offline (DLE EOT 1)".into()))
        } else {
            None
        }
    }
}

/// A printer for non-fiscal tickets.
#[async_trait]
pub trait TicketPrinter: Send + Sync + std::fmt::Debug {
    /// Prints a ticket and reads the status after it.
    ///
    /// # Errors
    ///
    /// [`Error::NeedsOperator`] (paper, cover), [`Error::Fatal`],
    /// [`Error::Offline`] or [`Error::BadReply`] when the status after the
    /// job shows it did not print.
    async fn print_ticket(&self, ticket: &Ticket) -> Result<TicketStatus, Error>;

    /// Reads the real-time status.
    ///
    /// # Errors
    ///
    /// [`Error::Offline`] when the printer does not answer.
    async fn status(&self) -> Result<TicketStatus, Error>;
}

fn _obj_safe(_: &dyn TicketPrinter) {}

#[cfg(feature = "escpos")]
mod escpos_impl {
    use super::*;
    use escpos::driver::Driver;
    use escpos::printer::Printer;
    use escpos::utils::Protocol;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Collects the bytes the `escpos` crate generates.
    #[derive(Debug, Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Driver for Capture {
        fn name(&self) -> String {
            "capture".into()
        }
        fn write(&self, data: &[u8]) -> escpos::errors::Result<()> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(data);
            Ok(())
        }
        fn read(&self, _buf: &mut [u8]) -> escpos::errors::Result<usize> {
            Ok(0)
        }
        fn flush(&self) -> escpos::errors::Result<()> {
            Ok(())
        }
    }

    /// An ESC/POS printer on TCP (port 9100), documents built with the
    /// `escpos` crate.
    #[cfg_attr(docsrs, doc(cfg(feature = "escpos")))]
    #[derive(Debug, Clone)]
    pub struct EscPosPrinter {
        addr: String,
        timeout: Duration,
    }

    impl EscPosPrinter {
        /// A printer at `addr` (`host:9100`) with a 3 s I/O timeout.
        pub fn new(addr: impl Into<String>) -> Self {
            Self {
                addr: addr.into(),
                timeout: Duration::from_secs(3),
            }
        }

        /// Sets the I/O timeout. Default: 3 s.
        pub fn timeout(mut self, t: Duration) -> Self {
            self.timeout = t;
            self
        }

        /// The bytes of a ticket.
        ///
        /// # Errors
        ///
        /// [`Error::Invalid`] when the `escpos` crate rejects the content.
        pub fn render(ticket: &Ticket) -> Result<Vec<u8>, Error> {
            let cap = Capture::default();
            let bad = |_| Error::Invalid(crate::Invalid::BadText { line: 0 });
            let mut p = Printer::new(cap.clone(), Protocol::default(), None);
            p.init().map_err(bad)?;
            for line in &ticket.lines {
                match line {
                    TicketLine::Text(t) => {
                        p.writeln(t).map_err(bad)?;
                    }
                    TicketLine::Bold(t) => {
                        p.bold(true)
                            .map_err(bad)?
                            .writeln(t)
                            .map_err(bad)?
                            .bold(false)
                            .map_err(bad)?;
                    }
                    TicketLine::Large(t) => {
                        p.size(2, 2)
                            .map_err(bad)?
                            .writeln(t)
                            .map_err(bad)?
                            .reset_size()
                            .map_err(bad)?;
                    }
                    TicketLine::Feed(n) => {
                        p.feeds(*n).map_err(bad)?;
                    }
                }
            }
            if ticket.cut {
                p.print_cut().map_err(bad)?;
            } else {
                p.print().map_err(bad)?;
            }
            let bytes = cap.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
            Ok(bytes)
        }

        async fn poll(&self, s: &mut TcpStream) -> Result<TicketStatus, Error> {
            let mut r = [0u8; 4];
            for n in 1..=4u8 {
                s.write_all(&[0x10, 0x04, n]).await?;
                let mut b = [0u8; 1];
                tokio::time::timeout(self.timeout, s.read_exact(&mut b))
                    .await
                    .map_err(|_| Error::Offline(format!("no reply to DLE EOT {n}")))??;
                r[usize::from(n - 1)] = b[0];
            }
            TicketStatus::decode(r)
        }

        async fn connect(&self) -> Result<TcpStream, Error> {
            tokio::time::timeout(self.timeout, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| Error::Offline(format!("connect to {} timed out", self.addr)))?
                .map_err(|e| Error::Offline(format!("{}: {e}", self.addr)))
        }
    }

    #[async_trait]
    impl TicketPrinter for EscPosPrinter {
        async fn print_ticket(&self, ticket: &Ticket) -> Result<TicketStatus, Error> {
            let bytes = Self::render(ticket)?;
            let mut s = self.connect().await?;
            // Refuse to send into a printer that cannot print.
            let before = self.poll(&mut s).await?;
            if let Some(e) = before.job_error() {
                return Err(e);
            }
            s.write_all(&bytes).await?;
            let after = self.poll(&mut s).await?;
            match after.job_error() {
                Some(e) => Err(e),
                None => Ok(after),
            }
        }

        async fn status(&self) -> Result<TicketStatus, Error> {
            let mut s = self.connect().await?;
            self.poll(&mut s).await
        }
    }
}

#[cfg(feature = "escpos")]
pub use escpos_impl::EscPosPrinter;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::escpos::{SinkState, dle_eot_reply};

    #[test]
    fn decodes_dle_eot_replies() {
        let s = SinkState {
            paper_out: true,
            cover_open: true,
            ..SinkState::default()
        };
        let r = [1, 2, 3, 4].map(|n| dle_eot_reply(n, s));
        let t = TicketStatus::decode(r).unwrap();
        assert!(t.paper_out && t.cover_open && t.offline && t.paper_stop);
        assert!(matches!(t.job_error(), Some(Error::NeedsOperator(_))));
        let ok = TicketStatus::decode([1, 2, 3, 4].map(|n| dle_eot_reply(n, SinkState::default())));
        assert_eq!(ok.unwrap().job_error().map(|e| e.to_string()), None);
        assert!(TicketStatus::decode([0xFF; 4]).is_err());
    }
}
