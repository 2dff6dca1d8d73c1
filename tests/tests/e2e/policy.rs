//! Today's policy for jobs pinned to older definitions, and request
//! hygiene: a reprocess (`hfctl retry`) or a resume after a restart is
//! checked again against the current `run_as_allowed`, the chain's `allow`
//! and the tenant's `groups`, and refused (audited) when they no longer
//! admit it; `job.submit`'s `request_id` makes a repeated submission answer
//! with the first job; unknown named parameters are refused naming them;
//! `hfctl logs` says why a log is empty.
//!
//! The access tests use real users (`holdfast_tests::users`): without root
//! they say so and pass, unless `HOLDFAST_USERS_TEST=required`.

use std::fs;
use std::time::Duration;

use holdfast_api::{ActivityState, AttemptState, JobList, JobState};
use holdfast_tests::TestDaemon;
use holdfast_tests::http::{rpc_call, rpc_raw};
use holdfast_tests::process::{gone_within, with_environment};
use holdfast_tests::users::SystemDaemon;
use serde_json::json;

use crate::support::{activity, shown};
use crate::users::{accounts_or_skip, audit, denied, job_target, refused};

/// The settings of the system daemon the access tests use: unnamed
/// activities run as the run-as user.
const SYSTEM_SETTINGS: &str = r#"
socket_group = "hft-sock"
operator_groups = ["hft-ops"]
run_as_default = "hft-runas"
kill_grace = "2s"
"#;

/// Fails, so a reprocess has something to run again.
const GUARDED: &str = r#"
[chain]
allow = ["group:hft-etl"]

[process.p.activity.work]
shell = "exit 3"
"#;

/// [`GUARDED`] with its `allow` list narrowed to one user.
const GUARDED_TIGHTENED: &str = r#"
[chain]
allow = ["user:hft-operator"]

[process.p.activity.work]
shell = "exit 3"
"#;

/// Open to anyone on the socket; fails.
const FAILS: &str = r#"
[process.p.activity.fail]
shell = "exit 3"
"#;

/// A run-as chain for a user-mode daemon running as root.
const AS_RUNAS_FAILS: &str = r#"
[process.p.activity.work]
user = "hft-runas"
shell = "id -un; exit 3"
"#;

const AS_RUNAS_HOLDS: &str = r#"
[process.p.activity.hold]
user = "hft-runas"
command = ["sleep", "300"]
"#;

const RUN_AS_ALLOWED: &str = r#"run_as_allowed = ["hft-runas"]"#;
const RUN_AS_EMPTIED: &str = "run_as_allowed = []";

const QUICK: &str = r#"
[params.size]
type = "int"
default = 1

[process.p.activity.talk]
shell = "echo hello"

[process.p.activity.quiet]
command = ["true"]
"#;

fn jobs(daemon: &TestDaemon) -> JobList {
    serde_json::from_value(daemon.hfctl_json(&["list"])).expect("a job list")
}

/// The audit has a refusal of `method` on `target` whose detail contains
/// `words`; returns that detail.
fn refusal_audited(daemon: &TestDaemon, method: &str, target: &str, uid: u32, words: &str) {
    let entries = audit(daemon);
    assert!(
        entries.iter().any(|e| e.method == method
            && e.target.as_deref() == Some(target)
            && e.uid == Some(uid)
            && e.outcome == "refused"
            && e.detail.as_deref().is_some_and(|d| d.contains(words))),
        "the audit has {method} on {target} by uid {uid} refused with {words:?}: {entries:#?}"
    );
}

/// After `run_as_allowed` was emptied and the daemon restarted, reprocessing
/// a job of a chain that runs as that user is refused (PERMISSION_DENIED,
/// audited) and makes no job: the pinned definition is checked against
/// today's settings, not only against the `allow` it was submitted with.
#[test]
fn retry_is_refused_once_run_as_allowed_no_longer_lists_the_user() {
    if accounts_or_skip("retry_is_refused_once_run_as_allowed_no_longer_lists_the_user").is_none() {
        return;
    }
    let mut daemon = TestDaemon::start_with(RUN_AS_ALLOWED, &[("runas.toml", AS_RUNAS_FAILS)]);
    let job_id = daemon.submit("runas", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(
        daemon.logs(job_id, "p.work", None).trim(),
        "hft-runas",
        "the activity ran as the run-as user"
    );

    daemon.stop();
    fs::write(daemon.config_path(), RUN_AS_EMPTIED).expect("the settings can be rewritten");
    daemon.launch();

    let output = daemon.hfctl(&["retry", &job_id.to_string()]);
    let line = refused(
        &output,
        "reprocessing a job whose user was removed from run_as_allowed",
    );
    assert!(
        line.contains("run_as_allowed") && line.contains("hft-runas"),
        "the refusal names the user and the setting: {line}"
    );
    assert_eq!(jobs(&daemon).jobs.len(), 1, "the refused retry made no job");
    refusal_audited(
        &daemon,
        "job.retry",
        &job_target(job_id),
        0,
        "run_as_allowed",
    );
}

/// A chain whose `allow` was tightened: its submitter may no longer
/// reprocess the job (the current `allow` refuses), and neither may the
/// user the new `allow` names (the pinned `allow` refuses), since both must
/// admit the caller. Before the change the same retry worked.
#[test]
fn retry_is_refused_once_the_chains_allow_is_tightened() {
    let Some(accounts) = accounts_or_skip("retry_is_refused_once_the_chains_allow_is_tightened")
    else {
        return;
    };
    let daemon = SystemDaemon::start(SYSTEM_SETTINGS, &[("guarded.toml", GUARDED)], &[]);
    let socket = daemon.socket();
    let (etl, operator) = (&accounts.etl_member, &accounts.operator);

    let failed = etl.submit(socket, "guarded", &[]);
    assert_eq!(daemon.wait_done(failed).state, JobState::Failed);
    let before = etl.hfctl_json(socket, &["retry", &failed.to_string()]);
    let first_retry = before["job_id"].as_u64().expect("the retry made a job");
    assert_eq!(daemon.wait_done(first_retry).state, JobState::Failed);

    daemon.write_workflow("guarded.toml", GUARDED_TIGHTENED);
    let reload = daemon.hfctl(&["reload"]);
    assert!(reload.status.success(), "{}", shown(&reload));

    let line = denied(
        &etl.hfctl(socket, &["retry", &failed.to_string()]),
        "the submitter reprocessing after the chain's allow dropped its group",
    );
    assert!(
        line.contains("user:hft-operator"),
        "the current allow refuses: {line}"
    );
    let line = denied(
        &operator.hfctl(socket, &["retry", &failed.to_string()]),
        "an operator the new allow names, reprocessing a job pinned to the old allow",
    );
    assert!(
        line.contains("group:hft-etl"),
        "the pinned allow refuses: {line}"
    );
    assert_eq!(
        jobs(&daemon).jobs.len(),
        2,
        "the refused retries made no job"
    );
    refusal_audited(
        &daemon,
        "job.retry",
        &job_target(failed),
        etl.uid,
        "user:hft-operator",
    );
    refusal_audited(
        &daemon,
        "job.retry",
        &job_target(failed),
        operator.uid,
        "group:hft-etl",
    );
}

/// A tenant whose `groups` no longer include the submitter's group: the
/// job submitted for it may not be reprocessed.
#[test]
fn retry_is_refused_once_the_tenant_no_longer_admits_the_caller() {
    let Some(accounts) =
        accounts_or_skip("retry_is_refused_once_the_tenant_no_longer_admits_the_caller")
    else {
        return;
    };
    let daemon = SystemDaemon::start(
        SYSTEM_SETTINGS,
        &[("fails.toml", FAILS)],
        &[("acme", "groups = [\"hft-etl\"]\n")],
    );
    let socket = daemon.socket();
    let etl = &accounts.etl_member;

    let failed = etl.submit(socket, "fails", &["--tenant", "acme"]);
    assert_eq!(daemon.wait_done(failed).state, JobState::Failed);

    daemon.write_tenant("acme", "groups = [\"hft-ops\"]\n");
    let reload = daemon.hfctl(&["reload"]);
    assert!(reload.status.success(), "{}", shown(&reload));

    let line = denied(
        &etl.hfctl(socket, &["retry", &failed.to_string()]),
        "reprocessing a tenant's job after the tenant dropped the submitter's group",
    );
    assert!(
        line.contains("acme") && line.contains("hft-ops"),
        "the refusal names the tenant and its groups: {line}"
    );
    assert_eq!(jobs(&daemon).jobs.len(), 1, "the refused retry made no job");
    refusal_audited(&daemon, "job.retry", &job_target(failed), etl.uid, "acme");
}

/// A job whose activity runs as a user that `run_as_allowed` no longer
/// lists when the daemon comes back from a crash is not resumed: the
/// process the dead daemon left is killed, no new attempt is made (so no
/// process is spawned), the job fails with the reason, and the refusal is
/// audited under the submitter's uid.
#[test]
fn a_resumed_job_that_may_no_longer_run_fails_and_starts_nothing() {
    if accounts_or_skip("a_resumed_job_that_may_no_longer_run_fails_and_starts_nothing").is_none() {
        return;
    }
    let mut daemon = TestDaemon::start_with(RUN_AS_ALLOWED, &[("holds.toml", AS_RUNAS_HOLDS)]);
    let job_id = daemon.submit("holds", &[]);
    let running = daemon.wait_for(job_id, "running with its pid recorded", |job| {
        job.activities
            .first()
            .and_then(|a| a.attempts.first())
            .is_some_and(|t| t.pid.is_some())
    });
    let pid = activity(&running, "p.hold").attempts[0]
        .pid
        .expect("the pid is recorded") as i32;

    daemon.kill9();
    fs::write(daemon.config_path(), RUN_AS_EMPTIED).expect("the settings can be rewritten");
    daemon.launch();

    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let reason = job.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("run_as_allowed") && reason.contains("hft-runas"),
        "the job says why it was not resumed: {job:#?}"
    );
    let hold = activity(&job, "p.hold");
    assert_eq!(hold.state, ActivityState::Skipped, "{job:#?}");
    assert_eq!(hold.attempts.len(), 1, "no attempt was started: {job:#?}");
    assert_eq!(
        hold.attempts[0].state,
        AttemptState::Interrupted,
        "{job:#?}"
    );
    assert!(
        gone_within(pid, Duration::from_secs(10)),
        "the process the dead daemon left was killed"
    );
    assert!(
        with_environment(
            "HF_DAEMON",
            &daemon.state_dir().join("holdfast.db").to_string_lossy()
        )
        .is_empty(),
        "no process of this daemon runs"
    );
    refusal_audited(
        &daemon,
        "job.resume",
        &job_target(job_id),
        0,
        "run_as_allowed",
    );
}

/// Runs until stopped; the chain group may submit it.
const GROUP_HOLDS: &str = r#"
[chain]
allow = ["group:hft-etl"]

[process.p.activity.hold]
command = ["sleep", "300"]
"#;

/// [`GROUP_HOLDS`] with its `allow` list narrowed to one user.
const GROUP_HOLDS_TIGHTENED: &str = r#"
[chain]
allow = ["user:hft-operator"]

[process.p.activity.hold]
command = ["sleep", "300"]
"#;

/// After a crash, jobs resume as their submitter, whose groups are looked
/// up in the user database (there is no connection to ask): a job of a
/// chain whose `allow` still names the submitter's group resumes, one whose
/// `allow` was narrowed meanwhile fails with the reason, audited under the
/// submitter's uid. The two chains have the same text, so one definition
/// version: each job still resumes as its own chain (before, both resumed
/// as whichever chain was found first, and its `allow` was checked).
#[test]
fn resuming_checks_the_submitters_groups_against_the_current_allow() {
    let Some(accounts) =
        accounts_or_skip("resuming_checks_the_submitters_groups_against_the_current_allow")
    else {
        return;
    };
    // The same text in both files, so both share one definition version:
    // each job must still resume as its own chain.
    let mut daemon = SystemDaemon::start(
        SYSTEM_SETTINGS,
        &[("kept.toml", GROUP_HOLDS), ("narrowed.toml", GROUP_HOLDS)],
        &[],
    );
    let etl = &accounts.etl_member;
    let kept = etl.submit(daemon.socket(), "kept", &[]);
    let narrowed = etl.submit(daemon.socket(), "narrowed", &[]);
    for job_id in [kept, narrowed] {
        daemon.wait_for(job_id, "running with its pid recorded", |job| {
            job.activities
                .first()
                .and_then(|a| a.attempts.first())
                .is_some_and(|t| t.pid.is_some())
        });
    }

    daemon.kill9();
    daemon.write_workflow("narrowed.toml", GROUP_HOLDS_TIGHTENED);
    daemon.launch();

    let job = daemon.wait_done(narrowed);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert!(
        job.reason
            .as_deref()
            .is_some_and(|r| r.contains("user:hft-operator")),
        "the job says the current allow refuses it: {job:#?}"
    );
    assert_eq!(activity(&job, "p.hold").attempts.len(), 1, "{job:#?}");
    let resumed = daemon.wait_for(kept, "running its second attempt", |job| {
        job.state == JobState::Running
            && job
                .activities
                .first()
                .is_some_and(|a| a.attempts.len() == 2 && a.state == ActivityState::Running)
    });
    assert_eq!(resumed.submitter_uid, Some(etl.uid), "{resumed:#?}");
    refusal_audited(
        &daemon,
        "job.resume",
        &job_target(narrowed),
        etl.uid,
        "user:hft-operator",
    );
    let refusals = audit(&daemon)
        .into_iter()
        .filter(|e| e.outcome == "refused")
        .count();
    assert_eq!(refusals, 1, "only the narrowed job was refused");

    let cancel = daemon.hfctl(&["cancel", &kept.to_string()]);
    assert!(cancel.status.success(), "{}", shown(&cancel));
    assert_eq!(daemon.wait_done(kept).state, JobState::Cancelled);
}

/// The same `request_id` again (even after a restart) answers with the
/// first job and makes no second one; the same key with another request is
/// refused as INVALID_PARAMETERS naming `request_id`.
#[test]
fn a_repeated_request_id_answers_with_the_first_job() {
    let mut daemon = TestDaemon::start(&[("quick.toml", QUICK)]);
    let submit = |daemon: &TestDaemon, extra: &[&str]| {
        let mut args = vec!["submit", "quick", "--request-id", "nightly-2026-12-04"];
        args.extend_from_slice(extra);
        daemon.hfctl_json(&args)["job_id"]
            .as_u64()
            .expect("a job id")
    };
    let first = submit(&daemon, &["-p", "size=2"]);
    assert_eq!(
        submit(&daemon, &["-p", "size=2"]),
        first,
        "the same key, the same job"
    );
    assert_eq!(daemon.wait_done(first).state, JobState::Succeeded);
    daemon.restart();
    let again = daemon.hfctl_json(&[
        "submit",
        "quick",
        "-p",
        "size=2",
        "--request-id",
        "nightly-2026-12-04",
    ]);
    assert_eq!(again["job_id"].as_u64(), Some(first), "{again}");
    assert_eq!(
        again["state"], "succeeded",
        "the first job as it is now: {again}"
    );
    assert_eq!(jobs(&daemon).jobs.len(), 1, "one job for one key");

    let other = daemon.hfctl(&[
        "submit",
        "quick",
        "-p",
        "size=3",
        "--request-id",
        "nightly-2026-12-04",
    ]);
    assert_eq!(other.status.code(), Some(8), "{}", shown(&other));
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        stderr.contains("request_id") && stderr.contains(&format!("job {first}")),
        "the refusal names the key's field and its job: {}",
        shown(&other)
    );
    let fresh = daemon.hfctl_json(&["submit", "quick", "--request-id", "another-key"])["job_id"]
        .as_u64()
        .expect("a job id");
    assert_ne!(fresh, first, "a new key makes a new job");
    assert_eq!(jobs(&daemon).jobs.len(), 2);
}

/// A named parameter a method does not take (`prority`) is refused with
/// -32602 naming it, by every method, in a batch too, and nothing is done.
#[test]
fn unknown_named_parameters_are_refused_naming_them() {
    let daemon = TestDaemon::start(&[("quick.toml", QUICK)]);
    let answer = rpc_call(
        daemon.socket(),
        "job.submit",
        json!({"target": "quick", "prority": 5}),
    );
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("prority") && message.contains("priority"),
        "the error names the unknown field and what the method takes: {answer}"
    );
    assert_eq!(
        jobs(&daemon).jobs.len(),
        0,
        "the refused submission made no job"
    );

    let answer = rpc_call(daemon.socket(), "job.list", json!({"limt": 3}));
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("limt")
    );
    let answer = rpc_call(daemon.socket(), "daemon.info", json!({"verbose": true}));
    assert_eq!(answer["error"]["code"], -32602, "{answer}");

    let batch = rpc_raw(
        daemon.socket(),
        &json!([
            {"jsonrpc": "2.0", "id": 1, "method": "job.list", "params": {"limit": 3}},
            {"jsonrpc": "2.0", "id": 2, "method": "job.submit", "params": {"target": "quick", "simulat": true}},
        ])
        .to_string(),
    );
    let answers = batch.as_array().expect("a batch answer");
    let by_id = |id: u64| {
        answers
            .iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer {id} in {batch}"))
    };
    assert!(by_id(1)["result"].is_object(), "{batch}");
    assert_eq!(by_id(2)["error"]["code"], -32602, "{batch}");
    assert!(
        by_id(2)["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("simulat")
    );
    assert_eq!(
        jobs(&daemon).jobs.len(),
        0,
        "the refused batch entry made no job"
    );

    // Known names still work.
    let answer = rpc_call(
        daemon.socket(),
        "job.submit",
        json!({"target": "quick", "priority": 5}),
    );
    assert!(answer["result"]["job_id"].is_u64(), "{answer}");
}

/// A log file that cannot be created (its job's log directory is taken by a
/// plain file) is reported as such, with the reason, not as output dropped
/// at the size cap; an activity that printed nothing says so.
#[test]
fn hfctl_logs_says_why_a_log_is_empty() {
    let daemon = TestDaemon::start(&[("quick.toml", QUICK)]);
    let logs = daemon.state_dir().join("logs");
    fs::create_dir_all(&logs).expect("the logs directory can be made");
    // Job ids start at 1: its log directory cannot be made.
    fs::write(logs.join("1"), "not a directory").expect("the blocker can be written");

    let job_id = daemon.submit("quick", &[]);
    assert_eq!(job_id, 1, "a fresh daemon's first job");
    assert_eq!(daemon.wait_done(job_id).state, JobState::Succeeded);

    let output = daemon.hfctl(&["logs", "1", "p.talk"]);
    assert!(output.status.success(), "{}", shown(&output));
    assert!(output.stdout.is_empty(), "{}", shown(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("could not create") && stderr.contains("Not a directory"),
        "says the log could not be created, and why: {}",
        shown(&output)
    );
    assert!(!stderr.contains("size cap"), "{}", shown(&output));

    // Job 2's log directory can be made; its quiet activity printed nothing.
    let second = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(second).state, JobState::Succeeded);
    assert_eq!(daemon.logs(second, "p.talk", None), "hello\n");
    let output = daemon.hfctl(&["logs", &second.to_string(), "p.quiet"]);
    assert!(output.status.success(), "{}", shown(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("printed no output") && !stderr.contains("size cap"),
        "{}",
        shown(&output)
    );
}

/// A chain with a secret parameter, for the idempotency-key test.
const SECRET_PARAM: &str = r#"
[params.token]
type = "string"
secret = true

[process.p.activity.use]
shell = 'test -n "$HF_PARAM_TOKEN"'
"#;

/// Every file under `dir`, with its bytes.
fn files_under(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for entry in fs::read_dir(dir).expect("a readable directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else if let Ok(bytes) = fs::read(&path) {
            out.push((path, bytes));
        }
    }
}

/// The request kept with a `request_id` never holds a secret parameter's
/// value: it is masked there, as everywhere else outside `job_secrets`, so
/// it is not compared either (the same key with another secret value
/// answers with the first job).
#[test]
fn a_request_id_keeps_no_secret_value() {
    const SECRET: &str = "tok-5e6b1d0c-not-for-the-store";
    let daemon = TestDaemon::start(&[("secret.toml", SECRET_PARAM)]);
    let submit = |value: &str| {
        let param = format!("token={value}");
        daemon.hfctl_json(&[
            "submit",
            "secret",
            "-p",
            &param,
            "--request-id",
            "with-secret",
        ])["job_id"]
            .as_u64()
            .expect("a job id")
    };
    let first = submit(SECRET);
    assert_eq!(daemon.wait_done(first).state, JobState::Succeeded);
    assert_eq!(submit(SECRET), first);
    assert_eq!(
        submit("another-value"),
        first,
        "secret values are not compared"
    );
    assert_eq!(jobs(&daemon).jobs.len(), 1);

    let mut files = Vec::new();
    files_under(&daemon.state_dir(), &mut files);
    assert!(!files.is_empty(), "the state directory has the database");
    for (path, bytes) in &files {
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the secret value",
            path.display()
        );
    }
}
