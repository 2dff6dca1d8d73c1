//! Persistence: job history survives a graceful restart, and a daemon killed
//! mid-job resumes the interrupted attempt from its last checkpoint.

use holdfast_api::{ActivityState, AttemptState, JobState};
use holdfast_tests::TestDaemon;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::activity;

#[test]
fn job_history_survives_a_restart() {
    let chain = r#"
[process.p.activity.a]
shell = '''
echo "hello from $HF_JOB_ID"
echo 'output {"n": 1}' >&3
'''

[process.p.activity.b]
shell = '''
if [ -e @DIR@/b-ran ]; then echo second try; exit 0; fi
touch @DIR@/b-ran
echo first try
exit 2
'''
retries = 1
retry_delay = "10ms"
"#;
    let mut daemon = TestDaemon::start(&[("keep.toml", chain)]);
    let job_id = daemon.submit("keep", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(activity(&job, "p.b").attempts.len(), 2, "{job:#?}");

    let before = daemon.status_value(job_id);
    let logs_before = [
        daemon.logs(job_id, "p.a", None),
        daemon.logs(job_id, "p.b", Some(1)),
        daemon.logs(job_id, "p.b", Some(2)),
    ];
    assert_eq!(logs_before[1], "first try\n");

    daemon.restart();

    let after = daemon.status_value(job_id);
    assert_eq!(
        after, before,
        "`hfctl status {job_id} --json` changed across a restart"
    );
    let logs_after = [
        daemon.logs(job_id, "p.a", None),
        daemon.logs(job_id, "p.b", Some(1)),
        daemon.logs(job_id, "p.b", Some(2)),
    ];
    assert_eq!(logs_after, logs_before, "logs changed across a restart");

    let listed = daemon.hfctl_json(&["list"]);
    let ids: Vec<Value> = listed["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|job| job["id"].clone())
        .collect();
    assert!(
        ids.contains(&Value::from(job_id)),
        "the job is listed after a restart: {listed}"
    );

    let next = daemon.submit("keep", &[]);
    assert!(
        next > job_id,
        "job ids are not reused after a restart: {next} after {job_id}"
    );
}

#[test]
fn a_killed_daemon_resumes_the_interrupted_attempt_from_its_checkpoint() {
    let chain = r#"
[process.p.activity.resume]
shell = '''
if [ -e @DIR@/first-run ]; then
  echo "checkpoint=$HF_CHECKPOINT"
  exit 0
fi
touch @DIR@/first-run
echo 'checkpoint {"chunk": 5}' >&3
echo "progress 50 waiting" >&3
sleep 30
'''
retries = 1
"#;
    let mut daemon = TestDaemon::start(&[("resume.toml", chain)]);
    let job_id = daemon.submit("resume", &[]);
    // The progress line follows the checkpoint on the control channel, so
    // once progress shows, the checkpoint has been taken.
    let running = daemon.wait_for(job_id, "past its checkpoint", |job| {
        job.activities
            .iter()
            .any(|a| a.progress.unwrap_or(0.0) >= 50.0)
    });
    let orphan_group = running.activities[0].attempts[0].pid;

    daemon.kill9();
    daemon.launch();

    let job = daemon.wait_done(job_id);
    if let Some(pgid) = orphan_group.and_then(|pid| i32::try_from(pid).ok()) {
        // The old attempt's `sleep 30` may outlive a daemon killed with
        // SIGKILL; end it so that it does not outlive the test.
        let _ = kill(Pid::from_raw(-pgid), Signal::SIGKILL);
    }
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let resume = activity(&job, "p.resume");
    assert_eq!(resume.state, ActivityState::Succeeded, "{resume:#?}");
    let states: Vec<AttemptState> = resume.attempts.iter().map(|a| a.state).collect();
    assert_eq!(
        states,
        [AttemptState::Interrupted, AttemptState::Succeeded],
        "{resume:#?}"
    );
    let log = daemon.logs(job_id, "p.resume", Some(2));
    let checkpoint = log
        .lines()
        .find_map(|line| line.strip_prefix("checkpoint="))
        .unwrap_or_else(|| panic!("no checkpoint line in {log:?}"));
    let checkpoint: Value = serde_json::from_str(checkpoint)
        .unwrap_or_else(|e| panic!("HF_CHECKPOINT is not the saved JSON ({e}): {log:?}"));
    assert_eq!(
        checkpoint["chunk"], 5,
        "the retry sees the last checkpoint: {log:?}"
    );
}
