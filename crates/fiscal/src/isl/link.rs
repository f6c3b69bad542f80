//! The ISL link layer: one request, one reply, with the protocol's retry rules.
//!
//! * Every new request gets the next sequence number; the first one after a
//!   process start is random, so a restarted host never reuses the number
//!   the device saw last (the device would replay its old reply instead of
//!   executing).
//! * A timeout, a NAK or a corrupt reply resends the **same** frame with the
//!   **same** sequence number: the device executes a sequence number once
//!   and answers repeats with its cached reply.
//! * SYN bytes mean "busy": the wait starts again, up to a total budget.
//! * A reply with another sequence number (a late duplicate) is ignored; a
//!   reply with our sequence number but another command is a stale replay:
//!   the link moves to a fresh sequence number and sends again.
//! * When the connection breaks, the link does **not** resend on the new
//!   connection (the device may have restarted and lost its memory of the
//!   sequence number); it reports [`Error::Offline`] so the caller can read
//!   the device state first.

use super::Dialect;
use super::codec::{self, Decoder, Direction, Event, Frame};
use super::transport::{Connector, Stream};
use crate::error::Error;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Link timing and retry budget.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// How long to wait for a reply (or a SYN) before resending. Default: 500 ms.
    pub reply_timeout: Duration,
    /// How many times one frame is resent after timeouts, NAKs or corrupt
    /// replies before the link gives up. Default: 5.
    pub max_resends: u32,
    /// Longest total wait while the device keeps sending SYN. Default: 60 s.
    pub max_busy: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            reply_timeout: Duration::from_millis(500),
            max_resends: 5,
            max_busy: Duration::from_secs(60),
        }
    }
}

/// Counters of what the link has seen, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames written, including resends.
    pub frames_sent: u64,
    /// Resends of the same sequence number.
    pub resends: u64,
    /// NAKs received.
    pub naks: u64,
    /// SYNs received.
    pub syns: u64,
    /// Corrupt frames received.
    pub bad_frames: u64,
    /// Replies ignored because of their sequence number.
    pub stale_replies: u64,
    /// Connections opened.
    pub connects: u64,
}

/// One ISL link to one device.
#[derive(Debug)]
pub struct Link {
    dialect: Dialect,
    connector: Arc<dyn Connector>,
    conn: Option<Box<dyn Stream>>,
    decoder: Decoder,
    seq: u8,
    cfg: LinkConfig,
    stats: LinkStats,
}

impl std::fmt::Debug for dyn Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stream")
    }
}

impl Link {
    /// A link over `connector`, starting at a random sequence number.
    pub fn new(dialect: Dialect, connector: Arc<dyn Connector>, cfg: LinkConfig) -> Self {
        let seq = rand::rng().random_range(0x20..=0x7Fu8);
        Self {
            dialect,
            connector,
            conn: None,
            decoder: Decoder::new(dialect, Direction::Reply),
            seq,
            cfg,
            stats: LinkStats::default(),
        }
    }

    /// A link whose first request uses sequence number `seq + 1` (for tools
    /// and tests; [`Link::new`] picks a random start).
    pub fn starting_at(
        dialect: Dialect,
        connector: Arc<dyn Connector>,
        cfg: LinkConfig,
        seq: u8,
    ) -> Self {
        let mut l = Self::new(dialect, connector, cfg);
        l.seq = seq.clamp(0x20, 0x7F);
        l
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// What the link has seen so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// The sequence number of the last request.
    pub fn last_seq(&self) -> u8 {
        self.seq
    }

    /// Drops the connection; the next request reconnects.
    pub fn disconnect(&mut self) {
        self.conn = None;
        self.decoder.clear();
    }

    fn next_seq(&mut self) {
        self.seq = if self.seq >= 0x7F { 0x20 } else { self.seq + 1 };
    }

    async fn ensure_connected(&mut self) -> Result<(), Error> {
        if self.conn.is_none() {
            let c = self
                .connector
                .connect()
                .await
                .map_err(|e| Error::Offline(format!("{}: {e}", self.connector.describe())))?;
            self.stats.connects += 1;
            self.decoder.clear();
            self.conn = Some(c);
        }
        Ok(())
    }

    fn offline(&mut self, why: impl Into<String>) -> Error {
        self.disconnect();
        Error::Offline(why.into())
    }

    /// Sends one command and returns the device's reply frame.
    ///
    /// # Errors
    ///
    /// * [`Error::Offline`]: no connection, the connection broke, or no reply
    ///   after every resend. The device may have executed the command.
    /// * [`Error::Protocol`]: NAKs or corrupt replies after every resend.
    /// * [`Error::Invalid`]: the frame cannot be encoded (data too long).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call leaves the command's fate unknown.
    pub async fn transact(&mut self, cmd: u16, data: &[u8]) -> Result<Frame, Error> {
        self.ensure_connected().await?;
        self.next_seq();
        let mut frame = codec::encode_request(self.dialect, self.seq, cmd, data)
            .map_err(|e| Error::Protocol(format!("cannot encode command {cmd:#x}: {e}")))?;
        let mut resends = 0u32;
        let mut last_problem = String::from("no reply");
        'send: loop {
            if resends > self.cfg.max_resends {
                return Err(if last_problem == "no reply" {
                    self.offline(format!(
                        "no reply to command {cmd:#x} after {} resends",
                        self.cfg.max_resends
                    ))
                } else {
                    self.disconnect();
                    Error::Protocol(format!("command {cmd:#x}: {last_problem}"))
                });
            }
            let Some(conn) = self.conn.as_mut() else {
                return Err(self.offline("connection lost"));
            };
            if let Err(e) = conn.write_all(&frame).await {
                return Err(self.offline(format!("write failed: {e}")));
            }
            self.stats.frames_sent += 1;
            let busy_until = Instant::now() + self.cfg.max_busy;
            let mut deadline = Instant::now() + self.cfg.reply_timeout;
            loop {
                // Drain decoded events first.
                while let Some(ev) = self.decoder.next_event() {
                    match ev {
                        Event::Syn => {
                            self.stats.syns += 1;
                            let now = Instant::now();
                            if now < busy_until {
                                deadline = (now + self.cfg.reply_timeout).min(busy_until);
                            }
                        }
                        Event::Nak => {
                            self.stats.naks += 1;
                            last_problem = "device kept answering NAK".into();
                            resends += 1;
                            self.stats.resends += 1;
                            continue 'send;
                        }
                        Event::Bad(e) => {
                            self.stats.bad_frames += 1;
                            last_problem = format!("corrupt replies ({e})");
                            // Wait out the rest of the frame, then resend.
                            self.decoder.clear();
                            resends += 1;
                            self.stats.resends += 1;
                            continue 'send;
                        }
                        Event::Frame(f) if f.seq == self.seq && f.cmd == cmd => return Ok(f),
                        Event::Frame(f) if f.seq == self.seq => {
                            // The device replayed an older reply for this
                            // sequence number: take a fresh one and resend.
                            self.stats.stale_replies += 1;
                            self.next_seq();
                            frame = codec::encode_request(self.dialect, self.seq, cmd, data)
                                .map_err(|e| Error::Protocol(e.to_string()))?;
                            tracing::debug!(seq = f.seq, "stale replay; new sequence number");
                            resends += 1;
                            continue 'send;
                        }
                        Event::Frame(_) => self.stats.stale_replies += 1,
                    }
                }
                let mut buf = [0u8; 512];
                let Some(conn) = self.conn.as_mut() else {
                    return Err(self.offline("connection lost"));
                };
                match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
                    Err(_) => {
                        resends += 1;
                        self.stats.resends += 1;
                        last_problem = "no reply".into();
                        continue 'send;
                    }
                    Ok(Ok(0)) => return Err(self.offline("connection closed by the device")),
                    Ok(Ok(n)) => self.decoder.push(&buf[..n]),
                    Ok(Err(e)) => return Err(self.offline(format!("read failed: {e}"))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isl::codec::encode_reply;
    use async_trait::async_trait;
    use tokio::io::DuplexStream;
    use tokio::sync::Mutex;

    #[derive(Debug)]
    struct Once(Mutex<Option<DuplexStream>>);

    #[async_trait]
    impl Connector for Once {
        async fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
            self.0
                .lock()
                .await
                .take()
                .map(|s| Box::new(s) as Box<dyn Stream>)
                .ok_or_else(|| std::io::Error::other("gone"))
        }
        fn describe(&self) -> String {
            "duplex".into()
        }
    }

    async fn read_frame(s: &mut DuplexStream, d: &mut Decoder) -> Frame {
        let mut buf = [0u8; 256];
        loop {
            if let Some(Event::Frame(f)) = d.next_event() {
                return f;
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            d.push(&buf[..n]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn resends_same_seq_after_nak_timeout_and_ignores_duplicates() {
        let (a, mut dev) = tokio::io::duplex(4096);
        let mut link = Link::new(
            Dialect::X,
            Arc::new(Once(Mutex::new(Some(a)))),
            LinkConfig::default(),
        );
        let device = tokio::spawn(async move {
            let mut d = Decoder::new(Dialect::X, Direction::Request);
            let f1 = read_frame(&mut dev, &mut d).await;
            dev.write_all(&[codec::NAK]).await.unwrap();
            let f2 = read_frame(&mut dev, &mut d).await;
            assert_eq!(f2.seq, f1.seq, "NAK resend keeps the sequence number");
            // say nothing: the host times out and resends
            let f3 = read_frame(&mut dev, &mut d).await;
            assert_eq!(f3.seq, f1.seq, "timeout resend keeps the sequence number");
            // busy for a while, then a stale duplicate of an older reply, then the answer
            for _ in 0..20 {
                dev.write_all(&[codec::SYN]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            let older = if f1.seq == 0x20 { 0x21 } else { f1.seq - 1 };
            let old = encode_reply(Dialect::X, older, 0x4A, b"1\t", &[0x80; 8]).unwrap();
            dev.write_all(&old).await.unwrap();
            let r = encode_reply(Dialect::X, f1.seq, f1.cmd, b"0\t", &[0x80; 8]).unwrap();
            dev.write_all(&r).await.unwrap();
            dev
        });
        let reply = link.transact(0x4A, b"").await.unwrap();
        assert_eq!(reply.data, b"0\t");
        let st = link.stats();
        assert_eq!(st.frames_sent, 3);
        assert_eq!(st.naks, 1);
        assert_eq!(st.syns, 20);
        assert!(st.stale_replies <= 1);
        let _dev = device.await.unwrap();
    }

    #[tokio::test]
    async fn a_restarted_host_that_reuses_the_last_seq_is_not_fooled_by_the_replay() {
        use crate::isl::transport::TcpConnector;
        use crate::sim::{SimConfig, Simulator};
        let sim = Simulator::start(SimConfig::new(Dialect::X)).await.unwrap();
        let conn: Arc<dyn Connector> = Arc::new(TcpConnector::new(sim.addr().to_string()));
        let mut a = Link::starting_at(Dialect::X, conn.clone(), LinkConfig::default(), 0x40);
        let r = a.transact(0x4A, b"").await.unwrap();
        assert_eq!((r.seq, r.cmd), (0x41, 0x4A));
        drop(a);
        // The "restarted" host happens to start at the number the device saw last.
        let mut b = Link::starting_at(Dialect::X, conn, LinkConfig::default(), 0x40);
        let r = b.transact(0x71, b"").await.unwrap();
        assert_eq!(
            r.cmd, 0x71,
            "the replayed reply to 0x4A was not taken as ours"
        );
        assert_eq!(r.seq, 0x42);
        assert_eq!(b.stats().stale_replies, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_budget_and_reports_offline() {
        let (a, _dev) = tokio::io::duplex(4096);
        let mut link = Link::new(
            Dialect::Classic,
            Arc::new(Once(Mutex::new(Some(a)))),
            LinkConfig::default(),
        );
        let e = link.transact(0x4A, b"").await.unwrap_err();
        assert!(matches!(e, Error::Offline(_)), "{e}");
        assert_eq!(link.stats().frames_sent, 6);
        // The connector is spent: the next call fails to connect.
        assert!(matches!(
            link.transact(0x4A, b"").await,
            Err(Error::Offline(_))
        ));
    }
}
