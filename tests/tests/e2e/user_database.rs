//! A user database that does not answer (LDAP or SSSD down, a hung NSS
//! module) holds back only the attempts that need it: a run-as attempt
//! waits for its user, while every other job is submitted, started and
//! finished as usual; a waiting one is cancelled at once; and the waiting
//! one runs once the database answers.
//!
//! The database is made to hang for real, for the daemon alone: the daemon
//! runs in a mount namespace of its own, where `/etc/passwd` is covered by
//! a FIFO, and glibc's `files` module blocks in `open` until a writer
//! comes. (It then cannot read a FIFO, which cannot seek, and answers "no
//! such user": the attempt fails and its retry, with the real file back,
//! runs.) Needs root and the run-as account, as the other run-as tests do
//! (`HOLDFAST_USERS_TEST=required` makes their absence a failure).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use holdfast_api::JobState;
use holdfast_tests::{TestDaemon, eventually};

use crate::support::shown;
use crate::users::accounts_or_skip;

/// How long the daemon gets to reach the FIFO once the run-as job is in.
const REACH_DEADLINE: Duration = Duration::from_secs(30);

/// Run `args` inside the daemon's mount namespace; it must succeed.
fn in_namespace(pid: u32, args: &[&str]) {
    let output = Command::new("nsenter")
        .arg(format!("--target={pid}"))
        .arg("--mount")
        .arg("--")
        .args(args)
        .output()
        .expect("nsenter can be run");
    assert!(
        output.status.success(),
        "nsenter {args:?} in the daemon's namespace: {}",
        shown(&output)
    );
}

/// The number of the daemon's threads that wait in `open` of a FIFO for its
/// writer, when at least `least`.
fn opening_a_fifo(pid: u32, least: usize) -> Result<usize, String> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
    let waiting = tasks
        .flatten()
        .filter(|task| {
            fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w == "wait_for_partner")
        })
        .count();
    if waiting < least {
        return Err(format!("{waiting} threads in wait_for_partner"));
    }
    Ok(waiting)
}

#[test]
fn a_hung_user_database_holds_back_only_the_attempts_that_need_it() {
    let test = "a_hung_user_database_holds_back_only_the_attempts_that_need_it";
    let Some(accounts) = accounts_or_skip(test) else {
        return;
    };
    // With nscd the daemon would ask it, not read the file: the FIFO
    // would never be reached.
    assert!(
        !Path::new("/var/run/nscd/socket").exists(),
        "{test} needs a host without nscd (glibc reads /etc/passwd itself)"
    );
    let target = &accounts.run_as;
    let mut daemon = TestDaemon::prepare(
        Some("run_as_allowed = [\"hft-runas\"]\nmax_parallel = 4\n"),
        &[
            (
                "as-user.toml",
                "[process.p.activity.a]\nuser = \"hft-runas\"\ncommand = [\"id\", \"-u\"]\n\
                 retries = 1\nretry_delay = \"10ms\"\n",
            ),
            (
                "plain.toml",
                "[process.p.activity.a]\ncommand = [\"true\"]\n",
            ),
        ],
    );
    daemon.in_own_mount_namespace();
    daemon.launch();
    let pid = daemon.pid().expect("the daemon runs");

    // A first job: the daemon learns (and keeps) the name of the test's
    // uid while the database still answers.
    let first = daemon.submit("plain", &[]);
    assert_eq!(daemon.wait_done(first).state, JobState::Succeeded);

    let fifo = daemon.dir().join("passwd.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644))
        .expect("the FIFO can be made");
    let fifo_text = fifo.display().to_string();
    in_namespace(pid, &["mount", "--bind", &fifo_text, "/etc/passwd"]);

    let waiting = daemon.submit("as-user", &[]);
    let cancelled = daemon.submit("as-user", &[]);
    eventually(
        REACH_DEADLINE,
        "the daemon looks up hft-runas for both jobs and waits for the user database",
        || opening_a_fifo(pid, 2),
    );

    // Meanwhile the engine is free: a job is submitted, run and done.
    let other = daemon.submit("plain", &[]);
    assert_eq!(
        daemon.wait_done(other).state,
        JobState::Succeeded,
        "a job without a user runs while the user database hangs"
    );
    // A waiting attempt is cancelled without waiting for the database.
    let cancel = daemon.hfctl(&["cancel", &cancelled.to_string()]);
    assert!(cancel.status.success(), "{}", shown(&cancel));
    assert_eq!(daemon.wait_done(cancelled).state, JobState::Cancelled);
    let held = daemon.status(waiting);
    assert_eq!(
        held.state,
        JobState::Running,
        "the other run-as job waits for its user: {held:#?}"
    );
    assert!(
        opening_a_fifo(pid, 2).is_ok(),
        "both look-ups are still waiting after the other job ran"
    );

    // The database comes back: the real file for later look-ups, and a
    // writer at last for the one under way, which then fails to read the
    // FIFO (the attempt fails; its retry runs).
    in_namespace(pid, &["umount", "--lazy", "/etc/passwd"]);
    drop(
        fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("the FIFO can be opened for writing"),
    );
    let done = daemon.wait_done(waiting);
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(
        daemon.logs(waiting, "p.a", Some(2)).trim(),
        target.uid.to_string(),
        "the retry ran as hft-runas once the database answered"
    );
}
