//! A daemon that starts while the user database hangs (LDAP or SSSD not
//! answering at boot) is ready all the same: every check of who a chain
//! runs as, who submitted a job being resumed and who owns a dead
//! daemon's leftovers waits at most `user_database_wait`, two look-ups
//! given up on stop it from asking more, the run-as chain is refused until
//! the database confirms its user (then loads by itself), the process the
//! dead daemon left is killed all the same, and the job that was running
//! when the daemon died is resumed, not refused, and runs as its user once
//! the database is back.
//!
//! As in `user_database.rs`, the database hangs for real, for the daemon
//! alone: it starts in a mount namespace of its own with a FIFO bound over
//! `/etc/passwd` before it runs. Needs root, the run-as account and no
//! nscd; otherwise the test says why and passes, unless
//! `HOLDFAST_USERS_TEST=required`.

use std::fs;
use std::path::Path;

use holdfast_api::JobState;
use holdfast_tests::{TestDaemon, eventually, users};

use crate::user_database::{
    REACH_DEADLINE, a_plain_job_runs, accounts_to_hang, bring_the_user_database_back,
    first_attempt_pid, start_on_hung,
};

/// The status and error of chain `name` as `hfctl workflows` lists it.
fn chain_status(daemon: &TestDaemon, name: &str) -> (String, String) {
    let workflows = daemon.hfctl_json(&["workflows"]);
    let chain = workflows
        .as_array()
        .and_then(|all| all.iter().find(|w| w["name"] == name))
        .unwrap_or_else(|| panic!("{name} is listed: {workflows}"));
    (
        chain["status"].as_str().unwrap_or_default().to_string(),
        chain["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn a_daemon_started_on_a_hung_user_database_is_ready_and_resumes_its_jobs() {
    let test = "a_daemon_started_on_a_hung_user_database_is_ready_and_resumes_its_jobs";
    let Some(accounts) = accounts_to_hang(test) else {
        return;
    };
    let mut daemon = TestDaemon::prepare(
        Some(
            "run_as_allowed = [\"hft-runas\"]\nmax_parallel = 8\n\
             user_database_wait = \"1s\"\nrun_as_recheck = \"1s\"\n",
        ),
        &[
            (
                "as-user.toml",
                // The first attempt runs until the daemon dies; the later
                // ones say who they run as.
                "[process.p.activity.a]\nuser = \"hft-runas\"\n\
                 command = [\"sh\", \"-c\", \"[ \\\"$HF_ATTEMPT\\\" = 1 ] && exec sleep 300; id -u\"]\n\
                 retries = 1\nretry_delay = \"10ms\"\n",
            ),
            (
                "plain.toml",
                "[process.p.activity.a]\ncommand = [\"true\"]\n",
            ),
        ],
    );
    daemon.launch();
    let job_id = daemon.submit("as-user", &[]);
    let pid = first_attempt_pid(&daemon, job_id);
    daemon.kill9();

    // The next start's /etc/passwd is a FIFO: every look-up there waits.
    // READY=1 waits at most two user_database_waits, not for the database.
    let Some((hung, daemon_pid)) = start_on_hung(&mut daemon, "/etc/passwd", test) else {
        return;
    };
    // What the dead daemon left running is killed though the database
    // did not say who hft-runas is: the recorded process itself, still
    // running with its recorded start time, does.
    assert!(
        holdfast_tests::process::gone_within(pid, REACH_DEADLINE),
        "the leftover {pid} was killed at the restart"
    );

    // It works: a plain job runs; the run-as chain is refused for now,
    // saying the database did not answer; the resumed job is not refused.
    a_plain_job_runs(&daemon, "the user database hangs since the start");
    let (status, error) = chain_status(&daemon, "as-user");
    assert_eq!(status, "broken", "{error}");
    assert!(
        error.contains("did not answer within") || error.contains("has not answered"),
        "{error}"
    );
    let resumed = daemon.status(job_id);
    assert_eq!(resumed.state, JobState::Running, "{resumed:#?}");
    let log = fs::read_to_string(daemon.log_path()).unwrap_or_default();
    assert!(
        log.contains("resuming the job although the user database did not confirm"),
        "the daemon says why it resumed: {}",
        daemon.log_tail()
    );

    // Back: the chain loads by itself, and the job runs as its user.
    bring_the_user_database_back(daemon_pid, hung);
    eventually(
        REACH_DEADLINE,
        "the run-as chain loads",
        || match chain_status(&daemon, "as-user") {
            (status, _) if status == "loaded" => Ok(()),
            (status, error) => Err(format!("{status}: {error}")),
        },
    );
    let done = daemon.wait_done(job_id);
    assert_eq!(done.state, JobState::Succeeded, "{done:#?}");
    assert_eq!(
        daemon.logs(job_id, "p.a", None).trim(),
        accounts.run_as.uid.to_string(),
        "the resumed job ran as hft-runas"
    );
}

/// A daemon whose `socket_group` the user database does not name at the
/// start (LDAP not answering at boot) is ready all the same, its socket
/// open to its own user only meanwhile; once the database answers, the
/// socket is given to the group and opened to it, and a member connects.
#[test]
fn a_socket_group_named_late_gets_the_socket_once_the_database_answers() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let test = "a_socket_group_named_late_gets_the_socket_once_the_database_answers";
    let Some(accounts) = accounts_to_hang(test) else {
        return;
    };
    let mut daemon = TestDaemon::prepare(
        Some(
            "socket_group = \"hft-sock\"\nuser_database_wait = \"1s\"\n\
             run_as_recheck = \"1s\"\n",
        ),
        &[(
            "plain.toml",
            "[process.p.activity.a]\ncommand = [\"true\"]\n",
        )],
    );
    fs::set_permissions(daemon.dir(), fs::Permissions::from_mode(0o711))
        .expect("the fixture directory can be opened to other users");
    // The start's /etc/group is a FIFO: the look-up of the group waits.
    let Some((hung, daemon_pid)) = start_on_hung(&mut daemon, "/etc/group", test) else {
        return;
    };
    let socket = daemon.socket().to_path_buf();
    let mode = |socket: &Path| fs::metadata(socket).expect("the socket exists").mode() & 0o777;
    assert_eq!(mode(&socket), 0o600, "owner-only until the group is known");
    let member = accounts.member.hfctl(&socket, &["info"]);
    assert!(
        !member.status.success(),
        "a member of hft-sock cannot connect yet: {}",
        crate::support::shown(&member)
    );
    a_plain_job_runs(&daemon, "the socket group is not named yet");

    // The database is back: the hung look-up ends without an answer (as
    // one on a dropped LDAP connection does), the next one finds the group.
    bring_the_user_database_back(daemon_pid, hung);
    let gid = users::group_id("hft-sock");
    eventually(REACH_DEADLINE, "the socket is shared with hft-sock", || {
        let meta = fs::metadata(&socket).map_err(|e| e.to_string())?;
        match (meta.gid(), meta.mode() & 0o777) {
            (g, 0o660) if g == gid => Ok(()),
            (g, m) => Err(format!("gid {g}, mode {m:o}")),
        }
    });
    let member = accounts.member.hfctl(&socket, &["info"]);
    assert!(
        member.status.success(),
        "a member of hft-sock connects now: {}",
        crate::support::shown(&member)
    );
    let log = fs::read_to_string(daemon.log_path()).unwrap_or_default();
    assert!(
        log.contains("did not name socket group hft-sock in time")
            && log.contains("the socket is shared with it now"),
        "the daemon says what happened: {}",
        daemon.log_tail()
    );
}

/// A `socket_group` the user database answers "no such group" for at the
/// start, in time (SSSD or LDAP not reachable yet at boot, NSS falling
/// through to the files), is asked for again every `run_as_recheck`, like
/// one answered late: once the group exists the socket is given to it,
/// with no restart.
#[test]
fn a_socket_group_missing_at_the_start_gets_the_socket_once_it_exists() {
    use std::os::unix::fs::MetadataExt;
    let test = "a_socket_group_missing_at_the_start_gets_the_socket_once_it_exists";
    const LATE: &str = "hft-sock-late";
    if crate::users::accounts_or_skip(test).is_none() {
        return;
    }
    if Path::new("/var/run/nscd/socket").exists() {
        return crate::user_database::cannot_run(test, "nscd would answer from its negative cache");
    }
    users::remove_lone_account(LATE);
    let _removed = crate::user_database::RemovedAtEnd(LATE);
    let daemon = TestDaemon::start_with(
        "socket_group = \"hft-sock-late\"\nrun_as_recheck = \"1s\"\n",
        &[(
            "plain.toml",
            "[process.p.activity.a]\ncommand = [\"true\"]\n",
        )],
    );
    let socket = daemon.socket().to_path_buf();
    let meta = fs::metadata(&socket).expect("the socket exists");
    assert_eq!(
        meta.mode() & 0o777,
        0o600,
        "owner-only while the group is missing"
    );
    a_plain_job_runs(&daemon, "the socket group does not exist");

    // The group is made; nobody restarts the daemon.
    users::lone_account(LATE).expect("hft-sock-late can be made");
    let gid = users::group_id(LATE);
    eventually(
        REACH_DEADLINE,
        "the socket is shared with hft-sock-late",
        || {
            let meta = fs::metadata(&socket).map_err(|e| e.to_string())?;
            match (meta.gid(), meta.mode() & 0o777) {
                (g, 0o660) if g == gid => Ok(()),
                (g, m) => Err(format!("gid {g}, mode {m:o}")),
            }
        },
    );
    // The line is written after the mode is set.
    eventually(REACH_DEADLINE, "the daemon says what happened", || {
        let log = fs::read_to_string(daemon.log_path()).unwrap_or_default();
        if log.contains("socket group hft-sock-late does not exist")
            && log.contains("asking again every 1s")
            && log.contains("the socket is shared with it now")
        {
            Ok(())
        } else {
            Err(daemon.log_tail())
        }
    });
}
