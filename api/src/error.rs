//! Application error codes and helpers to build JSON-RPC error objects.
//!
//! Standard codes (-32700 parse error, -32600 invalid request, -32601 method
//! not found, -32602 invalid params, -32603 internal) come from jsonrpsee,
//! which also uses -32000 to -32011 of the range JSON-RPC reserves for the
//! implementation (-32006 too many subscriptions, -32007 request too big,
//! and -32001 and -32005 that protocol 1 used here too). The codes here sit
//! outside -32768..-32000, in the space JSON-RPC leaves to applications, so
//! no library code can ever be read as one of them.

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
            ErrorCode::NotFound => -31001,
            ErrorCode::InvalidParameters => -31002,
            ErrorCode::PermissionDenied => -31003,
            ErrorCode::InvalidState => -31004,
            ErrorCode::Unavailable => -31005,
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
