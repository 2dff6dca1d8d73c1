//! The commit pipeline when a commit fails: a batch the engine handed to
//! the store while an earlier one was still committing is not written on
//! top of that failure. Both come back, their submissions are refused,
//! nothing of them is stored later, and the daemon goes on once the store
//! can write again.

use std::fs;
use std::time::Duration;

use holdfast_api::JobState;
use holdfast_tests::{TestDaemon, eventually};

use crate::faults::{QUICK, listed_ids};
use crate::support::shown;

/// hfctl's exit code for UNAVAILABLE.
const EXIT_UNAVAILABLE: i32 = 11;

/// Whether the daemon's store writer is asleep in a system call that
/// sleeps for a time (SQLite's busy handler waiting for the write lock:
/// `nanosleep` or `clock_nanosleep`), as opposed to waiting for work.
fn writer_waits_for_the_lock(pid: u32) -> Result<(), String> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
    for task in tasks.flatten() {
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "store-writer" {
            continue;
        }
        let syscall = fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
        let number = syscall.split_whitespace().next().unwrap_or("");
        return match number {
            "35" | "230" => Ok(()),
            other => Err(format!("the store writer is in system call {other:?}")),
        };
    }
    Err("no store-writer thread".into())
}

/// The daemon's log from byte `from` on.
fn log_since(daemon: &TestDaemon, from: usize) -> String {
    let log = fs::read(daemon.log_path()).unwrap_or_default();
    String::from_utf8_lossy(&log[from.min(log.len())..]).into_owned()
}

/// Another connection holds SQLite's write lock, so the writer's commit
/// of a first submission waits and then fails (SQLITE_BUSY). A second
/// submission's batch is handed over meanwhile, behind the first: it must
/// come back with it unapplied, not be committed on its own, and both
/// submissions are refused as UNAVAILABLE.
#[test]
fn a_batch_handed_over_behind_one_that_fails_is_refused_with_it() {
    let mut daemon = TestDaemon::prepare(None, &[("quick.toml", QUICK)]);
    daemon.set_env(
        "RUST_LOG",
        "holdfastd=trace,hyper=warn,jsonrpsee=warn,soketto=warn",
    );
    daemon.launch();
    let first = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(first).state, JobState::Succeeded);
    let pid = daemon.pid().expect("the daemon runs");

    let lock = rusqlite::Connection::open(daemon.state_dir().join("holdfast.db"))
        .expect("the database opens");
    lock.execute_batch("BEGIN IMMEDIATE")
        .expect("the write lock is taken");

    let a = daemon.hfctl_spawn(&["--json", "submit", "quick"]);
    eventually(
        Duration::from_secs(20),
        "the writer waits for the lock with the first submission",
        || writer_waits_for_the_lock(pid),
    );
    let from = fs::metadata(daemon.log_path()).map_or(0, |m| m.len() as usize);
    let b = daemon.hfctl_spawn(&["--json", "submit", "quick"]);
    eventually(
        Duration::from_secs(4),
        "the second submission's batch is handed over behind the first",
        || {
            let log = log_since(&daemon, from);
            if log
                .lines()
                .any(|l| l.contains("batch handed to the store") && l.contains("behind=Some"))
            {
                Ok(())
            } else {
                Err("not yet")
            }
        },
    );

    // The first commit fails when SQLite's busy timeout (5 s) runs out;
    // the second batch must come back with it.
    eventually(
        Duration::from_secs(20),
        "the second batch comes back with the failed first",
        || {
            if log_since(&daemon, from).contains("put back with it") {
                Ok(())
            } else {
                Err("not yet")
            }
        },
    );
    // Let go of the lock before collecting the answers: the refusals'
    // audit rows are written before they are answered.
    lock.execute_batch("ROLLBACK").expect("the lock is let go");
    drop(lock);
    for (name, child) in [("first", a), ("second", b)] {
        let output = child.wait_with_output().expect("hfctl ends");
        assert_eq!(
            output.status.code(),
            Some(EXIT_UNAVAILABLE),
            "the {name} submission is refused as UNAVAILABLE: {}",
            shown(&output)
        );
    }
    let after = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(after).state, JobState::Succeeded);
    assert_eq!(
        listed_ids(&daemon),
        vec![first, after],
        "neither refused submission was stored"
    );
}
