//! Application error codes and helpers to build JSON-RPC error objects.
//!
//! Standard codes (-32700 parse error, -32600 invalid request, -32601 method
//! not found, -32602 invalid params, -32603 internal) come from jsonrpsee; the
//! codes here sit in the range JSON-RPC reserves for implementation-defined
//! server errors.

use jsonrpsee::types::ErrorObjectOwned;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Application error codes, stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A job, chain, activity or log that does not exist.
    NotFound,
    /// Submitted parameters do not match the chain's declaration; `data` is a
    /// list of [`FieldError`].
    InvalidParameters,
    /// The caller's peer credentials do not allow this call.
    PermissionDenied,
    /// The object exists but is in a state that does not allow the call (for
    /// example cancelling a finished job).
    InvalidState,
    /// The daemon cannot do this now (the store cannot write, or it is
    /// shutting down).
    Unavailable,
}

impl ErrorCode {
    pub const fn code(self) -> i32 {
        match self {
            ErrorCode::NotFound => -32001,
            ErrorCode::InvalidParameters => -32002,
            ErrorCode::PermissionDenied => -32003,
            ErrorCode::InvalidState => -32004,
            ErrorCode::Unavailable => -32005,
        }
    }

    pub fn from_code(code: i32) -> Option<ErrorCode> {
        [
            ErrorCode::NotFound,
            ErrorCode::InvalidParameters,
            ErrorCode::PermissionDenied,
            ErrorCode::InvalidState,
            ErrorCode::Unavailable,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }

    /// Name used in docs and in hfctl's error lines.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidParameters => "INVALID_PARAMETERS",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    /// An error object with this code and a message.
    pub fn error(self, message: impl Into<String>) -> ErrorObjectOwned {
        ErrorObjectOwned::owned::<()>(self.code(), message.into(), None)
    }

    /// An error object with this code, a message and structured data.
    pub fn error_with<T: Serialize>(self, message: impl Into<String>, data: T) -> ErrorObjectOwned {
        ErrorObjectOwned::owned(self.code(), message.into(), Some(data))
    }
}

/// One bad field of a submission, listed in the `data` of INVALID_PARAMETERS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldError {
    /// The parameter name (or `target`, `tenant`, `priority`).
    pub field: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}
