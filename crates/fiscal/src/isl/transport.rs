//! Byte transports a link runs over: TCP, serial, or anything async.

use async_trait::async_trait;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Opens a fresh stream to a device; the link calls it again after the
/// stream fails.
#[async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// Opens a stream.
    async fn connect(&self) -> io::Result<Box<dyn Stream>>;
    /// A description for logs, e.g. `tcp://127.0.0.1:4999`.
    fn describe(&self) -> String;
}

fn _obj_safe(_: &dyn Connector) {}

/// TCP (LAN devices: X usually on port 4999, classic on 3999 or 9100).
#[derive(Debug, Clone)]
pub struct TcpConnector {
    addr: String,
    timeout: Duration,
}

impl TcpConnector {
    /// A connector to `addr` (`host:port`) with a 3 s connect timeout.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            timeout: Duration::from_secs(3),
        }
    }

    /// Sets the connect timeout. Default: 3 s.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

#[async_trait]
impl Connector for TcpConnector {
    async fn connect(&self) -> io::Result<Box<dyn Stream>> {
        let s = tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(&self.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    }

    fn describe(&self) -> String {
        format!("tcp://{}", self.addr)
    }
}

/// A serial port (RS-232 or USB-serial), 8N1.
#[cfg(feature = "serial")]
#[cfg_attr(docsrs, doc(cfg(feature = "serial")))]
#[derive(Debug, Clone)]
pub struct SerialConnector {
    path: String,
    baud: u32,
}

#[cfg(feature = "serial")]
impl SerialConnector {
    /// A connector to `path` (`/dev/ttyUSB0`, `COM3`) at `baud` (typically 115200 or 9600).
    pub fn new(path: impl Into<String>, baud: u32) -> Self {
        Self {
            path: path.into(),
            baud,
        }
    }
}

#[cfg(feature = "serial")]
#[async_trait]
impl Connector for SerialConnector {
    async fn connect(&self) -> io::Result<Box<dyn Stream>> {
        use tokio_serial::SerialPortBuilderExt;
        let port = tokio_serial::new(&self.path, self.baud)
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(tokio_serial::Parity::None)
            .stop_bits(tokio_serial::StopBits::One)
            .open_native_async()
            .map_err(io::Error::other)?;
        Ok(Box::new(port))
    }

    fn describe(&self) -> String {
        format!("serial://{}@{}", self.path, self.baud)
    }
}
