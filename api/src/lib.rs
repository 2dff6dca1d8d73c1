//! HoldFast's wire contract: the JSON-RPC method trait, the types that cross the
//! socket, the application error codes and two clients over the Unix socket:
//! WebSocket (subscriptions) and one-shot HTTP calls.
//!
//! This crate holds no SQLite and no process code: both `holdfastd` and `hfctl`
//! depend on it, and it depends on neither.

pub mod client;
pub mod error;
pub mod oneshot;
pub mod openrpc;
pub mod rpc;
pub mod types;

pub use error::{ErrorCode, FieldError};
pub use types::*;

/// Bumped whenever a method or a wire type changes incompatibly. `hfctl`
/// sends it with every one-shot call (the daemon refuses another before
/// carrying the call out) and compares it with `daemon.info` before
/// anything else on a WebSocket.
pub const PROTOCOL_VERSION: u32 = 2;
