//! Support for HoldFast's end-to-end tests and benchmark: a `TestDaemon`
//! fixture that runs the real `holdfastd` in a temporary directory, and helpers
//! that drive it with the real `hfctl`, the JSON-RPC client and raw HTTP.

pub mod cgroup;
pub mod command;
pub mod daemon;
pub mod http;
pub mod poll;
pub mod process;
pub mod slurm;
pub mod users;
pub mod ws;

pub use command::{
    HFCTL_TIMEOUT, bin_dir, bin_path, finish_child, finish_child_output, hfctl_command,
    holdfastd_command, run_with_deadline,
};
pub use daemon::{BIN_PLACEHOLDER, DIR_PLACEHOLDER, JOB_TIMEOUT, TestDaemon, watch_job};
pub use poll::eventually;
