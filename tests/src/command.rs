//! Finding the workspace's binaries and running them with a deadline, so a
//! hung process fails its test instead of hanging the suite.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Upper bound for one `hfctl` run.
pub const HFCTL_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory holding `holdfastd` and `hfctl`: `HOLDFAST_BIN_DIR`, or the
/// cargo profile directory this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOLDFAST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let mut dir = exe
        .parent()
        .expect("the test binary lives in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of one of the workspace's binaries; panics with what to do when it
/// has not been built.
pub fn bin_path(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{name} not found at {}; build the binaries first (`cargo build --workspace --bins`) \
         or point HOLDFAST_BIN_DIR at the directory that holds them",
        path.display()
    );
    path
}

/// Remove the caller's HoldFast environment so that only the paths a test
/// passes are used.
fn isolate(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HOLDFAST_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("NOTIFY_SOCKET");
    cmd.env("NO_COLOR", "1");
    // A UTF-8 locale, whatever the machine's: hfctl draws trees and bars
    // with box-drawing characters only then (tests of the ASCII fallback
    // set their own).
    cmd.env("LC_ALL", "C.UTF-8");
}

/// A `holdfastd --user` command with every path given explicitly.
pub fn holdfastd_command(
    config: &Path,
    socket: &Path,
    state_dir: &Path,
    workflows_dir: &Path,
) -> Command {
    let mut cmd = Command::new(bin_path("holdfastd"));
    cmd.arg("--user")
        .arg("--config")
        .arg(config)
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--workflows-dir")
        .arg(workflows_dir)
        .arg("-v")
        .stdin(Stdio::null());
    isolate(&mut cmd);
    cmd
}

/// An `hfctl --socket SOCKET` command; append the rest of the arguments.
pub fn hfctl_command(socket: &Path) -> Command {
    let mut cmd = Command::new(bin_path("hfctl"));
    cmd.arg("--socket").arg(socket).stdin(Stdio::null());
    isolate(&mut cmd);
    cmd
}

/// Run `cmd` to completion, capturing its output; kill it and panic if it
/// takes longer than `timeout`.
pub fn run_with_deadline(mut cmd: Command, timeout: Duration) -> Output {
    let description = format!("{cmd:?}");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {description}: {e}"));
    finish_child_output(child, timeout)
}

/// Collect the output of a child spawned with piped stdout and stderr; kill it
/// and panic if it takes longer than `timeout`.
pub fn finish_child_output(child: Child, timeout: Duration) -> Output {
    let pid = child.id();
    let (output, killed) = finish_child(child, timeout);
    let output = output.unwrap_or_else(|e| panic!("cannot collect the output of pid {pid}: {e}"));
    assert!(
        !killed,
        "pid {pid} did not finish within {timeout:?}; it was killed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Collect a child's output, killing it after `timeout`. The second value
/// says whether it had to be killed.
pub fn finish_child(child: Child, timeout: Duration) -> (std::io::Result<Output>, bool) {
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel();
    thread::scope(|scope| {
        let waiter = scope.spawn(move || {
            let output = child.wait_with_output();
            let _ = done_tx.send(());
            output
        });
        let killed = done_rx.recv_timeout(timeout).is_err();
        if killed {
            let _ = kill(pid_of(pid), Signal::SIGKILL);
        }
        let output = waiter
            .join()
            .expect("the thread collecting a child's output does not panic");
        (output, killed)
    })
}

/// Wait for a child whose output goes elsewhere, killing it after `timeout`.
pub(crate) fn wait_child(
    child: &mut Child,
    timeout: Duration,
) -> (std::io::Result<ExitStatus>, bool) {
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel();
    thread::scope(|scope| {
        let waiter = scope.spawn(move || {
            let status = child.wait();
            let _ = done_tx.send(());
            status
        });
        let killed = done_rx.recv_timeout(timeout).is_err();
        if killed {
            let _ = kill(pid_of(pid), Signal::SIGKILL);
        }
        let status = waiter
            .join()
            .expect("the thread waiting for a child does not panic");
        (status, killed)
    })
}

pub(crate) fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).expect("pids fit in i32"))
}
