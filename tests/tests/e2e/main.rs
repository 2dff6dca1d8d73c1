//! HoldFast end to end: each test starts the real `holdfastd` in its own
//! temporary directory and drives it with the real `hfctl`, the JSON-RPC
//! client and raw HTTP on the Unix socket.

mod activity;
mod cancel;
mod cli;
mod failure;
mod logs;
mod params;
mod restart;
mod rpc;
mod run;
mod support;
