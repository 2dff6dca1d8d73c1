//! Surviving stops and crashes: checkpoints handed back to the next attempt
//! (after a kill -9 and after a failure), a graceful SIGTERM that records
//! running attempts as interrupted and resumes them, leftover process groups
//! killed on start, and `max_interruptions`.

use std::time::{Duration, Instant};

use holdfast_api::{ActivityState, AttemptState, Job, JobState};
use holdfast_tests::process::{group_gone_within, is_alive};
use holdfast_tests::{TestDaemon, eventually};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::{activity, shown};

/// How long a process SIGKILLed by the daemon may take to finish dying.
const DYING: Duration = Duration::from_millis(500);

/// The `checkpoint=` line an activity printed, parsed; `None` for `none`.
fn printed_checkpoint(log: &str) -> Option<Value> {
    let text = log
        .lines()
        .find_map(|line| line.split_once("checkpoint=").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no checkpoint= line in the log:\n{log}"));
    if text == "none" {
        return None;
    }
    Some(
        serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("HF_CHECKPOINT is not JSON ({e}):\n{log}")),
    )
}

fn attempt_states(job: &Job, path: &str) -> Vec<AttemptState> {
    activity(job, path)
        .attempts
        .iter()
        .map(|a| a.state)
        .collect()
}

/// The process group of the latest attempt of `path` (its leader's pid).
fn latest_group(job: &Job, path: &str) -> i32 {
    let run = activity(job, path);
    let attempt = run
        .attempts
        .last()
        .unwrap_or_else(|| panic!("{path} has no attempt: {run:#?}"));
    let pid = attempt
        .pid
        .unwrap_or_else(|| panic!("a running attempt has its pid recorded: {attempt:#?}"));
    i32::try_from(pid).expect("pids fit in i32")
}

/// True once the latest attempt of `path` is running and has reported
/// `text` as its progress.
fn reported(job: &Job, path: &str, text: &str) -> bool {
    let run = activity(job, path);
    run.state == ActivityState::Running
        && run.progress_text.as_deref() == Some(text)
        && run
            .attempts
            .last()
            .is_some_and(|a| a.state == AttemptState::Running && a.pid.is_some())
}

#[test]
fn after_a_kill_9_the_next_attempt_gets_the_last_checkpoint() {
    // `retries = 0`: the interruption must not count as a retry.
    let chain = r#"
[process.p.activity.chunks]
shell = '''
echo "attempt=$HF_ATTEMPT checkpoint=${HF_CHECKPOINT:-none}"
if [ "$HF_ATTEMPT" -gt 1 ]; then exit 0; fi
echo 'checkpoint {"chunk": 150}' >&3
echo 'checkpoint {"chunk": 300}' >&3
echo "progress 50 at chunk 300" >&3
sleep 30
'''
retries = 0
"#;
    let mut daemon = TestDaemon::start(&[("chunks.toml", chain)]);
    let job_id = daemon.submit("chunks", &[]);
    // Control lines are taken in order, so once the progress shows, both
    // checkpoints have been received.
    let running = daemon.wait_for(job_id, "past its checkpoints", |job| {
        reported(job, "p.chunks", "at chunk 300")
    });
    let orphan = latest_group(&running, "p.chunks");

    daemon.kill9();
    daemon.launch();
    let survivors = group_gone_within(orphan, DYING);
    assert!(
        survivors.is_empty(),
        "the killed daemon's attempt (process group {orphan}) still runs after the restart: \
         {survivors:?}"
    );

    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        attempt_states(&job, "p.chunks"),
        [AttemptState::Interrupted, AttemptState::Succeeded],
        "{job:#?}"
    );
    assert_eq!(
        printed_checkpoint(&daemon.logs(job_id, "p.chunks", Some(1))),
        None,
        "the first attempt has no checkpoint"
    );
    assert_eq!(
        printed_checkpoint(&daemon.logs(job_id, "p.chunks", Some(2))),
        Some(json!({"chunk": 300})),
        "the resumed attempt gets the last checkpoint"
    );
}

#[test]
fn after_a_failure_the_retry_gets_the_last_checkpoint() {
    let chain = r#"
[process.p.activity.chunks]
shell = '''
echo "attempt=$HF_ATTEMPT checkpoint=${HF_CHECKPOINT:-none}"
if [ "$HF_ATTEMPT" -gt 1 ]; then exit 0; fi
echo 'checkpoint {"chunk": 7, "file": "part-7.csv"}' >&3
exit 1
'''
retries = 1
retry_delay = "10ms"
"#;
    let daemon = TestDaemon::start(&[("chunks.toml", chain)]);
    let job_id = daemon.submit("chunks", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        attempt_states(&job, "p.chunks"),
        [AttemptState::Failed, AttemptState::Succeeded],
        "{job:#?}"
    );
    assert_eq!(
        printed_checkpoint(&daemon.logs(job_id, "p.chunks", Some(1))),
        None
    );
    assert_eq!(
        printed_checkpoint(&daemon.logs(job_id, "p.chunks", Some(2))),
        Some(json!({"chunk": 7, "file": "part-7.csv"})),
        "the retry gets the checkpoint the failed attempt saved"
    );
}

/// Stop the daemon with SIGTERM, require exit 0, and return how long it took.
fn stop_timed(daemon: &mut TestDaemon) -> Duration {
    let began = Instant::now();
    let status = daemon.stop();
    let took = began.elapsed();
    assert!(
        status.success(),
        "holdfastd exits 0 on SIGTERM, even with activities running: {status}"
    );
    took
}

#[test]
fn sigterm_interrupts_running_activities_which_resume_on_the_next_start() {
    // One slot, so the second job stays queued behind the first.
    let settings = "kill_grace = \"3s\"\nmax_parallel = 1\n";
    let long = r#"
[process.p.activity.long]
shell = '''
echo "attempt $HF_ATTEMPT" >> @DIR@/runs
if [ "$HF_ATTEMPT" -gt 1 ]; then exit 0; fi
trap 'echo "term" >> @DIR@/runs; exit 0' TERM
echo "progress 10 sleeping" >&3
sleep 30 &
wait
'''
retries = 0
"#;
    let quick = r#"
[process.p.activity.quick]
shell = 'echo "quick $HF_ATTEMPT" >> @DIR@/runs'
"#;
    let mut daemon =
        TestDaemon::start_with(settings, &[("long.toml", long), ("quick.toml", quick)]);
    let long_id = daemon.submit("long", &[]);
    let running = daemon.wait_for(long_id, "sleeping", |job| {
        reported(job, "p.long", "sleeping")
    });
    let group = latest_group(&running, "p.long");
    let quick_id = daemon.submit("quick", &[]);
    let queued = daemon.status(quick_id);
    assert_eq!(queued.state, JobState::Queued, "{queued:#?}");

    let took = stop_timed(&mut daemon);
    assert!(
        took < Duration::from_secs(3 + 2),
        "the daemon took {took:?} to stop (kill_grace 3s, and the activity stops at once)"
    );
    assert!(
        group_gone_within(group, DYING).is_empty(),
        "the activity's group outlived the stop"
    );
    let runs = std::fs::read_to_string(daemon.dir().join("runs")).expect("the activity ran");
    assert_eq!(
        runs, "attempt 1\nterm\n",
        "the activity got SIGTERM; the queued job did not start"
    );

    daemon.launch();
    let job = daemon.wait_done(long_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let run = activity(&job, "p.long");
    assert_eq!(
        attempt_states(&job, "p.long"),
        [AttemptState::Interrupted, AttemptState::Succeeded],
        "{run:#?}"
    );
    assert_eq!(
        run.attempts[0].exit_code,
        Some(0),
        "the stop was recorded as it happened (the trap's exit 0), not guessed at the restart: \
         {run:#?}"
    );
    assert!(
        daemon
            .logs(long_id, "p.long", Some(1))
            .contains("daemon stopping"),
        "the interrupted attempt's log says why it was stopped"
    );

    let quick_job = daemon.wait_done(quick_id);
    assert_eq!(quick_job.state, JobState::Succeeded, "{quick_job:#?}");
    assert_eq!(
        attempt_states(&quick_job, "p.quick"),
        [AttemptState::Succeeded],
        "the queued job ran once, after the restart"
    );
    let runs = std::fs::read_to_string(daemon.dir().join("runs")).expect("the activity ran");
    let mut lines: Vec<&str> = runs.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["attempt 1", "attempt 2", "quick 1", "term"],
        "{runs}"
    );
}

#[test]
fn sigterm_kills_an_activity_that_ignores_it_after_kill_grace() {
    let settings = "kill_grace = \"1s\"\n";
    let chain = r#"
[process.p.activity.stubborn]
shell = '''
echo "attempt $HF_ATTEMPT" >> @DIR@/runs
if [ "$HF_ATTEMPT" -gt 1 ]; then exit 0; fi
trap '' TERM
echo "progress 10 ignoring TERM" >&3
sleep 30
'''
"#;
    let mut daemon = TestDaemon::start_with(settings, &[("stubborn.toml", chain)]);
    let job_id = daemon.submit("stubborn", &[]);
    let running = daemon.wait_for(job_id, "running", |job| {
        reported(job, "p.stubborn", "ignoring TERM")
    });
    let group = latest_group(&running, "p.stubborn");

    let began = Instant::now();
    daemon.signal(Signal::SIGTERM);
    // While the daemon waits out kill_grace, it accepts no new work.
    eventually(Duration::from_secs(5), "the daemon stopping", || {
        let log = std::fs::read_to_string(daemon.log_path()).unwrap_or_default();
        if log.contains("interrupting running activities") {
            Ok(())
        } else {
            Err(daemon.log_tail())
        }
    });
    let refused = daemon.hfctl(&["submit", "stubborn"]);
    assert!(
        !refused.status.success(),
        "a submission while stopping is refused: {}",
        shown(&refused)
    );
    let status = daemon.stop();
    let took = began.elapsed();
    assert!(status.success(), "holdfastd exits 0 on SIGTERM: {status}");
    assert!(
        took >= Duration::from_millis(900),
        "the daemon waited kill_grace before killing the activity: {took:?}"
    );
    assert!(
        took < Duration::from_secs(1 + 3),
        "the daemon took {took:?} to stop with kill_grace 1s"
    );
    assert!(
        group_gone_within(group, DYING).is_empty(),
        "the activity that ignored SIGTERM outlived the daemon"
    );

    daemon.launch();
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let listed = daemon.hfctl_json(&["list"]);
    assert_eq!(
        listed["jobs"].as_array().map(Vec::len),
        Some(1),
        "the refused submission left no job: {listed}"
    );
    let run = activity(&job, "p.stubborn");
    assert_eq!(
        attempt_states(&job, "p.stubborn"),
        [AttemptState::Interrupted, AttemptState::Succeeded],
        "{run:#?}"
    );
    assert_eq!(
        run.attempts[0].signal,
        Some(9),
        "SIGKILL ended it after kill_grace: {run:#?}"
    );
}

#[test]
fn more_interruptions_than_max_interruptions_fail_the_activity() {
    let settings = "max_interruptions = 1\n";
    let chain = r#"
[process.p.activity.fragile]
shell = '''
echo "progress 10 attempt $HF_ATTEMPT" >&3
sleep 30
'''
retries = 3

[process.q]
after = ["p"]

[process.q.activity.next]
shell = "touch @DIR@/next-ran"
"#;
    let mut daemon = TestDaemon::start_with(settings, &[("fragile.toml", chain)]);
    let job_id = daemon.submit("fragile", &[]);

    for attempt in 1..=2 {
        let text = format!("attempt {attempt}");
        let running = daemon.wait_for(job_id, &text, |job| reported(job, "p.fragile", &text));
        let group = latest_group(&running, "p.fragile");
        daemon.kill9();
        daemon.launch();
        assert!(
            group_gone_within(group, DYING).is_empty(),
            "attempt {attempt}'s process group outlived the restart"
        );
    }

    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let fragile = activity(&job, "p.fragile");
    assert_eq!(fragile.state, ActivityState::Failed, "{fragile:#?}");
    assert_eq!(
        attempt_states(&job, "p.fragile"),
        [AttemptState::Interrupted, AttemptState::Interrupted],
        "two interruptions with max_interruptions = 1 fail the activity without a third \
         attempt, retries or not: {fragile:#?}"
    );
    assert!(
        fragile.attempts.iter().all(|a| a.error_id.is_some()),
        "interrupted attempts get error ids: {fragile:#?}"
    );
    assert_eq!(
        job.reason.as_deref(),
        Some("activity fragile.p.fragile was interrupted 2 times (max_interruptions = 1)"),
        "{job:#?}"
    );
    let next = activity(&job, "q.next");
    assert_eq!(next.state, ActivityState::Skipped, "{next:#?}");
    assert!(!daemon.dir().join("next-ran").exists());
}

#[test]
fn a_leftover_group_whose_leader_has_exited_is_still_killed_on_restart() {
    // The leader leaves a background child in its process group and exits
    // once the daemon is gone, so the restarted daemon finds the group alive
    // but its leader's pid unused.
    let chain = r#"
[process.p.activity.spawner]
shell = '''
if [ "$HF_ATTEMPT" -gt 1 ]; then exit 0; fi
sleep 30 &
echo $! > @DIR@/grandchild
echo "progress 10 spawned" >&3
while [ ! -e @DIR@/leader-may-exit ]; do sleep 0.02; done
'''
"#;
    let mut daemon = TestDaemon::start(&[("spawner.toml", chain)]);
    let job_id = daemon.submit("spawner", &[]);
    let running = daemon.wait_for(job_id, "spawned", |job| {
        reported(job, "p.spawner", "spawned")
    });
    let leader = latest_group(&running, "p.spawner");
    let grandchild: i32 = std::fs::read_to_string(daemon.dir().join("grandchild"))
        .expect("the grandchild's pid was written")
        .trim()
        .parse()
        .expect("a pid");

    daemon.kill9();
    std::fs::write(daemon.dir().join("leader-may-exit"), "").expect("the flag can be written");
    // Once the orphaned leader has exited and been reaped, its pid names
    // nothing; its group lives on in the grandchild.
    eventually(
        Duration::from_secs(10),
        "the orphaned leader exited and was reaped by init",
        || {
            if std::path::Path::new(&format!("/proc/{leader}")).exists() {
                Err(format!("/proc/{leader} still exists"))
            } else {
                Ok(())
            }
        },
    );
    assert!(
        is_alive(grandchild),
        "the grandchild keeps the old group alive"
    );

    daemon.launch();
    let survivors = group_gone_within(leader, DYING);
    // The grandchild must not outlive the test, whatever the daemon did.
    let _ = kill(Pid::from_raw(grandchild), Signal::SIGKILL);
    assert!(
        survivors.is_empty(),
        "process group {leader} of the killed daemon's attempt still has {survivors:?} after \
         the restart (its leader had exited)"
    );
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
}

#[test]
fn a_stop_right_after_ready_is_graceful() {
    // SIGTERM the moment READY=1 arrives, while the resumed activity is
    // being started: the daemon must stop through its graceful path (exit
    // 0, the attempt recorded interrupted), never die of the signal with
    // its activity left running.
    let chain = r#"
[process.p.activity.long]
command = ["sleep", "300"]
"#;
    let mut daemon = TestDaemon::start(&[("long.toml", chain)]);
    let job_id = daemon.submit("long", &[]);
    daemon.wait_for(job_id, "the activity runs", |job| {
        activity(job, "p.long").state == ActivityState::Running
    });
    for round in 0..20 {
        let status = daemon.stop();
        assert!(
            status.success(),
            "round {round}: the daemon did not stop gracefully: {status}\n{}",
            daemon.log_tail()
        );
        daemon.launch();
    }
    let job = daemon.status(job_id);
    let long = activity(&job, "p.long");
    assert!(
        long.attempts
            .iter()
            .rev()
            .skip(1)
            .all(|a| a.state == AttemptState::Interrupted),
        "every stopped attempt is recorded interrupted: {long:#?}"
    );
}
