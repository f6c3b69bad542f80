//! The crate's error type.

use crate::message::{Code, DeviceMessage, codes};
use crate::validate::Invalid;

/// Everything that can go wrong talking to a printer or its journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The document failed validation; nothing was sent to the device.
    #[error("invalid document: {0}")]
    Invalid(#[from] Invalid),
    /// The device did not answer (connection refused, closed, or no reply
    /// after every retransmission). The command may or may not have run.
    #[error("device unreachable: {0}")]
    Offline(String),
    /// Frames from the device stayed corrupt after every retransmission.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The device is serving another connection.
    #[error("device busy with another connection")]
    Busy,
    /// A person must act: paper out, cover open, head hot.
    #[error("device needs an operator: {0}")]
    NeedsOperator(DeviceMessage),
    /// The device refuses fiscal documents until a Z report is printed.
    #[error("z report required: {0}")]
    ZReportRequired(DeviceMessage),
    /// The device refused the command (syntax, mode, payment, ErrorCode).
    #[error("rejected by the device: {0}")]
    Rejected(DeviceMessage),
    /// The fiscal memory or journal is full or broken: service needed.
    #[error("device fault: {0}")]
    Fatal(DeviceMessage),
    /// A reply the driver could not understand.
    #[error("unexpected reply: {0}")]
    BadReply(String),
    /// The job id was used before for a different job.
    #[error("job {0} was submitted before with different content")]
    Conflict(String),
    /// The operation is not supported by this driver or device.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// The device actor has stopped.
    #[error("printer actor stopped")]
    Stopped,
    /// The journal's database failed.
    #[error("journal backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An I/O error outside the device link (files, sockets of the simulator).
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The standard code of this error (`E101`, `E301`, ...), when it has one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Offline(_) => Some(codes::E101_NO_RESPONSE.code),
            Error::Protocol(_) | Error::BadReply(_) => Some(codes::E107_BAD_FRAME.code),
            Error::Busy => Some(codes::E108_BUSY.code),
            Error::NeedsOperator(m)
            | Error::ZReportRequired(m)
            | Error::Rejected(m)
            | Error::Fatal(m) => Some(m.code.as_str()),
            _ => None,
        }
    }

    /// True when the device may have executed the command without us seeing
    /// the reply: the outcome must be read back from the device.
    pub fn is_in_doubt(&self) -> bool {
        matches!(
            self,
            Error::Offline(_) | Error::Protocol(_) | Error::BadReply(_) | Error::Busy
        )
    }

    pub(crate) fn from_code(code: Code, origin: impl Into<String>) -> Self {
        let m = DeviceMessage::new(code, origin);
        match code.code {
            "E301" | "E302" | "E304" => Error::NeedsOperator(m),
            "E502" => Error::ZReportRequired(m),
            "E201" | "E202" | "E203" | "E204" | "E206" | "E303" => Error::Fatal(m),
            _ => Error::Rejected(m),
        }
    }

    pub(crate) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Backend(Box::new(e))
    }
}
