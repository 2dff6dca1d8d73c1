//! Access rules and run-as with real Unix users: who may open the socket,
//! submit (chain `allow`, tenant `groups`), cancel and reprocess whose jobs,
//! reload and operate schedules, how every refusal is audited, and how an
//! activity that names a `user` runs as that user and nobody else.
//!
//! The access tests run `holdfastd --system` (socket 0660, group
//! `socket_group`) so that other users can reach it, and drive it with the
//! real `hfctl` run as those users through `setpriv`. The run-as tests use a
//! user-mode daemon running as root, whose unnamed activities keep the
//! daemon's environment: the contrast shows what a named user does not get.
//!
//! The accounts (`hft-*`, see `holdfast_tests::users`) are made on first use
//! and kept. Without root or the account tools the tests say so and pass;
//! `HOLDFAST_USERS_TEST=required` makes that a failure instead.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

use holdfast_api::{AuditEntry, JobList, JobState, ScheduleInfo, WorkflowSummary};
use holdfast_tests::TestDaemon;
use holdfast_tests::users::{
    self, Account, Accounts, CHAIN_GROUP, EXTRA_GROUP, SOCKET_GROUP, SystemDaemon, group_id,
};

use crate::support::shown;

/// The access daemon's settings. Unnamed activities run as the run-as user
/// (system mode never runs them as root).
const ACCESS_SETTINGS: &str = r#"
socket_group = "hft-sock"
operator_groups = ["hft-ops"]
run_as_default = "hft-runas"
kill_grace = "2s"
max_parallel = 8
"#;

/// Anyone on the socket may submit it; prints who the activity ran as.
const OPEN: &str = r#"
[process.p.activity.who]
shell = "id -un"
"#;

/// The chain group, and one user outside it by name.
const RESTRICTED: &str = r#"
[chain]
allow = ["group:hft-etl", "user:hft-operator"]

[process.p.activity.work]
command = ["true"]
"#;

/// The chain group only: operators get no exception.
const ETL_ONLY: &str = r#"
[chain]
allow = ["group:hft-etl"]

[process.p.activity.work]
command = ["true"]
"#;

/// Runs until cancelled.
const HOLD: &str = r#"
[process.p.activity.hold]
command = ["sleep", "300"]
"#;

const FAILS: &str = r#"
[process.p.activity.fail]
shell = "exit 3"
"#;

/// A schedule that does not fire by itself during a test run.
const SCHEDULED: &str = r#"
[schedule.yearly]
cron = "0 3 1 1 *"
timezone = "UTC"
catch_up = "none"

[process.p.activity.work]
command = ["true"]
"#;

/// Submitting for this tenant is limited to the chain group.
const TENANT: &str = r#"
description = "the chain group's tenant"
groups = ["hft-etl"]
"#;

/// What an activity reports about who and where it is.
const REPORT: &str = r#"echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "groups=$(id -G)"
echo "home=$HOME"
echo "user=$USER"
echo "logname=$LOGNAME"
echo "shell=$SHELL"
echo "path=$PATH"
echo "cwd=$(pwd)"
echo "daemon_only=${HFT_DAEMON_ONLY-absent}"
echo "from_chain=${HFT_FROM_CHAIN-absent}"
"#;

/// Set in the run-as daemon's environment only.
const DAEMON_ONLY: &str = "secret-of-the-daemon";
/// Put in front of the run-as daemon's `PATH`.
const DAEMON_PATH_MARK: &str = "/nonexistent/hft-daemon-path";

/// The accounts, or `None` after saying why the test cannot run here.
pub(crate) fn accounts_or_skip(test: &str) -> Option<&'static Accounts> {
    match users::accounts() {
        Ok(accounts) => Some(accounts),
        Err(reason) => {
            assert!(
                !users::required(),
                "{test} cannot run here ({}=required): {reason}",
                users::REQUIRED_ENV
            );
            eprintln!("skipped {test}: {reason}");
            None
        }
    }
}

fn access_daemon() -> SystemDaemon {
    SystemDaemon::start(
        ACCESS_SETTINGS,
        &[
            ("open.toml", OPEN),
            ("restricted.toml", RESTRICTED),
            ("etl-only.toml", ETL_ONLY),
            ("hold.toml", HOLD),
            ("fails.toml", FAILS),
            ("scheduled.toml", SCHEDULED),
        ],
        &[("acme", TENANT)],
    )
}

/// `output` is a refusal: exit 7, nothing on stdout, one line on stderr.
/// Returns that line.
pub(crate) fn refused(output: &Output, what: &str) -> String {
    assert_eq!(
        output.status.code(),
        Some(7),
        "{what} is refused with exit 7: {}",
        shown(output)
    );
    assert!(
        output.stdout.is_empty(),
        "{what}: nothing on stdout: {}",
        shown(output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("hfctl: "),
        "{what}: one line on stderr: {}",
        shown(output)
    );
    lines[0].to_string()
}

/// [`refused`] by the daemon (PERMISSION_DENIED), not by the socket's mode.
pub(crate) fn denied(output: &Output, what: &str) -> String {
    let line = refused(output, what);
    assert!(
        !line.contains("permission denied on"),
        "{what}: the daemon refused, not the socket: {line}"
    );
    line
}

fn succeeded(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} succeeds: {}",
        shown(output)
    );
}

/// An audit row the test expects.
struct Audited<'a> {
    who: &'a Account,
    method: &'static str,
    target: Option<String>,
    outcome: &'static str,
}

fn audited<'a>(
    who: &'a Account,
    method: &'static str,
    target: Option<&str>,
    outcome: &'static str,
) -> Audited<'a> {
    Audited {
        who,
        method,
        target: target.map(str::to_string),
        outcome,
    }
}

/// `hfctl --json audit`, read by root.
pub(crate) fn audit(daemon: &TestDaemon) -> Vec<AuditEntry> {
    let value = daemon.hfctl_json(&["audit", "--limit", "1000"]);
    serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("`hfctl --json audit` is not a list of entries ({e}): {value}"))
}

/// Every expected row is in the audit with the caller's uid and name, and
/// the refusals among them are all the refusals there are.
fn assert_audited(daemon: &TestDaemon, expected: &[Audited<'_>]) {
    let entries = audit(daemon);
    for row in expected {
        assert!(
            entries.iter().any(|e| e.uid == Some(row.who.uid)
                && e.user.as_deref() == Some(row.who.name.as_str())
                && e.method == row.method
                && e.target == row.target
                && e.outcome == row.outcome
                && (row.outcome == "ok" || e.detail.is_some())),
            "the audit has {} {:?} by {} (uid {}) as {}: {entries:#?}",
            row.method,
            row.target,
            row.who.name,
            row.who.uid,
            row.outcome
        );
    }
    let refusals = entries.iter().filter(|e| e.outcome == "refused").count();
    let expected_refusals = expected.iter().filter(|r| r.outcome == "refused").count();
    assert_eq!(
        refusals, expected_refusals,
        "exactly the refusals the test caused are audited as refused: {entries:#?}"
    );
}

/// How audit rows name a job.
pub(crate) fn job_target(job_id: u64) -> String {
    format!("job {job_id}")
}

#[test]
fn the_socket_admits_its_group_and_shuts_out_everyone_else() {
    let Some(accounts) =
        accounts_or_skip("the_socket_admits_its_group_and_shuts_out_everyone_else")
    else {
        return;
    };
    let daemon = access_daemon();
    let socket = daemon.socket();
    let meta = fs::metadata(socket).expect("the socket exists");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "a system-mode socket is 0660"
    );
    assert_eq!(
        meta.gid(),
        group_id(SOCKET_GROUP),
        "the socket belongs to socket_group"
    );

    let line = refused(
        &accounts.outsider.hfctl(socket, &["list"]),
        "`hfctl list` by a user outside the socket group",
    );
    assert!(
        line.contains("permission denied on") && line.contains(&*socket.to_string_lossy()),
        "the outsider is told the socket is closed to them: {line}"
    );
    assert!(
        line.contains(&format!("add you to the '{SOCKET_GROUP}' group")),
        "a group-accessible socket names its group: {line}"
    );

    let member = &accounts.member;
    let before: JobList = serde_json::from_value(member.hfctl_json(socket, &["list"]))
        .expect("`hfctl --json list` prints a job list");
    assert!(before.jobs.is_empty(), "{before:#?}");
    let job_id = member.submit(socket, "open", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.submitter_uid, Some(member.uid), "{job:#?}");
    assert_eq!(job.submitted_by, member.name, "{job:#?}");

    // The member reads what it submitted, logs included; the activity ran
    // as run_as_default, not as root.
    let after: JobList = serde_json::from_value(member.hfctl_json(socket, &["list"]))
        .expect("`hfctl --json list` prints a job list");
    assert!(
        after
            .jobs
            .iter()
            .any(|j| j.id == job_id && j.state == JobState::Succeeded),
        "{after:#?}"
    );
    let logs = member.hfctl(socket, &["logs", &job_id.to_string(), "p.who"]);
    succeeded(&logs, "`hfctl logs` by the member");
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout).trim(),
        accounts.run_as.name,
        "an unnamed activity of a system daemon runs as run_as_default"
    );

    assert_audited(
        &daemon,
        &[audited(member, "job.submit", Some("open"), "ok")],
    );
    assert!(
        audit(&daemon)
            .iter()
            .all(|e| e.uid != Some(accounts.outsider.uid)),
        "a caller the socket shut out never reached the daemon"
    );
}

#[test]
fn a_chains_allow_list_decides_who_submits_it() {
    let Some(accounts) = accounts_or_skip("a_chains_allow_list_decides_who_submits_it") else {
        return;
    };
    let daemon = access_daemon();
    let socket = daemon.socket();
    let (member, etl, operator) = (&accounts.member, &accounts.etl_member, &accounts.operator);

    let by_group = etl.submit(socket, "restricted", &[]);
    let by_name = operator.submit(socket, "restricted", &[]);
    let line = denied(
        &member.hfctl(socket, &["submit", "restricted"]),
        "submitting a chain whose allow list leaves the member out",
    );
    assert!(
        line.contains("restricted") && line.contains("group:hft-etl"),
        "the refusal names the chain and who may submit it: {line}"
    );
    // The operator got in by its user: entry; operator_groups are no
    // exception to an allow list.
    denied(
        &operator.hfctl(socket, &["submit", "etl-only"]),
        "submitting a group-only chain as an operator outside the group",
    );
    let by_root = daemon.submit("etl-only", &[]);
    let by_group_only = etl.submit(socket, "etl-only", &[]);
    // A group the process holds but the group database does not list for
    // the user (newgrp, sg, SupplementaryGroups=) counts: it comes with the
    // peer credentials (SO_PEERGROUPS).
    let gained = member.hfctl_in_groups(
        socket,
        Some(&[group_id(SOCKET_GROUP), group_id(CHAIN_GROUP)]),
        &["--json", "submit", "etl-only"],
    );
    assert!(
        gained.status.success(),
        "a member holding hft-etl in its process may submit: {}",
        String::from_utf8_lossy(&gained.stderr)
    );
    let by_gained_group = serde_json::from_slice::<serde_json::Value>(&gained.stdout)
        .ok()
        .and_then(|v| v["job_id"].as_u64())
        .expect("submit --json prints the job id");

    for job_id in [by_group, by_name, by_root, by_group_only, by_gained_group] {
        let job = daemon.wait_done(job_id);
        assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    }
    assert_eq!(daemon.status(by_name).submitter_uid, Some(operator.uid));

    assert_audited(
        &daemon,
        &[
            audited(etl, "job.submit", Some("restricted"), "ok"),
            audited(operator, "job.submit", Some("restricted"), "ok"),
            audited(member, "job.submit", Some("restricted"), "refused"),
            audited(operator, "job.submit", Some("etl-only"), "refused"),
            audited(etl, "job.submit", Some("etl-only"), "ok"),
            audited(member, "job.submit", Some("etl-only"), "ok"),
        ],
    );
}

#[test]
fn a_tenants_groups_decide_who_submits_for_it() {
    let Some(accounts) = accounts_or_skip("a_tenants_groups_decide_who_submits_for_it") else {
        return;
    };
    let daemon = access_daemon();
    let socket = daemon.socket();
    let (member, etl) = (&accounts.member, &accounts.etl_member);

    let line = denied(
        &member.hfctl(socket, &["submit", "open", "--tenant", "acme"]),
        "submitting for a tenant limited to a group the member is not in",
    );
    assert!(
        line.contains("acme") && line.contains(CHAIN_GROUP),
        "the refusal names the tenant and its groups: {line}"
    );
    // The same chain without the tenant: the refusal was the tenant's.
    let untenanted = member.submit(socket, "open", &[]);
    let tenanted = etl.submit(socket, "open", &["--tenant", "acme"]);

    let job = daemon.wait_done(tenanted);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.tenant.as_deref(), Some("acme"), "{job:#?}");
    assert_eq!(job.submitter_uid, Some(etl.uid), "{job:#?}");
    assert_eq!(daemon.wait_done(untenanted).state, JobState::Succeeded);
    let jobs: JobList = serde_json::from_value(daemon.hfctl_json(&["list"])).expect("a job list");
    assert_eq!(
        jobs.jobs.len(),
        2,
        "the refused submission made no job: {jobs:#?}"
    );

    assert_audited(
        &daemon,
        &[
            audited(member, "job.submit", Some("open"), "refused"),
            audited(member, "job.submit", Some("open"), "ok"),
            audited(etl, "job.submit", Some("open"), "ok"),
        ],
    );
}

#[test]
fn jobs_are_cancelled_and_reprocessed_by_their_submitter_or_an_operator() {
    let Some(accounts) =
        accounts_or_skip("jobs_are_cancelled_and_reprocessed_by_their_submitter_or_an_operator")
    else {
        return;
    };
    let daemon = access_daemon();
    let socket = daemon.socket();
    let (member, etl, operator) = (&accounts.member, &accounts.etl_member, &accounts.operator);
    let running = |job_id: u64| {
        daemon.wait_for(job_id, "running", |job| job.state == JobState::Running);
    };

    let own = member.submit(socket, "hold", &[]);
    let others = etl.submit(socket, "hold", &[]);
    running(own);
    running(others);

    succeeded(
        &member.hfctl(socket, &["cancel", &own.to_string()]),
        "the member cancelling its own running job",
    );
    assert_eq!(daemon.wait_done(own).state, JobState::Cancelled);

    let line = denied(
        &member.hfctl(socket, &["cancel", &others.to_string()]),
        "the member cancelling another user's job",
    );
    assert!(line.contains(&others.to_string()), "{line}");
    assert_eq!(
        daemon.status(others).state,
        JobState::Running,
        "a refused cancel leaves the job running"
    );
    succeeded(
        &operator.hfctl(socket, &["cancel", &others.to_string()]),
        "an operator cancelling another user's job",
    );
    assert_eq!(daemon.wait_done(others).state, JobState::Cancelled);

    let failed = etl.submit(socket, "fails", &[]);
    assert_eq!(daemon.wait_done(failed).state, JobState::Failed);
    denied(
        &member.hfctl(socket, &["retry", &failed.to_string()]),
        "the member reprocessing another user's failed job",
    );
    for who in [etl, operator] {
        let answer = who.hfctl_json(socket, &["retry", &failed.to_string()]);
        let job_id = answer["job_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("`hfctl --json retry` printed no job_id: {answer}"));
        let job = daemon.wait_done(job_id);
        assert_eq!(job.retry_of, Some(failed), "{job:#?}");
        assert_eq!(job.submitter_uid, Some(who.uid), "{job:#?}");
    }
    let jobs: JobList = serde_json::from_value(daemon.hfctl_json(&["list"])).expect("a job list");
    assert_eq!(
        jobs.jobs.len(),
        5,
        "the refused retry made no job: {jobs:#?}"
    );

    assert_audited(
        &daemon,
        &[
            audited(member, "job.cancel", Some(&job_target(own)), "ok"),
            audited(member, "job.cancel", Some(&job_target(others)), "refused"),
            audited(operator, "job.cancel", Some(&job_target(others)), "ok"),
            audited(member, "job.retry", Some(&job_target(failed)), "refused"),
            audited(etl, "job.retry", Some(&job_target(failed)), "ok"),
            audited(operator, "job.retry", Some(&job_target(failed)), "ok"),
        ],
    );
}

#[test]
fn reloading_and_operating_schedules_are_for_operators() {
    let Some(accounts) = accounts_or_skip("reloading_and_operating_schedules_are_for_operators")
    else {
        return;
    };
    let daemon = access_daemon();
    let socket = daemon.socket();
    let (member, operator) = (&accounts.member, &accounts.operator);
    let schedule = "scheduled.yearly";
    let yearly = |who: &Account| -> ScheduleInfo {
        let all: Vec<ScheduleInfo> = serde_json::from_value(who.hfctl_json(socket, &["schedules"]))
            .expect("`hfctl --json schedules` prints schedules");
        all.into_iter()
            .find(|s| s.chain == "scheduled" && s.name == "yearly")
            .unwrap_or_else(|| panic!("no schedule {schedule}"))
    };

    denied(
        &member.hfctl(socket, &["reload"]),
        "`hfctl reload` by the member",
    );
    for action in ["pause", "resume", "trigger"] {
        let line = denied(
            &member.hfctl(socket, &["schedule", action, schedule]),
            &format!("`hfctl schedule {action}` by the member"),
        );
        assert!(line.contains("operator"), "{line}");
    }
    let backfill = [
        "schedule",
        "backfill",
        schedule,
        "--from",
        "2020-01-01",
        "--to",
        "2025-12-31",
    ];
    let line = denied(
        &member.hfctl(socket, &backfill),
        "`hfctl schedule backfill` by the member",
    );
    assert!(line.contains("operator"), "{line}");
    let untouched = yearly(member);
    assert!(
        !untouched.paused && untouched.last_job.is_none(),
        "refused calls changed nothing: {untouched:#?}"
    );

    succeeded(
        &operator.hfctl(socket, &["reload"]),
        "`hfctl reload` by an operator",
    );
    succeeded(
        &operator.hfctl(socket, &["schedule", "pause", schedule]),
        "`hfctl schedule pause` by an operator",
    );
    assert!(yearly(operator).paused, "the operator paused it");
    succeeded(
        &operator.hfctl(socket, &["schedule", "resume", schedule]),
        "`hfctl schedule resume` by an operator",
    );
    assert!(!yearly(operator).paused, "the operator resumed it");
    let planned = operator.hfctl_json(socket, &[&backfill[..], &["--dry-run"]].concat());
    assert_eq!(
        planned["fires"].as_array().map(Vec::len),
        Some(6),
        "one fire per January 1st of 2020-2025: {planned:#}"
    );
    let fired: ScheduleInfo =
        serde_json::from_value(operator.hfctl_json(socket, &["schedule", "trigger", schedule]))
            .expect("`hfctl --json schedule trigger` prints the schedule");
    let job_id = fired
        .last_job
        .unwrap_or_else(|| panic!("a trigger names the job it made: {fired:#?}"));
    let job = daemon.wait_done(job_id);
    assert_eq!(
        (job.chain.as_str(), job.state),
        ("scheduled", JobState::Succeeded),
        "{job:#?}"
    );

    let target = Some(schedule);
    assert_audited(
        &daemon,
        &[
            audited(member, "config.reload", None, "refused"),
            audited(member, "schedule.pause", target, "refused"),
            audited(member, "schedule.resume", target, "refused"),
            audited(member, "schedule.trigger", target, "refused"),
            audited(member, "schedule.backfill", target, "refused"),
            audited(operator, "config.reload", None, "ok"),
            audited(operator, "schedule.pause", target, "ok"),
            audited(operator, "schedule.resume", target, "ok"),
            audited(operator, "schedule.trigger", target, "ok"),
            audited(operator, "schedule.backfill", target, "ok"),
        ],
    );
}

/// `KEY=VALUE` lines of a [`REPORT`] log.
fn report_of(log: &str) -> std::collections::BTreeMap<String, String> {
    log.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A user's group ids as `id -G NAME` lists them.
fn groups_of(name: &str) -> BTreeSet<String> {
    let output = Command::new("id")
        .args(["-G", name])
        .output()
        .expect("id can be run");
    assert!(output.status.success(), "id -G {name}: {}", shown(&output));
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn word_set(text: &str) -> BTreeSet<String> {
    text.split_whitespace().map(str::to_string).collect()
}

#[test]
fn an_activity_runs_as_its_user_with_that_users_environment() {
    let Some(accounts) =
        accounts_or_skip("an_activity_runs_as_its_user_with_that_users_environment")
    else {
        return;
    };
    let target = &accounts.run_as;
    let report = toml_literal(REPORT);
    let named = format!(
        r#"
[process.p.activity.as-user]
user = "hft-runas"
env = {{ HFT_FROM_CHAIN = "kept" }}
shell = {report}

[process.p.activity.as-daemon]
shell = {report}

[process.p.activity.elsewhere]
user = "hft-runas"
working_dir = "/tmp"
shell = "pwd"
"#
    );
    let defaults = format!(
        r#"
[defaults]
user = "hft-runas"
group = "hft-data"

[process.p.activity.report]
shell = {report}
"#
    );
    let mut daemon = TestDaemon::prepare(
        Some(r#"run_as_allowed = ["hft-runas"]"#),
        &[("named.toml", &named), ("defaults.toml", &defaults)],
    );
    daemon.set_env("HFT_DAEMON_ONLY", DAEMON_ONLY);
    let daemon_path = format!(
        "{DAEMON_PATH_MARK}:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    daemon.set_env("PATH", &daemon_path);
    daemon.launch();

    let job_id = daemon.submit("named", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");

    // The control: without `user` the activity is the daemon's, environment
    // and all, so the variables below really were there to leak.
    let control = report_of(&daemon.logs(job_id, "p.as-daemon", None));
    assert_eq!(control["uid"], "0", "{control:#?}");
    assert_eq!(control["daemon_only"], DAEMON_ONLY, "{control:#?}");
    assert!(
        control["path"].starts_with(DAEMON_PATH_MARK),
        "{control:#?}"
    );

    let seen = report_of(&daemon.logs(job_id, "p.as-user", None));
    assert_eq!(seen["uid"], target.uid.to_string(), "{seen:#?}");
    assert_eq!(seen["gid"], target.gid.to_string(), "{seen:#?}");
    let groups = groups_of(&target.name);
    assert!(
        groups.contains(&group_id(EXTRA_GROUP).to_string()),
        "the run-as user has its supplementary group: {groups:?}"
    );
    assert_eq!(
        word_set(&seen["groups"]),
        groups,
        "the activity has exactly the user's groups: {seen:#?}"
    );
    let home = target.home.to_string_lossy();
    assert_eq!(seen["home"], home, "{seen:#?}");
    assert_eq!(
        seen["cwd"], home,
        "without working_dir: the home: {seen:#?}"
    );
    assert_eq!(seen["user"], target.name, "{seen:#?}");
    assert_eq!(seen["logname"], target.name, "{seen:#?}");
    assert_eq!(seen["shell"], "/bin/sh", "{seen:#?}");
    assert!(
        seen["path"].split(':').any(|dir| dir == "/usr/bin")
            && !seen["path"].contains(DAEMON_PATH_MARK),
        "a standard PATH, not the daemon's: {seen:#?}"
    );
    assert_eq!(seen["daemon_only"], "absent", "{seen:#?}");
    assert_eq!(
        seen["from_chain"], "kept",
        "the chain's env stays: {seen:#?}"
    );

    assert_eq!(
        daemon.logs(job_id, "p.elsewhere", None).trim(),
        "/tmp",
        "working_dir beats the home"
    );

    let job_id = daemon.submit("defaults", &[]);
    assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);
    let seen = report_of(&daemon.logs(job_id, "p.report", None));
    assert_eq!(
        seen["uid"],
        target.uid.to_string(),
        "[defaults] user: {seen:#?}"
    );
    let data = group_id(EXTRA_GROUP).to_string();
    assert_eq!(seen["gid"], data, "[defaults] group: {seen:#?}");
    assert!(word_set(&seen["groups"]).contains(&data), "{seen:#?}");
    assert_eq!(seen["daemon_only"], "absent", "{seen:#?}");
}

#[test]
fn only_users_in_run_as_allowed_may_be_named() {
    let Some(accounts) = accounts_or_skip("only_users_in_run_as_allowed_may_be_named") else {
        return;
    };
    let not_listed = r#"
[process.p.activity.sneak]
user = "hft-member"
command = ["true"]
"#;
    let as_root = r#"
[process.p.activity.escalate]
user = "root"
shell = "id -u"
"#;
    let daemon = TestDaemon::start_with(
        r#"run_as_allowed = ["hft-runas"]"#,
        &[("not-listed.toml", not_listed), ("as-root.toml", as_root)],
    );
    let workflows: Vec<WorkflowSummary> =
        serde_json::from_value(daemon.hfctl_json(&["workflows"])).expect("a workflow list");
    for (chain, user) in [
        ("not-listed", accounts.member.name.as_str()),
        ("as-root", "root"),
    ] {
        let summary = workflows
            .iter()
            .find(|w| w.name == chain)
            .unwrap_or_else(|| panic!("{chain} is listed: {workflows:#?}"));
        let message = summary
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        assert!(
            summary.status == "broken"
                && message.contains(user)
                && message.contains("run_as_allowed"),
            "{chain} is refused at load, naming {user} and run_as_allowed: {summary:#?}"
        );
        let submitted = daemon.hfctl(&["submit", chain]);
        assert_eq!(
            submitted.status.code(),
            Some(6),
            "a chain refused at load cannot be submitted: {}",
            shown(&submitted)
        );
    }
    let jobs: JobList = serde_json::from_value(daemon.hfctl_json(&["list"])).expect("a job list");
    assert!(jobs.jobs.is_empty(), "nothing ran: {jobs:#?}");

    // Listed, root may be named.
    let daemon =
        TestDaemon::start_with(r#"run_as_allowed = ["root"]"#, &[("as-root.toml", as_root)]);
    let job_id = daemon.submit("as-root", &[]);
    assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);
    assert_eq!(daemon.logs(job_id, "p.escalate", None).trim(), "0");
}

/// `text` as a TOML multi-line literal string (no escapes inside).
fn toml_literal(text: &str) -> String {
    assert!(!text.contains("'''"), "a literal string cannot hold '''");
    format!("'''\n{text}'''")
}

#[test]
fn a_user_mode_daemon_shares_its_socket_only_when_socket_group_is_set() {
    let Some(accounts) =
        accounts_or_skip("a_user_mode_daemon_shares_its_socket_only_when_socket_group_is_set")
    else {
        return;
    };
    let (member, outsider) = (&accounts.member, &accounts.outsider);
    for shared in [false, true] {
        let settings = if shared {
            format!("socket_group = \"{SOCKET_GROUP}\"\n")
        } else {
            String::new()
        };
        let daemon = TestDaemon::start_with(&settings, &[("open.toml", OPEN)]);
        // The fixture's directory is private; open it for passing through,
        // as a shared socket's directory must be.
        fs::set_permissions(daemon.dir(), fs::Permissions::from_mode(0o711))
            .expect("open the fixture directory");
        let meta = fs::metadata(daemon.socket()).expect("the socket exists");
        if shared {
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o660,
                "shared socket mode"
            );
            assert_eq!(meta.gid(), group_id(SOCKET_GROUP), "shared socket group");
            succeeded(
                &member.hfctl(daemon.socket(), &["info"]),
                "a socket_group member talking to a shared user-mode daemon",
            );
        } else {
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o600,
                "private socket mode"
            );
            refused(
                &member.hfctl(daemon.socket(), &["info"]),
                "a group member talking to a private user-mode daemon",
            );
        }
        refused(
            &outsider.hfctl(daemon.socket(), &["info"]),
            "an outsider talking to a user-mode daemon",
        );
    }
}
