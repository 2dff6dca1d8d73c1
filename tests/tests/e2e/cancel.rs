//! Stopping activities: a timeout or a cancel ends the whole process group,
//! grandchildren included, and a queued job can be cancelled before it starts.

use std::time::{Duration, Instant};

use holdfast_api::{ActivityState, AttemptState, JobState};
use holdfast_tests::process::{gone_within, group_gone_within};
use holdfast_tests::{HFCTL_TIMEOUT, TestDaemon, finish_child_output};

use crate::support::{activity, shown};

/// How long a killed process may take to finish dying after the daemon
/// reported the attempt over.
const DYING: Duration = Duration::from_millis(500);

fn read_pid(path: &std::path::Path) -> i32 {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{} holds no pid: {text:?}", path.display()))
}

#[test]
fn a_timeout_kills_the_activity_and_its_grandchildren() {
    // The grandchild ignores SIGTERM, so only the SIGKILL after kill_grace
    // ends it; the shell itself dies at the SIGTERM, before its grandchild.
    let chain = r#"
[process.p.activity.hang]
shell = '''
sh -c 'trap "" TERM; exec sleep 1000' &
echo $! > @DIR@/grandchild
wait
'''
timeout = "1s"
retries = 0
"#;
    let daemon = TestDaemon::start_with("kill_grace = \"1s\"\n", &[("hang.toml", chain)]);
    let began = Instant::now();
    let job_id = daemon.submit("hang", &[]);
    let job = daemon.wait_done(job_id);
    let took = began.elapsed();

    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let hang = activity(&job, "p.hang");
    assert_eq!(hang.state, ActivityState::Failed, "{hang:#?}");
    assert_eq!(hang.attempts.len(), 1, "{hang:#?}");
    let attempt = &hang.attempts[0];
    assert_eq!(attempt.state, AttemptState::Timeout, "{attempt:#?}");
    assert!(attempt.error_id.is_some(), "{attempt:#?}");
    assert!(
        took >= Duration::from_secs(1),
        "the job ended before its 1s timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(15), "the timeout took {took:?}");

    let grandchild = read_pid(&daemon.dir().join("grandchild"));
    assert!(
        gone_within(grandchild, DYING),
        "grandchild {grandchild} (ignoring SIGTERM) survived the timeout"
    );
    let pid = attempt.pid.expect("a started attempt has a pid");
    let pgid = i32::try_from(pid).expect("pids fit in i32");
    let survivors = group_gone_within(pgid, DYING);
    assert!(
        survivors.is_empty(),
        "process group {pgid} still has {survivors:?}"
    );
}

#[test]
fn cancel_a_queued_job_before_it_starts() {
    let chain = r#"
[chain]
concurrency = 1

[process.p.activity.hold]
shell = "touch @DIR@/started-$HF_JOB_ID; sleep 30"
"#;
    let daemon = TestDaemon::start(&[("gate.toml", chain)]);
    let first = daemon.submit("gate", &[]);
    daemon.wait_for(first, "running its activity", |job| {
        job.activities
            .iter()
            .any(|a| a.state == ActivityState::Running)
    });

    // The second job waits behind the first; an hfctl waits for it.
    let waiter = daemon.hfctl_spawn(&["submit", "gate", "--wait"]);
    let second = wait_for_second_job(&daemon, first);
    let queued = daemon.status(second);
    assert_eq!(
        queued.state,
        JobState::Queued,
        "concurrency = 1 keeps it queued: {queued:#?}"
    );
    assert_eq!(queued.started_at, None, "{queued:#?}");

    let cancel = daemon.hfctl(&["cancel", &second.to_string()]);
    assert!(cancel.status.success(), "{}", shown(&cancel));
    let cancelled = daemon.wait_done(second);
    assert_eq!(cancelled.state, JobState::Cancelled, "{cancelled:#?}");
    assert_eq!(
        cancelled.started_at, None,
        "a cancelled queued job never started: {cancelled:#?}"
    );
    for run in &cancelled.activities {
        assert!(
            run.attempts.is_empty(),
            "a queued job ran an attempt: {run:#?}"
        );
    }
    assert!(!daemon.dir().join(format!("started-{second}")).exists());

    let waited = finish_child_output(waiter, HFCTL_TIMEOUT);
    assert_eq!(
        waited.status.code(),
        Some(5),
        "`submit --wait` of a cancelled job exits 5: {}",
        shown(&waited)
    );
    assert_eq!(
        daemon.status(first).state,
        JobState::Running,
        "cancelling one job left the other alone"
    );
}

/// The id of the job `hfctl submit --wait` is submitting in the background:
/// the gate chain's job that is not `first`.
fn wait_for_second_job(daemon: &TestDaemon, first: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = daemon.hfctl_json(&["list", "--chain", "gate"]);
        let other = listed["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|job| job["id"].as_u64())
            .find(|&id| id != first);
        if let Some(id) = other {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "the background submit never showed up: {listed}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cancel_a_running_job_kills_its_process_group() {
    let chain = r#"
[process.p.activity.hold]
shell = '''
sleep 30 &
echo $! > @DIR@/grandchild
echo "progress 10 holding" >&3
wait
'''
retries = 2
"#;
    let daemon = TestDaemon::start(&[("hold.toml", chain)]);
    let job_id = daemon.submit("hold", &[]);
    let running = daemon.wait_for(job_id, "holding", |job| {
        job.activities
            .iter()
            .any(|a| a.state == ActivityState::Running && a.progress.unwrap_or(0.0) >= 10.0)
    });
    assert_eq!(running.state, JobState::Running, "{running:#?}");
    let grandchild = read_pid(&daemon.dir().join("grandchild"));

    let cancel = daemon.hfctl(&["cancel", &job_id.to_string()]);
    assert!(cancel.status.success(), "{}", shown(&cancel));
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Cancelled, "{job:#?}");
    let hold = activity(&job, "p.hold");
    assert_eq!(hold.state, ActivityState::Cancelled, "{hold:#?}");
    assert_eq!(hold.attempts.len(), 1, "a cancel is not retried: {hold:#?}");
    let attempt = &hold.attempts[0];
    assert_eq!(attempt.state, AttemptState::Cancelled, "{attempt:#?}");

    assert!(
        gone_within(grandchild, DYING),
        "grandchild {grandchild} survived the cancel"
    );
    let pgid = i32::try_from(attempt.pid.expect("a started attempt has a pid")).expect("pid fits");
    let survivors = group_gone_within(pgid, DYING);
    assert!(
        survivors.is_empty(),
        "process group {pgid} still has {survivors:?}"
    );

    let again = daemon.hfctl(&["cancel", &job_id.to_string()]);
    assert!(
        !again.status.success(),
        "cancelling a finished job is refused: {}",
        shown(&again)
    );
}
