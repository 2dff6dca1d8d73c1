//! HoldFast end to end: each test starts the real `holdfastd` in its own
//! temporary directory and drives it with the real `hfctl`, the JSON-RPC
//! client and raw HTTP on the Unix socket.

mod activity;
mod audit;
mod backfill;
mod cancel;
mod cgroups;
mod chaos;
mod cli;
mod config;
mod connections;
mod control;
mod dates;
mod dos;
mod durability;
mod events;
mod failure;
mod faults;
mod flood;
mod handlers;
mod hostile;
mod integrity;
mod logs;
mod notifications;
mod outputs;
mod params;
mod partial_runs;
mod policy;
mod privilege;
mod recovery_reuse;
mod reload;
mod reprocess;
mod restart;
mod review_findings;
mod rpc;
mod run;
mod schedules;
mod secrets;
mod secrets_key;
mod slurm;
mod slurm_restart;
mod socket_umask;
mod support;
mod systemd;
mod tenant_params;
mod users;
