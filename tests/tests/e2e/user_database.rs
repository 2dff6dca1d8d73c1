//! A user database that does not answer (LDAP or SSSD down, a hung NSS
//! module) holds back only the attempts that need it: run-as attempts wait
//! for their user, at most four look-ups at a time, while every other job
//! is submitted, started and finished as usual; a waiting attempt is
//! cancelled at once, one with a `timeout` times out; and the waiting ones
//! run once the database answers.
//!
//! And a chain refused because the database does not know its user yet
//! loads by itself once the account exists (`run_as_recheck`).
//!
//! The database is made to hang for real, for the daemon alone: the daemon
//! runs in a mount namespace of its own, where `/etc/passwd` is covered by
//! a FIFO, and glibc's `files` module blocks in `open` until a writer
//! comes. (It then cannot read a FIFO, which cannot seek, and answers "no
//! such user": those attempts fail and their retries, with the real file
//! back, run.) Needs root, the run-as account and a host where glibc reads
//! `/etc/passwd` itself (no nscd), as CI has; without them the test says
//! why and passes, unless `HOLDFAST_USERS_TEST=required`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use holdfast_api::JobState;
use holdfast_tests::users;
use holdfast_tests::{TestDaemon, eventually};

use crate::support::shown;
use crate::users::accounts_or_skip;

/// How long the daemon gets to reach the FIFO once the run-as jobs are in.
pub(crate) const REACH_DEADLINE: Duration = Duration::from_secs(30);
/// The daemon's bounds on look-ups at once (run_as.rs): for attempts,
/// and for everything else.
const LOOKUPS_AT_ONCE: usize = 4;
const OTHER_LOOKUPS_AT_ONCE: usize = 2;
/// Where a thread waits in `open` of a FIFO for a writer, as
/// `/proc/TID/wchan` names it on the kernels at hand (older ones, or an
/// inlined partner wait).
const FIFO_OPEN_WAITS: [&str; 3] = ["wait_for_partner", "fifo_open", "pipe_wait"];

/// Run `args` inside the daemon's mount namespace; it must succeed.
pub(crate) fn in_namespace(pid: u32, args: &[&str]) {
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

/// Whether the thread at `task` (`/proc/PID/task/TID`) waits in `open` of
/// a FIFO for its writer.
pub(crate) fn opens_a_fifo(task: &Path) -> bool {
    fs::read_to_string(task.join("wchan")).is_ok_and(|w| FIFO_OPEN_WAITS.contains(&w.trim()))
}

/// How many of the daemon's threads wait in `open` of a FIFO for its
/// writer; Err says how many when fewer than `least`.
pub(crate) fn opening_a_fifo(pid: u32, least: usize) -> Result<usize, String> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
    let waiting = tasks
        .flatten()
        .filter(|task| opens_a_fifo(&task.path()))
        .count();
    if waiting < least {
        return Err(format!("{waiting} threads wait to open a FIFO"));
    }
    Ok(waiting)
}

/// A job of the chain `plain` (no user) is submitted, runs and succeeds,
/// while `meanwhile`.
pub(crate) fn a_plain_job_runs(daemon: &TestDaemon, meanwhile: &str) {
    let job = daemon.submit("plain", &[]);
    assert_eq!(
        daemon.wait_done(job).state,
        JobState::Succeeded,
        "a job without a user runs while {meanwhile}"
    );
}

/// The pid of job `job_id`'s first attempt, once it runs and is recorded.
pub(crate) fn first_attempt_pid(daemon: &TestDaemon, job_id: u64) -> i32 {
    let running = daemon.wait_for(job_id, "running with its pid recorded", |job| {
        job.activities
            .first()
            .and_then(|a| a.attempts.first())
            .is_some_and(|t| t.pid.is_some())
    });
    running.activities[0].attempts[0]
        .pid
        .expect("the pid is recorded") as i32
}

/// An account of one test, removed when the test ends, passed or not.
pub(crate) struct RemovedAtEnd(pub(crate) &'static str);

impl Drop for RemovedAtEnd {
    fn drop(&mut self) {
        users::remove_lone_account(self.0);
    }
}

/// Skip (or fail, when required) with `reason`.
pub(crate) fn cannot_run(test: &str, reason: &str) {
    assert!(
        !users::required(),
        "{test} cannot run here ({}=required): {reason}",
        users::REQUIRED_ENV
    );
    eprintln!("skipped {test}: {reason}");
}

/// A daemon with `workflows`, allowed to run as hft-runas, started in a
/// mount namespace of its own, and its pid; None (the test skipped) when
/// that cannot be done here.
fn daemon_of_its_own(test: &str, workflows: &[(&str, &str)]) -> Option<(TestDaemon, u32)> {
    if Path::new("/var/run/nscd/socket").exists() {
        cannot_run(test, "nscd answers look-ups: glibc never reads the FIFO");
        return None;
    }
    // Checks of who a chain runs as wait long here (the default is five
    // seconds), so a reload and a retry are seen waiting for the database;
    // `user_database_start.rs` has the bound at work.
    let mut daemon = TestDaemon::prepare(
        Some("run_as_allowed = [\"hft-runas\"]\nmax_parallel = 8\nuser_database_wait = \"120s\"\n"),
        workflows,
    );
    daemon.in_own_mount_namespace();
    if let Err(e) = daemon.try_launch() {
        cannot_run(test, &format!("no mount namespace of its own: {e}"));
        return None;
    }
    let pid = daemon.pid().expect("the daemon runs");
    let namespace = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("mnt ns");
    assert_ne!(
        namespace(&pid.to_string()),
        namespace("self"),
        "the daemon has a mount namespace of its own"
    );
    Some((daemon, pid))
}

/// A file of the daemon's user database covered by a FIFO.
pub(crate) struct Hung {
    pub(crate) fifo: PathBuf,
    /// The file the FIFO covers (`/etc/passwd`, `/etc/group`).
    pub(crate) covers: &'static str,
    /// Keeps the other tests from replacing `/etc/passwd`, which would
    /// undo the cover, until the database is back.
    pub(crate) _unchanged: MutexGuard<'static, ()>,
}

/// The test accounts, when a user database can be made to hang for one
/// daemon here (root, the accounts, no nscd); None, the test skipped (or
/// failed, when required), otherwise.
pub(crate) fn accounts_to_hang(test: &str) -> Option<&'static users::Accounts> {
    let accounts = accounts_or_skip(test)?;
    if Path::new("/var/run/nscd/socket").exists() {
        cannot_run(test, "nscd answers look-ups: glibc never reads the FIFO");
        return None;
    }
    Some(accounts)
}

/// A FIFO in `daemon`'s directory to cover `covers` (`/etc/passwd`,
/// `/etc/group`) with, the account files left alone while it does.
pub(crate) fn fifo_for(daemon: &TestDaemon, covers: &'static str) -> Hung {
    let unchanged = users::hold_account_database();
    let name = covers.rsplit('/').next().unwrap_or(covers);
    let fifo = daemon.dir().join(format!("{name}.fifo"));
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644))
        .expect("the FIFO can be made");
    Hung {
        fifo,
        covers,
        _unchanged: unchanged,
    }
}

/// Start `daemon` with its `covers` a FIFO from the start on, and check it
/// was ready within 20 s all the same, having met the hung database: the
/// cover and the daemon's pid. None (the test skipped, or failed when
/// required) when the daemon cannot have a mount namespace here.
pub(crate) fn start_on_hung(
    daemon: &mut TestDaemon,
    covers: &'static str,
    test: &str,
) -> Option<(Hung, u32)> {
    let hung = fifo_for(daemon, covers);
    daemon.bind_before_start(&hung.fifo, Path::new(covers));
    let began = Instant::now();
    if let Err(e) = daemon.try_launch() {
        cannot_run(test, &format!("no mount namespace of its own: {e}"));
        return None;
    }
    let took = began.elapsed();
    let pid = daemon.pid().expect("the daemon runs");
    eprintln!("ready {took:?} after the start, with {covers} hung");
    assert!(
        took < Duration::from_secs(20),
        "READY=1 did not wait for the database: {took:?}"
    );
    assert!(
        opening_a_fifo(pid, 1).is_ok(),
        "the daemon met the hung database"
    );
    Some((hung, pid))
}

/// Cover the running daemon's `covers` with a FIFO: from now on its
/// look-ups there wait in `open`.
pub(crate) fn hang(daemon: &TestDaemon, pid: u32, covers: &'static str) -> Hung {
    let hung = fifo_for(daemon, covers);
    let fifo_text = hung.fifo.display().to_string();
    in_namespace(pid, &["mount", "--bind", &fifo_text, covers]);
    hung
}

/// The real file for later look-ups, and a writer at last for those under
/// way, which then fail to read the FIFO ("no such user", "no such
/// group").
pub(crate) fn bring_the_user_database_back(pid: u32, hung: Hung) {
    in_namespace(pid, &["umount", "--lazy", hung.covers]);
    drop(
        fs::OpenOptions::new()
            .write(true)
            .open(&hung.fifo)
            .expect("the FIFO can be opened for writing"),
    );
}

#[test]
fn a_hung_user_database_holds_back_only_the_attempts_that_need_it() {
    let test = "a_hung_user_database_holds_back_only_the_attempts_that_need_it";
    let Some(accounts) = accounts_or_skip(test) else {
        return;
    };
    let target = &accounts.run_as;
    let as_user = "[process.p.activity.a]\nuser = \"hft-runas\"\ncommand = [\"id\", \"-u\"]\n";
    let Some((daemon, pid)) = daemon_of_its_own(
        test,
        &[
            (
                "as-user.toml",
                &format!("{as_user}retries = 1\nretry_delay = \"10ms\"\n"),
            ),
            (
                "as-user-timed.toml",
                &format!("{as_user}timeout = \"2s\"\n"),
            ),
            (
                "plain.toml",
                "[process.p.activity.a]\ncommand = [\"true\"]\n",
            ),
        ],
    ) else {
        return;
    };

    // A first job: the daemon learns (and keeps, a minute) the name of the
    // test's uid while the database still answers.
    let first = daemon.submit("plain", &[]);
    assert_eq!(daemon.wait_done(first).state, JobState::Succeeded);

    let hung = hang(&daemon, pid, "/etc/passwd");

    let waiting = daemon.submit("as-user", &[]);
    let cancelled = daemon.submit("as-user", &[]);
    let timed = daemon.submit("as-user-timed", &[]);
    let more: Vec<u64> = (0..3).map(|_| daemon.submit("as-user", &[])).collect();
    eventually(
        REACH_DEADLINE,
        "the daemon looks up hft-runas and waits for the user database",
        || opening_a_fifo(pid, LOOKUPS_AT_ONCE),
    );

    // Meanwhile the engine is free: a job is submitted, run and done.
    a_plain_job_runs(&daemon, "the user database hangs");
    // Six attempts wait for their user, four of them in a look-up.
    assert_eq!(
        opening_a_fifo(pid, 0),
        Ok(LOOKUPS_AT_ONCE),
        "look-ups at once are bounded"
    );
    // A waiting attempt is cancelled without waiting for the database,
    // and one with a timeout times out.
    let cancel = daemon.hfctl(&["cancel", &cancelled.to_string()]);
    assert!(cancel.status.success(), "{}", shown(&cancel));
    assert_eq!(daemon.wait_done(cancelled).state, JobState::Cancelled);
    let timed_job = daemon.wait_done(timed);
    assert_eq!(timed_job.state, JobState::Failed, "{timed_job:#?}");
    let timed_out = daemon.status_value(timed).to_string();
    assert!(
        timed_out.contains("before it started (its user was still being looked up)"),
        "{timed_out}"
    );
    let held = daemon.status(waiting);
    assert_eq!(
        held.state,
        JobState::Running,
        "the run-as job waits for its user: {held:#?}"
    );

    // The database comes back: the real file for later look-ups, and a
    // writer at last for those under way, which then fail to read the
    // FIFO (those attempts fail; their retries run).
    bring_the_user_database_back(pid, hung);
    for job_id in std::iter::once(waiting).chain(more) {
        let done = daemon.wait_done(job_id);
        assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
        assert_eq!(
            daemon.logs(job_id, "p.a", None).trim(),
            target.uid.to_string(),
            "job {job_id} ran as hft-runas once the database answered"
        );
    }
}

#[test]
fn a_reload_and_a_retry_that_wait_for_the_user_database_hold_back_nothing_else() {
    let test = "a_reload_and_a_retry_that_wait_for_the_user_database_hold_back_nothing_else";
    let Some(accounts) = accounts_or_skip(test) else {
        return;
    };
    let target = &accounts.run_as;
    let Some((daemon, pid)) = daemon_of_its_own(
        test,
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
    ) else {
        return;
    };
    // A job to reprocess later, run while the database answers.
    let original = daemon.submit("as-user", &[]);
    assert_eq!(daemon.wait_done(original).state, JobState::Succeeded);
    let original = original.to_string();

    let hung = hang(&daemon, pid, "/etc/passwd");
    // Each of these checks who a chain runs as, and so asks the database:
    // a reload (every chain's user) and a reprocess (its pinned chain's).
    // They share turns of their own, apart from the attempts'.
    let reload = daemon.hfctl_spawn(&["reload"]);
    let retry = daemon.hfctl_spawn(&["retry", "--from-start", &original]);
    eventually(
        REACH_DEADLINE,
        "the reload and the retry wait for the user database",
        || opening_a_fifo(pid, OTHER_LOOKUPS_AT_ONCE),
    );

    // Meanwhile the engine and the RPC workers are free.
    a_plain_job_runs(&daemon, "a reload and a retry wait");
    let listed = daemon.hfctl(&["workflows"]);
    assert!(listed.status.success(), "{}", shown(&listed));
    // A describe asks nothing: who runs as root was settled at load.
    let described = daemon.hfctl(&["describe", "as-user"]);
    assert!(
        described.status.success()
            && String::from_utf8_lossy(&described.stdout).contains("hft-runas"),
        "{}",
        shown(&described)
    );
    assert_eq!(
        opening_a_fifo(pid, 0),
        Ok(OTHER_LOOKUPS_AT_ONCE),
        "their look-ups at once are bounded"
    );
    // Those turns taken, an attempt still gets one of its own.
    let attempt = daemon.submit("as-user", &[]);
    eventually(
        REACH_DEADLINE,
        "the run-as attempt looks up its user beside them",
        || opening_a_fifo(pid, OTHER_LOOKUPS_AT_ONCE + 1),
    );
    // A second reload asked meanwhile waits for the one under way, and
    // reads the files after it.
    let second_reload = daemon.hfctl_spawn(&["reload"]);
    eventually(REACH_DEADLINE, "the second reload is queued", || {
        let log = fs::read_to_string(daemon.log_path()).map_err(|e| e.to_string())?;
        log.contains("a reload is under way: the workflows are read again once it is in place")
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    for (mut child, what) in [(reload, "reload"), (retry, "retry")] {
        assert!(
            child.try_wait().expect("hfctl can be waited for").is_none(),
            "hfctl {what} waits for the user database"
        );
        drop(child.kill());
        let _ = child.wait();
    }

    // Back: the second reload reads the real file (the first had read the
    // FIFO and found no such user), and the chain runs as its user again.
    bring_the_user_database_back(pid, hung);
    let reloaded = holdfast_tests::command::finish_child_output(second_reload, REACH_DEADLINE);
    assert!(reloaded.status.success(), "{}", shown(&reloaded));
    let workflows = daemon.hfctl_json(&["workflows"]);
    let as_user = workflows
        .as_array()
        .and_then(|all| all.iter().find(|w| w["name"] == "as-user"))
        .unwrap_or_else(|| panic!("as-user is listed: {workflows}"));
    assert_eq!(as_user["status"], "loaded", "{as_user}");
    let retried = daemon.hfctl(&["--json", "retry", "--from-start", &original]);
    assert!(retried.status.success(), "{}", shown(&retried));
    let again: serde_json::Value =
        serde_json::from_slice(&retried.stdout).expect("retry prints JSON");
    let again = again["job_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("a job id: {again}"));
    assert_eq!(daemon.wait_done(again).state, JobState::Succeeded);
    assert_eq!(
        daemon.logs(again, "p.a", None).trim(),
        target.uid.to_string(),
        "the reprocess ran as hft-runas"
    );
    // The attempt that looked its user up in the FIFO failed ("no such
    // user"); its retry ran as the user.
    let attempt = daemon.wait_done(attempt);
    assert_eq!(attempt.state, JobState::Succeeded, "{attempt:#?}");
}

#[test]
fn a_chain_whose_user_is_made_later_loads_without_a_reload() {
    let test = "a_chain_whose_user_is_made_later_loads_without_a_reload";
    const LATE: &str = "hft-late";
    if accounts_or_skip(test).is_none() {
        return;
    }
    if Path::new("/var/run/nscd/socket").exists() {
        return cannot_run(test, "nscd would answer from its negative cache");
    }
    users::remove_lone_account(LATE);
    let _removed = RemovedAtEnd(LATE);
    let daemon = TestDaemon::start_with(
        "run_as_allowed = [\"hft-late\"]\nrun_as_recheck = \"1s\"\n",
        &[(
            "late.toml",
            "[process.p.activity.a]\nuser = \"hft-late\"\ncommand = [\"id\", \"-un\"]\n",
        )],
    );
    let late = |daemon: &TestDaemon| {
        let workflows = daemon.hfctl_json(&["workflows"]);
        workflows
            .as_array()
            .and_then(|all| all.iter().find(|w| w["name"] == "late"))
            .cloned()
            .unwrap_or_else(|| panic!("late is listed: {workflows}"))
    };
    let refused = late(&daemon);
    assert_eq!(refused["status"], "broken", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"hft-late\" does not exist")),
        "{refused}"
    );

    // The account is made; nobody touches the file or reloads.
    users::lone_account(LATE).expect("hft-late can be made");
    eventually(
        REACH_DEADLINE,
        "the chain loads once its user exists",
        || match late(&daemon)["status"].as_str() {
            Some("loaded") => Ok(()),
            other => Err(format!("status {other:?}")),
        },
    );
    let job = daemon.submit("late", &[]);
    let done = daemon.wait_done(job);
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(daemon.logs(job, "p.a", None).trim(), LATE);
    assert!(
        daemon
            .log_tail()
            .contains("the user database now confirms who it runs as"),
        "the daemon says why the chain loaded: {}",
        daemon.log_tail()
    );
}

#[test]
fn a_job_resumed_while_the_database_does_not_know_its_user_is_not_refused() {
    let test = "a_job_resumed_while_the_database_does_not_know_its_user_is_not_refused";
    const GONE: &str = "hft-gone";
    if accounts_or_skip(test).is_none() {
        return;
    }
    if Path::new("/var/run/nscd/socket").exists() {
        return cannot_run(test, "nscd would answer from its cache");
    }
    users::lone_account(GONE).expect("hft-gone can be made");
    let _removed = RemovedAtEnd(GONE);
    let mut daemon = TestDaemon::start_with(
        "run_as_allowed = [\"hft-gone\"]\n",
        &[(
            "gone.toml",
            "[process.p.activity.a]\nuser = \"hft-gone\"\ncommand = [\"sleep\", \"300\"]\n",
        )],
    );
    let job_id = daemon.submit("gone", &[]);
    let pid = first_attempt_pid(&daemon, job_id);

    // The daemon dies; while it is down the account goes (its process
    // first: userdel refuses a user with processes).
    daemon.kill9();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("the leftover can be killed");
    assert!(holdfast_tests::process::gone_within(pid, REACH_DEADLINE));
    users::remove_lone_account(GONE);
    daemon.launch();

    // Not refused by today's policy: resumed, and its next attempt looks
    // the user up before it starts, and fails there, saying why.
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let shown_job = daemon.status_value(job_id).to_string();
    assert!(
        !shown_job.contains("may no longer run as"),
        "the job was not refused at resume: {shown_job}"
    );
    assert!(
        shown_job.contains("\\\"hft-gone\\\" does not exist on this host"),
        "its attempt says the user does not exist: {shown_job}"
    );
    assert!(
        job.activities[0].attempts.len() >= 2,
        "an attempt was started again: {job:#?}"
    );
    assert!(
        fs::read_to_string(daemon.log_path())
            .unwrap_or_default()
            .contains("resuming the job although the user database did not confirm who it runs as"),
        "the daemon says why it resumed: {}",
        daemon.log_tail()
    );
}
