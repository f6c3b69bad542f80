//! A loopback TCP proxy whose link can be cut: while cut, every open
//! connection is dropped and new ones are refused, as when a restaurant's
//! internet link goes down.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A running proxy.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port to `target`.
    pub(crate) async fn start(
        target: SocketAddr,
        stop: CancellationToken,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, _) = watch::channel(false);
        let tx = cut.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((inbound, _)) = accepted else { continue };
                if *tx.borrow() {
                    drop(inbound);
                    continue;
                }
                let rx = tx.subscribe();
                let stop = stop.clone();
                tokio::spawn(pipe(inbound, target, rx, stop));
            }
        });
        Ok(Proxy { addr, cut })
    }

    /// Cuts (`true`) or restores (`false`) the link.
    pub(crate) fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

async fn pipe(
    mut inbound: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        () = stop.cancelled() => {}
        _ = cut.wait_for(|c| *c) => {}
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_and_cuts() {
        let stop = CancellationToken::new();
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let p = Proxy::start(target, stop.clone()).await.unwrap();
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        p.set_cut(true);
        // The open connection is dropped…
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        // …and new ones get nothing through.
        let mut d = TcpStream::connect(p.addr).await.unwrap();
        let _ = d.write_all(b"x").await;
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), d.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        p.set_cut(false);
        let mut e = TcpStream::connect(p.addr).await.unwrap();
        e.write_all(b"pong").await.unwrap();
        e.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        stop.cancel();
    }
}
