//! HoldFast's wire contract: the JSON-RPC method trait, the types that cross the
//! socket, the application error codes and a client that speaks WebSocket over
//! the Unix socket.
//!
//! This crate holds no SQLite and no process code: both `holdfastd` and `hfctl`
//! depend on it, and it depends on neither.

pub mod client;
pub mod error;
pub mod openrpc;
pub mod rpc;
pub mod types;

pub use error::{ErrorCode, FieldError};
pub use types::*;

/// Bumped whenever a method or a wire type changes incompatibly. `hfctl`
/// compares it with `daemon.info` before doing anything else.
pub const PROTOCOL_VERSION: u32 = 2;
