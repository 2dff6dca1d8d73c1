//! Fan-out across stops: a kill -9 re-runs no succeeded item, a graceful
//! stop interrupts running items which run again after the start, and a
//! cancel stops the running items and starts no more.

use std::collections::BTreeMap;
use std::time::Duration;

use holdfast_api::{ActivityState, ItemCounts, JobState};
use holdfast_tests::http::rpc_call;
use holdfast_tests::{TestDaemon, eventually};
use serde_json::json;

use crate::fanout::{counts, lines, starts};
use crate::support::activity;

/// A kill -9 in the middle of a fan-out: after the restart no succeeded
/// item runs again, the items that were running run again with their own
/// last checkpoint (their processes from before the crash killed), and the
/// rest run once.
#[test]
fn after_a_kill_9_mid_fan_out_no_succeeded_item_runs_again() {
    let chain = r#"
[process.load.activity.chunk]
foreach = { count = 20, chunk_size = 1 }
max_parallel = 2
retries = 0
shell = '''
echo "start $HF_ITEM_INDEX ${HF_CHECKPOINT:-none}" >> @DIR@/events
if [ "$HF_ITEM_INDEX" -ge 4 ] && [ ! -e @DIR@/gate ]; then
  echo "checkpoint {\"at\": $HF_ITEM_INDEX}" >&3
  echo "alert item $HF_ITEM_INDEX waits" >&3
  sleep 60
fi
'''
"#;
    let mut daemon = TestDaemon::start(&[("crash.toml", chain)]);
    let job_id = daemon.submit("crash", &[]);
    // Control lines are taken in order, so once both alerts are committed
    // both checkpoints are too.
    daemon.wait_for(job_id, "four items done and two waiting", |job| {
        job.alerts == 2
            && activity(job, "load.chunk")
                .items
                .as_ref()
                .is_some_and(|i| i.succeeded == 4 && i.running == 2)
    });
    // Both running items' processes have started (their attempts are
    // committed before they are spawned).
    eventually(Duration::from_secs(30), "six items started", || {
        let n = lines(&daemon, "events").len();
        if n >= 6 {
            Ok(())
        } else {
            Err(format!("{n} started"))
        }
    });
    daemon.kill9();
    std::fs::write(daemon.dir().join("gate"), "").expect("gate");
    daemon.launch();
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        counts(&job, "load.chunk"),
        ItemCounts {
            total: 20,
            succeeded: 20,
            ..ItemCounts::default()
        }
    );
    let runs = starts(&daemon);
    assert_eq!(runs.len(), 20, "{runs:?}");
    for (index, n) in runs {
        let expected = if index == 4 || index == 5 { 2 } else { 1 };
        assert_eq!(
            n, expected,
            "item {index} started {n} times (succeeded items never re-run, interrupted ones do)"
        );
    }
    let events = lines(&daemon, "events");
    for index in [4, 5] {
        let resumed = format!("start {index} {{\"at\":{index}}}");
        assert!(
            events.contains(&resumed),
            "item {index} resumed with its own checkpoint: {events:?}"
        );
    }
}

const BLOCKING: &str = r#"
[process.load.activity.chunk]
foreach = { count = 8, chunk_size = 1 }
max_parallel = 2
shell = '''
echo "start $HF_ITEM_INDEX $$" >> @DIR@/events
if [ "$HF_ITEM_INDEX" -ge 2 ] && [ ! -e @DIR@/gate ]; then sleep 60; fi
'''
"#;

/// Wait until items 0 and 1 succeeded and 2 and 3 run (their processes
/// started and recorded in `events`).
fn two_done_two_blocked(daemon: &TestDaemon, job_id: u64) {
    daemon.wait_for(job_id, "two items done and two running", |job| {
        activity(job, "load.chunk")
            .items
            .as_ref()
            .is_some_and(|i| i.succeeded == 2 && i.running == 2)
    });
    eventually(Duration::from_secs(30), "four items started", || {
        let n = lines(daemon, "events").len();
        if n >= 4 {
            Ok(())
        } else {
            Err(format!("{n} started"))
        }
    });
}

/// A cancel in the middle of a fan-out stops its running items (their
/// processes are gone), starts no other, and ends the activity and the
/// job cancelled with the counts of what ran.
#[test]
fn cancel_stops_the_running_items_and_starts_no_more() {
    let daemon = TestDaemon::start(&[("block.toml", BLOCKING)]);
    let job_id = daemon.submit("block", &[]);
    two_done_two_blocked(&daemon, job_id);
    let cancel = daemon.hfctl(&["cancel", &job_id.to_string()]);
    assert!(cancel.status.success(), "{cancel:?}");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Cancelled, "{job:#?}");
    assert_eq!(activity(&job, "load.chunk").state, ActivityState::Cancelled);
    assert_eq!(
        counts(&job, "load.chunk"),
        ItemCounts {
            total: 8,
            succeeded: 2,
            cancelled: 2,
            not_started: 4,
            ..ItemCounts::default()
        }
    );
    for line in lines(&daemon, "events") {
        let pid: i32 = line
            .split_whitespace()
            .nth(2)
            .and_then(|p| p.parse().ok())
            .expect("a pid");
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
            "item process {pid} still runs after the cancel ({line})"
        );
    }
    assert_eq!(starts(&daemon).len(), 4, "no item started after the cancel");
}

/// A graceful stop (SIGTERM) interrupts the running items; after the
/// start they run again and the rest follow, while the succeeded ones
/// do not run again.
#[test]
fn a_stop_interrupts_running_items_which_run_again_after_the_start() {
    let mut daemon = TestDaemon::start(&[("block.toml", BLOCKING)]);
    let job_id = daemon.submit("block", &[]);
    two_done_two_blocked(&daemon, job_id);
    daemon.stop();
    std::fs::write(daemon.dir().join("gate"), "").expect("gate");
    daemon.launch();
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let runs = starts(&daemon);
    assert_eq!(
        runs,
        BTreeMap::from([
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 2),
            (4, 1),
            (5, 1),
            (6, 1),
            (7, 1)
        ]),
        "the interrupted items ran again, the succeeded did not"
    );
    let item = rpc_call(
        daemon.socket(),
        "job.items",
        json!({"job_id": job_id, "activity": "load.chunk", "offset": 2, "limit": 1}),
    );
    assert_eq!(item["result"]["items"][0]["attempts"], 2, "{item}");
    let bare = daemon.hfctl(&["logs", &job_id.to_string(), "load.chunk"]);
    assert!(
        String::from_utf8_lossy(&bare.stderr).contains("load.chunk[N]"),
        "hfctl logs without an item says how to name one: {bare:?}"
    );
}
