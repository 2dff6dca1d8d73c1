//! Fan-out (`foreach`): an activity run once per item, each item an
//! instance with its own attempts, checkpoint, outputs and log, at most
//! `max_parallel` at once; `continue` and `fail`; the items' outputs as a
//! list; `hfctl retry` that re-runs only the items that did not succeed.
//! (Stops and crashes are `fanout_recovery.rs`.)

use std::collections::BTreeMap;

use holdfast_api::{ActivityState, ItemCounts, Job, JobState};
use holdfast_tests::TestDaemon;
use holdfast_tests::http::rpc_call;
use serde_json::{Value, json};

use crate::support::activity;

/// The lines of `@DIR@/<name>` (empty when it does not exist).
pub(crate) fn lines(daemon: &TestDaemon, name: &str) -> Vec<String> {
    std::fs::read_to_string(daemon.dir().join(name))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The most items that ran at once, from `start`/`end` lines in `events`.
fn peak(daemon: &TestDaemon) -> i32 {
    let (mut running, mut peak) = (0, 0);
    for line in lines(daemon, "events") {
        if line.starts_with("start") {
            running += 1;
            peak = peak.max(running);
        } else if line.starts_with("end") {
            running -= 1;
        }
    }
    peak
}

/// How often each item index was started, from `start <index> ...` lines.
pub(crate) fn starts(daemon: &TestDaemon) -> BTreeMap<u32, usize> {
    let mut count = BTreeMap::new();
    for line in lines(daemon, "events") {
        let mut words = line.split_whitespace();
        if words.next() == Some("start")
            && let Some(index) = words.next().and_then(|w| w.parse().ok())
        {
            *count.entry(index).or_insert(0) += 1;
        }
    }
    count
}

pub(crate) fn counts(job: &Job, path: &str) -> ItemCounts {
    activity(job, path)
        .items
        .clone()
        .unwrap_or_else(|| panic!("{path} has no item counts: {job:#?}"))
}

/// 1,000 items of `{ count, chunk_size }` at `max_parallel = 4`: every
/// item runs exactly once with its own chunk in `{{ item }}` and
/// `HF_ITEM`, never more than 4 run at once (each item records its start
/// and end in a shared file), and the job's counts and progress are in
/// items. Without `foreach` the activity would run once; without
/// `max_parallel` the peak would be the daemon's cap.
#[test]
fn a_thousand_items_run_each_once_never_more_than_max_parallel_at_once() {
    let chain = r#"
[params.rows]
type = "int"
required = true

[process.load.activity.chunk]
foreach = { count = "{{ params.rows }}", chunk_size = 10 }
max_parallel = 4
command = ["sh", "-c", '''
echo "start $HF_ITEM_INDEX $1 $2 $HF_ITEM" >> @DIR@/events
sleep 0.01
echo "end $HF_ITEM_INDEX" >> @DIR@/events
''', "sh", "{{ item.start }}", "{{ item.end }}"]
"#;
    let daemon = TestDaemon::start(&[("etl.toml", chain)]);
    let job_id = daemon.submit("etl", &["-p", "rows=9995"]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let items = counts(&job, "load.chunk");
    assert_eq!(
        items,
        ItemCounts {
            total: 1000,
            succeeded: 1000,
            ..ItemCounts::default()
        }
    );
    assert_eq!(job.progress, 100.0);

    let mut running = 0i32;
    let mut peak = 0;
    let mut seen = BTreeMap::new();
    for line in lines(&daemon, "events") {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            Some(&"start") => {
                running += 1;
                peak = peak.max(running);
                let index: u64 = words[1].parse().expect("an index");
                let start: u64 = words[2].parse().expect("item.start");
                let end: u64 = words[3].parse().expect("item.end");
                assert_eq!(start, index * 10, "{line}");
                assert_eq!(end, (index * 10 + 10).min(9995), "{line}");
                let item: Value = serde_json::from_str(words[4]).expect("HF_ITEM is JSON");
                assert_eq!(item, json!({"index": index, "start": start, "end": end}));
                *seen.entry(index).or_insert(0) += 1;
            }
            Some(&"end") => running -= 1,
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert!(peak <= 4, "{peak} items ran at once with max_parallel = 4");
    assert!(peak >= 2, "the items never overlapped (peak {peak})");
    assert_eq!(seen.len(), 1000, "every item ran");
    assert!(
        seen.values().all(|&n| n == 1),
        "an item ran twice: {:?}",
        seen.iter().filter(|(_, n)| **n != 1).collect::<Vec<_>>()
    );

    let text = daemon.hfctl(&["status", &job_id.to_string()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("1000/1000 succeeded") && text.contains("1000 items"),
        "status collapses the fan-out to one line:\n{text}"
    );
}

/// Each item has its own attempts and checkpoint: item 1 fails after a
/// checkpoint and its retry gets that checkpoint in `HF_CHECKPOINT`, while
/// the other items run once; each attempt's log is its own
/// (`hfctl logs JOB load.each[1] --attempt N`); the items' outputs reach
/// the dependant as a list in item order.
#[test]
fn items_retry_with_their_own_checkpoint_and_log_and_their_outputs_reach_dependants_as_a_list() {
    let chain = r#"
[params.names]
type = "json"
required = true

[process.load.activity.each]
foreach = "{{ params.names }}"
retries = 1
retry_delay = "0s"
shell = '''
echo "start $HF_ITEM_INDEX attempt=$HF_ATTEMPT item=$HF_ITEM checkpoint=${HF_CHECKPOINT:-none}" >> @DIR@/events
echo "item $HF_ITEM_INDEX attempt $HF_ATTEMPT checkpoint ${HF_CHECKPOINT:-none}"
if [ "$HF_ITEM_INDEX" = 1 ] && [ "$HF_ATTEMPT" = 1 ]; then
  echo 'checkpoint {"row": 40}' >&3
  exit 3
fi
echo "output {\"n\": $((HF_ITEM_INDEX * 2)), \"name\": $HF_ITEM}" >&3
if [ "$HF_ITEM_INDEX" = 2 ]; then echo "alert slow source" >&3; fi
'''

[process.report]
after = ["load"]

[process.report.activity.all]
command = ["echo", "{{ outputs.load.each | tojson }}"]
"#;
    let daemon = TestDaemon::start(&[("names.toml", chain)]);
    let job_id = daemon.submit("names", &["-p", r#"names=["a","b","c"]"#]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        job.last_alert.as_deref(),
        Some("names.load.each[2]: slow source"),
        "an item's alert names the item"
    );
    assert_eq!(
        starts(&daemon),
        BTreeMap::from([(0, 1), (1, 2), (2, 1)]),
        "only the failed item ran again"
    );
    assert_eq!(
        daemon.logs(job_id, "load.each[1]", Some(1)),
        "item 1 attempt 1 checkpoint none\n"
    );
    assert_eq!(
        daemon.logs(job_id, "load.each[1]", Some(2)),
        "item 1 attempt 2 checkpoint {\"row\":40}\n",
        "the retry gets the item's own checkpoint"
    );
    assert_eq!(
        daemon.logs(job_id, "load.each[2]", None),
        "item 2 attempt 1 checkpoint none\n"
    );
    let followed = daemon.hfctl(&["logs", "-f", &job_id.to_string(), "load.each[1]"]);
    assert_eq!(
        String::from_utf8_lossy(&followed.stdout),
        "item 1 attempt 2 checkpoint {\"row\":40}\n",
        "following a finished item prints its latest attempt and ends: {followed:?}"
    );
    let list: Value =
        serde_json::from_str(daemon.logs(job_id, "report.all", None).trim()).expect("JSON");
    assert_eq!(
        list,
        json!([{"n": 0, "name": "a"}, {"n": 2, "name": "b"}, {"n": 4, "name": "c"}]),
        "outputs.load.each is the items' outputs in item order"
    );
}

const FLAKY: &str = r#"
[process.load.activity.chunk]
foreach = { count = 10, chunk_size = 1 }
max_parallel = 1
on_failure = "@MODE@"
shell = '''
echo "start $HF_ITEM_INDEX" >> @DIR@/events
if [ "$HF_ITEM_INDEX" = 2 ] && [ ! -e @DIR@/fixed ]; then exit 1; fi
'''

[process.after]
after = ["load"]

[process.after.activity.next]
shell = "echo next >> @DIR@/events"
"#;

/// `on_failure = "continue"` skips a bad item with an alert and the
/// others run; `hfctl retry` then runs only that item again.
#[test]
fn continue_skips_a_bad_item_with_an_alert_and_retry_reruns_only_it() {
    let daemon = TestDaemon::start(&[("flaky.toml", &FLAKY.replace("@MODE@", "continue"))]);
    let job_id = daemon.submit("flaky", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(job.alerts, 1, "{job:#?}");
    assert!(
        job.last_alert
            .as_deref()
            .is_some_and(|a| a.contains("chunk[2]")),
        "{job:#?}"
    );
    assert_eq!(
        counts(&job, "load.chunk"),
        ItemCounts {
            total: 10,
            succeeded: 9,
            failed: 1,
            ..ItemCounts::default()
        }
    );
    assert_eq!(activity(&job, "after.next").state, ActivityState::Succeeded);
    assert_eq!(starts(&daemon).len(), 10);

    // `--all` expands the fan-out, one line per item.
    let text = daemon.hfctl(&["status", &job_id.to_string(), "--all"]);
    let text = String::from_utf8_lossy(&text.stdout);
    let item_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("load.chunk["))
        .collect();
    assert_eq!(item_lines.len(), 10, "{text}");
    assert!(
        item_lines[2].contains("load.chunk[2]") && item_lines[2].contains("failed"),
        "{text}"
    );
    // `job.items` pages them in index order.
    let page = rpc_call(
        daemon.socket(),
        "job.items",
        json!({"job_id": job_id, "activity": "load.chunk", "offset": 1, "limit": 2}),
    );
    let result = &page["result"];
    assert_eq!(result["next_offset"], 3, "{page}");
    assert_eq!(result["counts"]["failed"], 1, "{page}");
    let shown: Vec<(u64, &str)> = result["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["index"].as_u64().unwrap_or(99),
                i["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(shown, [(1, "succeeded"), (2, "failed")], "{page}");
    assert_eq!(
        result["items"][1]["item"],
        json!({"index": 2, "start": 2, "end": 3})
    );

    std::fs::write(daemon.dir().join("fixed"), "").expect("fixed");
    let again = retry(&daemon, job_id);
    assert_eq!(again.state, JobState::Succeeded, "{again:#?}");
    assert_eq!(
        counts(&again, "load.chunk"),
        ItemCounts {
            total: 10,
            succeeded: 10,
            ..ItemCounts::default()
        }
    );
    let carried = daemon.hfctl(&["logs", &again.id.to_string(), "load.chunk[0]"]);
    assert!(
        String::from_utf8_lossy(&carried.stderr).contains("did not run in job"),
        "a carried item's log is the original job's: {carried:?}"
    );
    let runs = starts(&daemon);
    assert_eq!(
        runs.get(&2),
        Some(&2),
        "the failed item ran again: {runs:?}"
    );
    assert!(
        runs.iter().all(|(i, n)| *i == 2 || *n == 1),
        "a succeeded item ran again: {runs:?}"
    );
}

/// `on_failure = "fail"` stops starting items once one failed for good and
/// fails the activity and the job (its dependant skipped); `hfctl retry`
/// runs the failed item and the ones never started, never the succeeded.
#[test]
fn fail_stops_starting_items_and_retry_runs_the_failed_and_the_rest() {
    let daemon = TestDaemon::start(&[("flaky.toml", &FLAKY.replace("@MODE@", "fail"))]);
    let job_id = daemon.submit("flaky", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(activity(&job, "load.chunk").state, ActivityState::Failed);
    assert_eq!(activity(&job, "after.next").state, ActivityState::Skipped);
    assert_eq!(
        counts(&job, "load.chunk"),
        ItemCounts {
            total: 10,
            succeeded: 2,
            failed: 1,
            not_started: 7,
            ..ItemCounts::default()
        }
    );
    assert_eq!(
        starts(&daemon).keys().copied().collect::<Vec<_>>(),
        [0, 1, 2],
        "no item started after the failure"
    );

    std::fs::write(daemon.dir().join("fixed"), "").expect("fixed");
    let again = retry(&daemon, job_id);
    assert_eq!(again.state, JobState::Succeeded, "{again:#?}");
    let runs = starts(&daemon);
    assert_eq!(runs.len(), 10, "{runs:?}");
    assert_eq!(
        (runs[&0], runs[&1], runs[&2], runs[&3]),
        (1, 1, 2, 1),
        "succeeded items did not run again, the failed one did: {runs:?}"
    );
    assert!(lines(&daemon, "events").contains(&"next".to_string()));
}

/// `hfctl --json retry JOB --wait`: the new job, finished.
fn retry(daemon: &TestDaemon, job_id: u64) -> Job {
    let output = daemon.hfctl(&["--json", "retry", &job_id.to_string(), "--wait"]);
    let text = String::from_utf8_lossy(&output.stdout);
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("hfctl retry printed no JSON ({e}): {text}"));
    let id = value["id"]
        .as_u64()
        .or_else(|| value["job_id"].as_u64())
        .unwrap_or_else(|| panic!("no job id in {value}"));
    daemon.wait_done(id)
}

/// `foreach = "tenants"`: one item per tenant that may run the chain, in
/// name order, each `{tenant, params}` with the tenant's `[params]`; a
/// tenant limited to other chains gets no item. The list is fixed when the
/// activity starts: a tenant added later does not join a retry.
#[test]
fn foreach_tenants_runs_once_per_tenant_that_may_run_the_chain() {
    let chain = r#"
[process.bill.activity.each]
foreach = "tenants"
command = ["sh", "-c", 'echo "start $HF_ITEM_INDEX $1 $2" >> @DIR@/events; [ "$1" != globex ] || [ -e @DIR@/fixed ]', "sh", "{{ item.tenant }}", "{{ item.params.region | default('none') }}"]
on_failure = "continue"
"#;
    let mut daemon = TestDaemon::prepare(None, &[("billing.toml", chain)]);
    daemon.write_tenant(
        "acme",
        "chains = [\"billing\"]\n\n[params]\nregion = \"eu\"\n",
    );
    daemon.write_tenant("globex", "chains = [\"billing\"]\n");
    daemon.write_tenant("initech", "chains = [\"payroll\"]\n");
    daemon.launch();
    let described = daemon.hfctl(&["describe", "billing"]);
    let described = String::from_utf8_lossy(&described.stdout);
    assert!(
        described.contains("each fans out: one run per item of foreach = tenants"),
        "{described}"
    );
    let job_id = daemon.submit("billing", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let mut seen = lines(&daemon, "events");
    seen.sort();
    assert_eq!(
        seen,
        ["start 0 acme eu", "start 1 globex none"],
        "one item per tenant allowed, in name order, with its params"
    );
    assert_eq!(counts(&job, "bill.each").failed, 1);

    daemon.write_tenant("hooli", "chains = [\"billing\"]\n");
    std::fs::write(daemon.dir().join("fixed"), "").expect("fixed");
    let reload = daemon.hfctl(&["reload"]);
    assert!(reload.status.success(), "{reload:?}");
    let again = retry(&daemon, job_id);
    assert_eq!(again.state, JobState::Succeeded, "{again:#?}");
    assert_eq!(
        counts(&again, "bill.each").total,
        2,
        "the item list is the job's"
    );
    assert_eq!(
        lines(&daemon, "events").last().map(String::as_str),
        Some("start 1 globex none"),
        "only the failed tenant's item ran again"
    );
}

/// A fan-out's `max_parallel` is bounded by the chain's: with the chain at
/// 2, an activity allowing 8 never runs more than 2 items at once.
#[test]
fn the_chains_max_parallel_bounds_the_items_too() {
    let chain = r#"
[chain]
max_parallel = 2

[process.load.activity.chunk]
foreach = { count = 12, chunk_size = 1 }
max_parallel = 8
shell = 'echo "start $HF_ITEM_INDEX" >> @DIR@/events; sleep 0.05; echo "end $HF_ITEM_INDEX" >> @DIR@/events'
"#;
    let daemon = TestDaemon::start(&[("capped.toml", chain)]);
    let job_id = daemon.submit("capped", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(starts(&daemon).len(), 12);
    let peak = peak(&daemon);
    assert!(
        peak <= 2,
        "{peak} items ran at once under the chain's max_parallel = 2"
    );
    assert_eq!(peak, 2, "the items did run two at a time");
}

/// A `foreach` that gives no array fails the activity (its dependants
/// skipped) with the reason in the job's alert, and starts no item.
#[test]
fn a_foreach_that_gives_no_array_fails_the_activity_with_the_reason() {
    let chain = r#"
[params.names]
type = "json"
required = true

[process.load.activity.each]
foreach = "{{ params.names }}"
shell = "echo start >> @DIR@/events"

[process.after]
after = ["load"]

[process.after.activity.next]
command = ["true"]
"#;
    let daemon = TestDaemon::start(&[("bad.toml", chain)]);
    let job_id = daemon.submit("bad", &["-p", r#"names={"a": 1}"#]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(activity(&job, "load.each").state, ActivityState::Failed);
    assert_eq!(activity(&job, "after.next").state, ActivityState::Skipped);
    assert!(
        job.last_alert
            .as_deref()
            .is_some_and(|a| a.contains("foreach must give a JSON array")),
        "{job:#?}"
    );
    assert!(lines(&daemon, "events").is_empty(), "no item started");

    // An empty list is a fan-out of no items: it succeeds at once.
    let empty = daemon.submit("bad", &["-p", "names=[]"]);
    let job = daemon.wait_done(empty);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(counts(&job, "load.each").total, 0);
    assert_eq!(activity(&job, "after.next").state, ActivityState::Succeeded);
}

/// A simulated job fans out too, through the same engine, starting no
/// process: every item runs its `[simulate]` stand-in.
#[test]
fn a_simulated_fan_out_runs_every_item_without_a_process() {
    let chain = r#"
[process.load.activity.chunk]
foreach = { count = 5, chunk_size = 1 }
max_parallel = 2
shell = "echo start >> @DIR@/events"
"#;
    let daemon = TestDaemon::start(&[("sim.toml", chain)]);
    let job_id = daemon.submit("sim", &["--simulate"]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(counts(&job, "load.chunk").succeeded, 5);
    assert!(lines(&daemon, "events").is_empty(), "a process was started");
}

/// An item whose command cannot render (`{{ item.start }}` of an item
/// without `start`) fails at once without its retries, and under
/// `"continue"` the other items still run.
#[test]
fn an_item_that_cannot_render_fails_without_retries_and_the_rest_go_on() {
    let chain = r#"
[params.items]
type = "json"
required = true

[process.load.activity.each]
foreach = "{{ params.items }}"
retries = 3
retry_delay = "10s"
on_failure = "continue"
command = ["sh", "-c", 'echo "start $HF_ITEM_INDEX $1" >> @DIR@/events', "sh", "{{ item.start }}"]
"#;
    let daemon = TestDaemon::start(&[("render.toml", chain)]);
    let job_id = daemon.submit("render", &["-p", r#"items=["a", {"start": 7}]"#]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        counts(&job, "load.each"),
        ItemCounts {
            total: 2,
            succeeded: 1,
            failed: 1,
            ..ItemCounts::default()
        }
    );
    assert_eq!(lines(&daemon, "events"), ["start 1 7"]);
    let page = rpc_call(
        daemon.socket(),
        "job.items",
        json!({"job_id": job_id, "activity": "load.each"}),
    );
    let first = &page["result"]["items"][0];
    assert_eq!(first["attempts"], 1, "no retry of a render failure: {page}");
    assert!(
        first["error"].as_str().is_some_and(|e| e.contains("start")),
        "{page}"
    );
}
