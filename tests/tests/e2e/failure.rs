//! Failures: skipped dependants, `on_failure = "continue"`, retries and their
//! error ids, and what `hfctl submit --wait` exits with.

use std::collections::HashSet;

use holdfast_api::{ActivityState, AttemptState, JobState};
use holdfast_tests::TestDaemon;

use crate::support::{activity, shown};

const BRANCHES: &str = r#"
[chain]
max_parallel = 4

[defaults]
retries = 0

[process.bad.activity.boom]
shell = "echo about to fail; exit 3"

[process.after_bad]
after = ["bad"]

[process.after_bad.activity.never]
shell = "touch @DIR@/never-$HF_JOB_ID"

[process.other.activity.slow]
shell = "sleep 0.3; touch @DIR@/other-$HF_JOB_ID"

[process.after_other]
after = ["other"]

[process.after_other.activity.later]
shell = "touch @DIR@/later-$HF_JOB_ID"
"#;

#[test]
fn a_failure_skips_dependants_and_independent_branches_still_run() {
    let daemon = TestDaemon::start(&[("branches.toml", BRANCHES)]);
    let job_id = daemon.submit("branches", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert!(job.finished_at.is_some(), "{job:#?}");

    let boom = activity(&job, "bad.boom");
    assert_eq!(boom.state, ActivityState::Failed, "{boom:#?}");
    assert_eq!(
        boom.attempts.len(),
        1,
        "retries = 0 means one attempt: {boom:#?}"
    );
    let attempt = &boom.attempts[0];
    assert_eq!(attempt.state, AttemptState::Failed, "{attempt:#?}");
    assert_eq!(attempt.exit_code, Some(3), "{attempt:#?}");
    assert!(
        attempt.error_id.is_some(),
        "a failure carries an error id: {attempt:#?}"
    );
    assert!(attempt.finished_at.is_some(), "{attempt:#?}");

    let never = activity(&job, "after_bad.never");
    assert_eq!(never.state, ActivityState::Skipped, "{never:#?}");
    assert!(
        never.attempts.is_empty(),
        "a skipped activity never ran: {never:#?}"
    );
    assert!(!daemon.dir().join(format!("never-{job_id}")).exists());

    for path in ["other.slow", "after_other.later"] {
        let run = activity(&job, path);
        assert_eq!(
            run.state,
            ActivityState::Succeeded,
            "independent branch {path}: {run:#?}"
        );
    }
    assert!(daemon.dir().join(format!("other-{job_id}")).exists());
    assert!(daemon.dir().join(format!("later-{job_id}")).exists());

    assert!(
        daemon
            .logs(job_id, "bad.boom", None)
            .contains("about to fail"),
        "the failed attempt's output is in its log"
    );

    // `--wait` reports the outcome in the exit code: 4 for a failed job.
    let waited = daemon.hfctl(&["submit", "branches", "--wait"]);
    assert_eq!(waited.status.code(), Some(4), "{}", shown(&waited));
}

#[test]
fn continue_on_failure_ends_succeeded_with_an_alert() {
    let chain = r#"
[defaults]
retries = 0

[process.first.activity.flaky]
shell = "exit 1"
on_failure = "continue"

[process.second]
after = ["first"]

[process.second.activity.next]
shell = "touch @DIR@/next-$HF_JOB_ID"
"#;
    let daemon = TestDaemon::start(&[("lenient.toml", chain)]);
    let job_id = daemon.submit("lenient", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert!(
        job.alerts >= 1,
        "a tolerated failure raises an alert: {job:#?}"
    );
    assert_eq!(
        job.last_alert.as_deref(),
        Some("lenient.first.flaky failed; the job goes on (on_failure = \"continue\")"),
        "{job:#?}"
    );
    assert_eq!(activity(&job, "first.flaky").state, ActivityState::Failed);
    assert_eq!(
        activity(&job, "second.next").state,
        ActivityState::Succeeded
    );
    assert!(daemon.dir().join(format!("next-{job_id}")).exists());

    let waited = daemon.hfctl(&["submit", "lenient", "--wait"]);
    assert_eq!(waited.status.code(), Some(0), "{}", shown(&waited));
}

#[test]
fn retries_are_counted_until_an_attempt_succeeds() {
    // Fails on the first two runs, succeeds on the third.
    let chain = r#"
[process.p.activity.flaky]
shell = '''
n=$(cat @DIR@/count 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > @DIR@/count
echo "attempt $HF_ATTEMPT run $n"
[ "$n" -ge 3 ]
'''
retries = 3
retry_delay = "10ms"
"#;
    let daemon = TestDaemon::start(&[("flaky.toml", chain)]);
    let job_id = daemon.submit("flaky", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let flaky = activity(&job, "p.flaky");
    assert_eq!(flaky.state, ActivityState::Succeeded, "{flaky:#?}");
    let states: Vec<AttemptState> = flaky.attempts.iter().map(|a| a.state).collect();
    assert_eq!(
        states,
        [
            AttemptState::Failed,
            AttemptState::Failed,
            AttemptState::Succeeded
        ],
        "{flaky:#?}"
    );
    let numbers: Vec<u32> = flaky.attempts.iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2, 3], "{flaky:#?}");
    assert_eq!(
        flaky.attempts[2].error_id, None,
        "a success has no error id"
    );
    let count = std::fs::read_to_string(daemon.dir().join("count")).expect("the activity counted");
    assert_eq!(count.trim(), "3", "the activity ran exactly three times");

    // Each attempt keeps its own log.
    for n in 1..=3u32 {
        let log = daemon.logs(job_id, "p.flaky", Some(n));
        assert!(
            log.contains(&format!("attempt {n} run {n}")),
            "log of attempt {n}: {log:?}"
        );
    }
}

#[test]
fn exhausted_retries_fail_with_a_distinct_error_id_per_attempt() {
    let chain = r#"
[process.p.activity.hopeless]
shell = "exit 7"
retries = 2
retry_delay = "10ms"
"#;
    let daemon = TestDaemon::start(&[("hopeless.toml", chain)]);
    let job_id = daemon.submit("hopeless", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let hopeless = activity(&job, "p.hopeless");
    assert_eq!(hopeless.state, ActivityState::Failed, "{hopeless:#?}");
    assert_eq!(
        hopeless.attempts.len(),
        3,
        "retries = 2 means three attempts: {hopeless:#?}"
    );
    let mut ids = HashSet::new();
    for attempt in &hopeless.attempts {
        assert_eq!(attempt.state, AttemptState::Failed, "{attempt:#?}");
        assert_eq!(attempt.exit_code, Some(7), "{attempt:#?}");
        let id = attempt
            .error_id
            .clone()
            .unwrap_or_else(|| panic!("a failed attempt has an error id: {attempt:#?}"));
        assert!(!id.is_empty());
        ids.insert(id);
    }
    assert_eq!(
        ids.len(),
        3,
        "error ids must be unique per failure: {ids:?}"
    );
}

#[test]
fn a_start_that_fails_says_which_step_failed() {
    let chain = r#"
[chain]
max_parallel = 3

[defaults]
retries = 0

[process.p]
mode = "parallel"

[process.p.activity.missing]
command = ["/nonexistent/holdfast-test-program"]

[process.p.activity.nowhere]
command = ["true"]
working_dir = "/nonexistent/holdfast-test-dir"

[process.p.activity.fine]
command = ["true"]
"#;
    let daemon = TestDaemon::start(&[("starts.toml", chain)]);
    let job_id = daemon.submit("starts", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let error_of = |path: &str| {
        let a = activity(&job, path);
        assert_eq!(a.attempts.len(), 1, "a failed start is not retried: {a:#?}");
        assert_eq!(a.attempts[0].state, AttemptState::SpawnError, "{a:#?}");
        a.attempts[0].error.clone().unwrap_or_default()
    };
    assert_eq!(
        error_of("p.missing"),
        "command not found: \"/nonexistent/holdfast-test-program\""
    );
    let nowhere = error_of("p.nowhere");
    assert!(
        nowhere
            .starts_with("cannot enter the working directory \"/nonexistent/holdfast-test-dir\": "),
        "{nowhere}"
    );
    assert_eq!(
        activity(&job, "p.fine").state,
        ActivityState::Succeeded,
        "{job:#?}"
    );
}
