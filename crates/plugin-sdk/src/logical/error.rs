use thiserror::Error;

/// An error a backend returns to the host. Each variant maps to one way the host reports it
/// (see `plugin-protocol.md` §8.1): user errors become HTTP 400 with the message, internal
/// errors HTTP 500 with the message, and the well-known values keep the host's own text.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LogicalError {
    /// Bad input from the caller: HTTP 400 with this message.
    #[error("{0}")]
    BadRequest(String),
    /// A failure inside the backend or a dependency: HTTP 500 with this message.
    #[error("{0}")]
    Internal(String),
    /// An error with an explicit HTTP status.
    #[error("{message}")]
    Coded {
        /// The HTTP status.
        status: u16,
        /// The message.
        message: String,
    },
    /// The operation is not supported on this path (HTTP 405).
    #[error("unsupported operation")]
    UnsupportedOperation,
    /// No path of the backend matches (HTTP 404).
    #[error("unsupported path")]
    UnsupportedPath,
    /// The caller may not do this (HTTP 403).
    #[error("permission denied")]
    PermissionDenied,
    /// This node cannot serve the request because it writes (a performance standby, or a
    /// performance secondary for a replicated mount): the Go SDK's `logical.ErrReadOnly`.
    /// The host recognises its text and forwards the request to the node that can write.
    #[error("{}", READ_ONLY_MESSAGE)]
    ReadOnly,
}

/// The text of the Go SDK's `logical.ErrReadOnly`; the host matches it to forward a request.
pub const READ_ONLY_MESSAGE: &str = "cannot write to readonly storage";

impl LogicalError {
    /// A [`LogicalError::BadRequest`] with `msg`.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    /// A [`LogicalError::Internal`] with `msg`.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::Internal(msg.into())
    }

    /// True when this error carries the host's read-only refusal (the host then forwards
    /// the request to the active node).
    pub fn is_read_only(&self) -> bool {
        self.to_string().contains(super::READ_ONLY_ERROR)
    }
}

/// A storage failure is an internal error; the host's read-only refusal keeps the host's
/// exact text so the host recognises it and forwards the request.
impl From<super::StorageError> for LogicalError {
    fn from(e: super::StorageError) -> Self {
        Self::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logical::StorageError;

    #[test]
    fn read_only_refusal_keeps_the_host_text() {
        let host = "cannot write to readonly storage";
        let e = StorageError::from_host("put", "wal/x", host);
        assert!(e.is_read_only());
        let l = LogicalError::from(e);
        assert_eq!(l, LogicalError::Internal(host.to_string()));
        assert!(l.is_read_only());
        let other = StorageError::from_host("put", "wal/x", "boom");
        assert!(!other.is_read_only());
        assert!(!LogicalError::from(other).is_read_only());
    }
}
