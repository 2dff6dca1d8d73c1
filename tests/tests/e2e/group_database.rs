//! A group database that hangs (LDAP or SSSD not answering) holds back
//! nothing. The groups the configuration names are asked for when it is
//! read, so an answer given then keeps counting while the database hangs,
//! and a group first named by a reload during the hang is already being
//! asked for when the first decision needs it: that decision is refused
//! (the group is unknown, so it cannot let anyone in) after a moment at
//! most, the next at once, every other request goes on, and once the
//! database answers again the group counts.
//!
//! A job resumed after a restart on a hung group database is resumed, not
//! refused for want of the group its chain's `allow` names.
//!
//! As in `user_database.rs`, the database hangs for the daemon alone: a
//! FIFO is bound over `/etc/group` in its own mount namespace. Needs root,
//! the test accounts and no nscd; otherwise the test says why and passes,
//! unless `HOLDFAST_USERS_TEST=required`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use holdfast_api::JobState;
use holdfast_tests::{TestDaemon, eventually};

use crate::support::shown;
use crate::user_database::{
    REACH_DEADLINE, a_plain_job_runs, accounts_to_hang, bring_the_user_database_back, cannot_run,
    hang, opens_a_fifo, start_on_hung,
};
use crate::users::denied;

/// The daemon's first look-ups of groups (threads named `group-lookup`):
/// how many run, and how many of them wait to open a FIFO.
fn group_lookups(pid: u32) -> (usize, usize) {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let looking: Vec<_> = tasks
        .flatten()
        .filter(|task| {
            fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == "group-lookup")
        })
        .collect();
    let waiting = looking
        .iter()
        .filter(|task| opens_a_fifo(&task.path()))
        .count();
    (looking.len(), waiting)
}

/// Open to members of hft-etl only.
const GUARDED: &str = "[chain]\nallow = [\"group:hft-etl\"]\n\
                       [process.p.activity.a]\ncommand = [\"true\"]\n";

#[test]
fn a_hung_group_database_refuses_what_needs_the_group_and_holds_back_nothing_else() {
    let test = "a_hung_group_database_refuses_what_needs_the_group_and_holds_back_nothing_else";
    let Some(accounts) = accounts_to_hang(test) else {
        return;
    };
    let mut daemon = TestDaemon::prepare(
        Some("socket_group = \"hft-sock\"\n"),
        &[
            ("guarded.toml", GUARDED),
            (
                "plain.toml",
                "[process.p.activity.a]\ncommand = [\"true\"]\n",
            ),
        ],
    );
    fs::set_permissions(daemon.dir(), fs::Permissions::from_mode(0o711))
        .expect("the fixture directory can be opened to other users");
    daemon.in_own_mount_namespace();
    if let Err(e) = daemon.try_launch() {
        return cannot_run(test, &format!("no mount namespace of its own: {e}"));
    }
    let pid = daemon.pid().expect("the daemon runs");
    let socket = daemon.socket().to_path_buf();
    // hft-etl, named by guarded.toml, is asked for at start, before any
    // decision needs it.
    eventually(
        REACH_DEADLINE,
        "the start's group look-ups end",
        || match group_lookups(pid) {
            (0, _) => Ok(()),
            (n, _) => Err(format!("{n} look-ups run")),
        },
    );

    // From now on the daemon's group look-ups wait in `open`.
    let hung = hang(&daemon, pid, "/etc/group");

    // The answer given at start counts while the database hangs.
    let began = Instant::now();
    let kept = accounts.etl_member.hfctl(&socket, &["submit", "guarded"]);
    assert!(
        kept.status.success(),
        "the group answered at start counts while the database hangs: {}",
        shown(&kept)
    );
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "a group already answered is not waited for: {:?}",
        began.elapsed()
    );

    // A chain naming a group nothing has asked for yet, read while the
    // database hangs: the reload asks for it, no decision needed.
    daemon.write_workflow(
        "newly.toml",
        "[chain]\nallow = [\"group:hft-sock\"]\n[process.p.activity.a]\ncommand = [\"true\"]\n",
    );
    let reload = daemon.hfctl(&["reload"]);
    assert!(reload.status.success(), "{}", shown(&reload));
    eventually(
        REACH_DEADLINE,
        "the reload asks for hft-sock by itself",
        || match group_lookups(pid) {
            (1, 1) => Ok(()),
            (n, w) => Err(format!("{n} look-ups run, {w} wait on the FIFO")),
        },
    );

    let began = Instant::now();
    let refused = accounts.etl_member.hfctl(&socket, &["submit", "newly"]);
    let took = began.elapsed();
    let line = denied(&refused, "a submission the unknown group would allow");
    eprintln!("refused after {took:?}: {line}");
    assert!(
        took < Duration::from_secs(10),
        "the decision waited for the group a moment, not for the database: {took:?}"
    );
    let began = Instant::now();
    let again = accounts.etl_member.hfctl(&socket, &["submit", "newly"]);
    denied(&again, "the next submission while the database hangs");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "the next decision does not wait again: {:?}",
        began.elapsed()
    );
    a_plain_job_runs(&daemon, "the group database hangs");
    let info = accounts.member.hfctl(&socket, &["info"]);
    assert!(info.status.success(), "a member reads: {}", shown(&info));

    // Back: the look-up that waited reads the end of the FIFO ("no such
    // group"), and the group counts once a later refresh finds it.
    bring_the_user_database_back(pid, hung);
    eventually(REACH_DEADLINE, "a member of hft-sock may submit", || {
        let output = accounts.etl_member.hfctl(&socket, &["submit", "newly"]);
        if output.status.success() {
            Ok(())
        } else {
            Err(shown(&output))
        }
    });
}

#[test]
fn a_job_resumed_while_the_group_database_hangs_is_not_refused() {
    let test = "a_job_resumed_while_the_group_database_hangs_is_not_refused";
    let Some(accounts) = accounts_to_hang(test) else {
        return;
    };
    let mut daemon = TestDaemon::prepare(
        Some("socket_group = \"hft-sock\"\nuser_database_wait = \"5s\"\n"),
        &[(
            "guarded.toml",
            "[chain]\nallow = [\"group:hft-etl\"]\n\
             [process.p.activity.a]\ncommand = [\"sleep\", \"300\"]\n",
        )],
    );
    fs::set_permissions(daemon.dir(), fs::Permissions::from_mode(0o711))
        .expect("the fixture directory can be opened to other users");
    daemon.launch();
    let job_id = accounts.etl_member.submit(daemon.socket(), "guarded", &[]);
    daemon.wait_for(job_id, "running", |job| job.state == JobState::Running);
    daemon.kill9();

    // The next start's /etc/group is a FIFO; its /etc/passwd answers.
    let Some((hung, pid)) = start_on_hung(&mut daemon, "/etc/group", test) else {
        return;
    };
    let resumed = daemon.status(job_id);
    assert_eq!(resumed.state, JobState::Running, "{resumed:#?}");
    let log = fs::read_to_string(daemon.log_path()).unwrap_or_default();
    assert!(
        log.contains("resuming the job although the user database did not confirm who submitted it or the groups"),
        "the daemon says why it resumed: {}",
        daemon.log_tail()
    );
    bring_the_user_database_back(pid, hung);
    let cancelled = daemon.hfctl(&["cancel", &job_id.to_string()]);
    assert!(cancelled.status.success(), "{}", shown(&cancelled));
}
