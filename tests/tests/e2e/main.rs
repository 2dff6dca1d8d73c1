//! HoldFast end to end: each test starts the real `holdfastd` in its own
//! temporary directory and drives it with the real `hfctl`, the JSON-RPC
//! client and raw HTTP on the Unix socket.

mod activity;
mod audit;
mod cancel;
mod cgroups;
mod chaos;
mod cli;
mod config;
mod control;
mod durability;
mod events;
mod failure;
mod faults;
mod flood;
mod hostile;
mod integrity;
mod logs;
mod notifications;
mod outputs;
mod params;
mod policy;
mod privilege;
mod reload;
mod reprocess;
mod restart;
mod rpc;
mod run;
mod schedules;
mod secrets;
mod support;
mod systemd;
mod users;
