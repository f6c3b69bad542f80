//! An ESC/POS sink on loopback: keeps what it receives and answers
//! `DLE EOT n` real-time status requests from a settable state.

use crate::error::Error;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the simulated ticket printer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkState {
    /// Paper end.
    pub paper_out: bool,
    /// Paper near end.
    pub paper_low: bool,
    /// Cover open.
    pub cover_open: bool,
    /// Offline.
    pub offline: bool,
}

#[derive(Debug, Default)]
struct Inner {
    state: SinkState,
    received: Vec<u8>,
    status_requests: u64,
}

/// A running ESC/POS sink.
#[derive(Debug, Clone)]
pub struct EscPosSink {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

/// The `DLE EOT n` reply byte for a state: fixed bits 1 and 4 set, bit 0
/// and 7 clear, the rest per the ESC/POS real-time status tables.
pub fn dle_eot_reply(n: u8, s: SinkState) -> u8 {
    let mut b = 0b0001_0010u8;
    match n {
        1 if s.offline || s.cover_open || s.paper_out => b |= 1 << 3,
        2 => {
            if s.cover_open {
                b |= 1 << 2;
            }
            if s.paper_out {
                b |= 1 << 5;
            }
        }
        4 => {
            if s.paper_low {
                b |= 0b0000_1100;
            }
            if s.paper_out {
                b |= 0b0110_0000;
            }
        }
        _ => {}
    }
    b
}

impl EscPosSink {
    /// Starts a sink on `addr` (e.g. `127.0.0.1:0`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the address cannot be bound.
    pub async fn start(addr: &str) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr).await?;
        let sink = Self {
            addr: listener.local_addr()?,
            inner: Arc::new(Mutex::new(Inner::default())),
        };
        let inner = sink.inner.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let inner = inner.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut prev = [0u8; 2];
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let mut replies = Vec::new();
                        {
                            let mut g = inner.lock().unwrap_or_else(|e| e.into_inner());
                            for &b in &buf[..n] {
                                if prev == [0x10, 0x04] && (1..=4).contains(&b) {
                                    let keep = g.received.len().saturating_sub(2);
                                    g.received.truncate(keep);
                                    replies.push(dle_eot_reply(b, g.state));
                                    g.status_requests += 1;
                                    prev = [0, 0];
                                    continue;
                                }
                                g.received.push(b);
                                prev = [prev[1], b];
                            }
                        }
                        if !replies.is_empty() && s.write_all(&replies).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(sink)
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets what the printer reports.
    pub fn set_state(&self, s: SinkState) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).state = s;
    }

    /// Everything received except the status requests.
    pub fn received(&self) -> Vec<u8> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .received
            .clone()
    }

    /// Status requests answered.
    pub fn status_requests(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status_requests
    }
}
