//! A fan-out on Slurm against the real cluster (`scripts/slurm-up`): the
//! items ready together are one job array with `%max_parallel`, each item
//! its own attempt (log, outputs, retries) watched as its own array task,
//! and a daemon killed while the tasks run or pend adopts every one at
//! restart, the array never submitted again. Skipped without a cluster,
//! failed when `HOLDFAST_SLURM_TEST=required`.

use std::collections::{BTreeMap, BTreeSet};

use holdfast_api::JobState;
use holdfast_tests::http::rpc_call;
use holdfast_tests::slurm::{client_calls, cluster_up, count_client_calls, shared};
use holdfast_tests::{TestDaemon, eventually};
use serde_json::{Value, json};

use crate::slurm::SLURM_WITHIN;
use crate::support::shown;

/// The array task an item's attempt log names ("submitted to Slurm as job
/// ARRAYID_TASK"): (array id, task).
fn array_task(log: &str) -> Option<(u64, u32)> {
    let rest = log.split("submitted to Slurm as job ").nth(1)?;
    let (array, task) = rest.split_whitespace().next()?.split_once('_')?;
    Some((array.parse().ok()?, task.parse().ok()?))
}

/// `job.items` of fan-out `activity`: every item's row.
fn items(daemon: &TestDaemon, job_id: u64, activity: &str) -> Vec<Value> {
    let page = rpc_call(
        daemon.socket(),
        "job.items",
        json!({"job_id": job_id, "activity": activity, "limit": 100}),
    );
    page["result"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("job.items: {page}"))
        .clone()
}

/// What `scontrol` still says of a Slurm job (all its tasks for an array),
/// one line per job; empty once Slurm forgot it.
fn scontrol(id: u64) -> String {
    let out = std::process::Command::new("scontrol")
        .args(["--oneliner", "show", "job", &id.to_string()])
        .output()
        .expect("run scontrol");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Six items, at most two at a time, item 3 failing its first attempt:
/// the six are submitted as ONE job array throttled to two (`%2`, Slurm's
/// `ArrayTaskThrottle`), each item's attempt is the task of its index with
/// its own log and output, the retry of item 3 is a new array of that one
/// item, the items' outputs reach the dependant in item order, and `hfctl
/// status --all` shows each item's array task.
#[test]
fn a_slurm_fan_out_runs_as_one_job_array() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let chain = r#"
[process.load.activity.each]
foreach = { count = 6, chunk_size = 1 }
executor = "slurm"
max_parallel = 2
retries = 1
retry_delay = "0s"
env = { PATH = "@BIN@:/usr/bin:/bin" }
shell = '''
echo "item $HF_ITEM_INDEX attempt $HF_ATTEMPT task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID"
sleep 1
if [ "$HF_ITEM_INDEX" = 3 ] && [ "$HF_ATTEMPT" = 1 ]; then exit 4; fi
hfctl emit output "{\"n\": $((HF_ITEM_INDEX * 10))}"
'''

[process.report]
after = ["load"]

[process.report.activity.all]
command = ["echo", "{{ outputs.load.each | tojson }}"]
"#;
    let mut daemon = TestDaemon::prepare(None, &[("array.toml", chain)]);
    count_client_calls(&mut daemon);
    daemon.launch();
    let began = std::time::Instant::now();
    let job_id = daemon.submit("array", &[]);
    let job = daemon.wait_done(job_id);
    let elapsed = began.elapsed();
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:#?}\n{}",
        daemon.log_tail()
    );

    // One array for the six first attempts; each item the task of its index.
    let mut arrays = BTreeSet::new();
    for item in 0..6u32 {
        let path = format!("load.each[{item}]");
        let log = daemon.logs(job_id, &path, Some(1));
        let (array, task) = array_task(&log).unwrap_or_else(|| panic!("{path}: {log:?}"));
        assert_eq!(task, item, "{path}: {log:?}");
        assert!(
            log.contains(&format!("item {item} attempt 1 task {item} of {array}\n")),
            "the task ran the item's own command: {log:?}"
        );
        arrays.insert(array);
    }
    assert_eq!(
        arrays.len(),
        1,
        "one sbatch --array for the six: {arrays:?}"
    );
    let sbatch = client_calls(&daemon, "sbatch");
    assert_eq!(sbatch.len(), 2, "the array, then the retry's: {sbatch:#?}");
    assert!(sbatch[0].contains("--array=0,1,2,3,4,5%2"), "{sbatch:#?}");
    assert!(sbatch[1].contains("--array=3%2 "), "{sbatch:#?}");
    // Tracking stays batched: one squeue per interval for every task (at
    // most one per 250 ms), one scontrol per array with ended tasks.
    let squeue = client_calls(&daemon, "squeue");
    let bound = (elapsed.as_secs_f64() / 0.25).ceil() as usize + 2;
    assert!(
        squeue.len() <= bound,
        "{} squeue calls in {elapsed:?}: {squeue:#?}",
        squeue.len()
    );
    let shows: Vec<String> = client_calls(&daemon, "scontrol")
        .into_iter()
        .filter(|call| call.contains("show job"))
        .collect();
    assert!(shows.len() <= 7, "at most one per ended task: {shows:#?}");
    let array = *arrays.first().expect("an array");
    let described = scontrol(array);
    if !described.is_empty() {
        assert!(
            described.contains("ArrayTaskThrottle=2"),
            "max_parallel is the array's throttle: {described}"
        );
        assert_eq!(
            described.lines().count(),
            6,
            "six tasks, no more: {described}"
        );
    }

    // Item 3 failed once and ran again as a new array of just itself.
    let retried = daemon.logs(job_id, "load.each[3]", Some(2));
    let (retry_array, task) = array_task(&retried).expect("the retry's task");
    assert_eq!(task, 3);
    assert_ne!(retry_array, array, "the retry is a new submission");
    let rows = items(&daemon, job_id, "load.each");
    let attempts: BTreeMap<u64, u64> = rows
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap_or(99),
                r["attempts"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        BTreeMap::from([(0, 1), (1, 1), (2, 1), (3, 2), (4, 1), (5, 1)]),
        "only the failed item ran again: {rows:?}"
    );
    assert_eq!(rows[3]["slurm_job"], format!("{retry_array}_3"), "{rows:?}");
    assert_eq!(rows[0]["slurm_job"], format!("{array}_0"), "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["slurm_task_job_id"].as_u64().is_some()),
        "each task's own job id was recorded: {rows:?}"
    );

    // The items' outputs, in item order, reached the dependant.
    let list: Value =
        serde_json::from_str(daemon.logs(job_id, "report.all", None).trim()).expect("JSON");
    assert_eq!(
        list,
        json!([{"n": 0}, {"n": 10}, {"n": 20}, {"n": 30}, {"n": 40}, {"n": 50}])
    );

    let describe = shown(&daemon.hfctl(&["describe", "array"]));
    assert!(
        describe.contains("items as one job array (--array=<items>%2)"),
        "{describe}"
    );
    let status = shown(&daemon.hfctl(&["status", "--all", &job_id.to_string()]));
    assert!(
        status.contains("SLURM JOB") && status.contains(&format!("{array}_5")),
        "{status}"
    );
}

/// A fan-out on Slurm whose items each append their index and attempt to
/// `@DIR@/runs`, then wait for `@DIR@/go`.
const GATED_ITEMS: &str = r#"
[process.p.activity.each]
foreach = { count = 4, chunk_size = 1 }
executor = "slurm"
max_parallel = 2
env = { PATH = "@BIN@:/usr/bin:/bin" }
shell = '''
echo "item $HF_ITEM_INDEX attempt $HF_ATTEMPT" >> @DIR@/runs
hfctl emit alert "item $HF_ITEM_INDEX started"
echo before
while [ ! -e @DIR@/go ]; do sleep 0.1; done
echo after
hfctl emit output "{\"n\": $HF_ITEM_INDEX}"
'''

[process.q]
after = ["p"]

[process.q.activity.all]
command = ["echo", "{{ outputs.p.each | tojson }}"]
"#;

/// Wait until two of the gated items' tasks run (the other two pend,
/// throttled) and the daemon applied their alerts; the array's id.
fn two_tasks_running(daemon: &TestDaemon, job_id: u64) -> u64 {
    let runs = daemon.dir().join("runs");
    let (array, _) = eventually(SLURM_WITHIN, "two array tasks run", || {
        let started = std::fs::read_to_string(&runs).unwrap_or_default();
        let log = daemon.logs(job_id, "p.each[0]", None);
        match array_task(&log) {
            Some((array, _)) if started.lines().count() == 2 => Ok(array),
            _ => Err(format!("{started:?} {log:?}")),
        }
    });
    daemon.wait_for(job_id, "the two running items' alerts", |job| {
        job.alerts == 2
    });
    array
}

/// Check the gated fan-out ended with each item run exactly once, as the
/// task of the one array, adopted after the restart.
fn each_item_once_in_one_array(daemon: &TestDaemon, job_id: u64, array: u64) {
    let job = daemon.wait_done(job_id);
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:#?}\n{}",
        daemon.log_tail()
    );
    assert_eq!(
        job.alerts, 4,
        "one alert per item: those applied before the kill not read again \
         from the control files (offsets committed per item): {job:#?}"
    );
    let runs = std::fs::read_to_string(daemon.dir().join("runs")).expect("runs");
    let mut lines: Vec<&str> = runs.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "item 0 attempt 1",
            "item 1 attempt 1",
            "item 2 attempt 1",
            "item 3 attempt 1"
        ],
        "each item ran exactly once"
    );
    for item in 0..4u32 {
        let path = format!("p.each[{item}]");
        let log = daemon.logs(job_id, &path, None);
        assert_eq!(array_task(&log), Some((array, item)), "{path}: {log:?}");
        assert!(
            log.contains("adopted after a daemon restart") && log.contains("after\n"),
            "{path}: {log:?}"
        );
    }
    let list: Value =
        serde_json::from_str(daemon.logs(job_id, "q.all", None).trim()).expect("JSON");
    assert_eq!(
        list,
        json!([{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]),
        "outputs sent with hfctl emit from each task, in item order"
    );
    let rows = items(daemon, job_id, "p.each");
    assert!(
        rows.iter()
            .all(|r| r["attempts"] == 1 && r["state"] == "succeeded"),
        "{rows:?}"
    );
    // Slurm has this daemon's one array and nothing more for the job.
    let listed = std::process::Command::new("squeue")
        .args(["--noheader", "--states=all", "--format=%F|%j"])
        .output()
        .expect("squeue");
    let name_of_array = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .find_map(|l| {
            let (id, name) = l.trim().split_once('|')?;
            (id == array.to_string()).then(|| name.to_string())
        });
    if let Some(name) = name_of_array {
        let prefix = name
            .split(&format!("-{job_id}-"))
            .next()
            .unwrap_or_default();
        let arrays: BTreeSet<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|l| l.contains(&format!("{prefix}-{job_id}-")))
            .filter_map(|l| l.split('|').next().map(str::to_string))
            .collect();
        assert_eq!(arrays.len(), 1, "submitted once: {arrays:?}");
    }
}

/// kill -9 of the daemon while two array tasks run and two pend: the
/// array runs on, the restarted daemon adopts each task as its item's
/// attempt (by the committed array id), each item finishes exactly once,
/// nothing is submitted again.
#[test]
fn kill9_with_array_tasks_running_then_restart_adopts_every_task() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let mut daemon = TestDaemon::start(&[("items.toml", GATED_ITEMS)]);
    let job_id = daemon.submit("items", &[]);
    let array = two_tasks_running(&daemon, job_id);
    daemon.kill9();
    daemon.restart();
    std::fs::write(daemon.dir().join("go"), "").expect("go");
    each_item_once_in_one_array(&daemon, job_id, array);
}

/// The crash window between `sbatch --array` answering and the array's id
/// being committed: with the ids gone from the store (as a crash there
/// leaves them), the restarted daemon finds the array by its job name
/// (committed with the attempts before sbatch ran) and adopts every task.
#[test]
fn an_uncommitted_job_array_is_found_by_its_name_at_restart() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let mut daemon = TestDaemon::start(&[("items.toml", GATED_ITEMS)]);
    let job_id = daemon.submit("items", &[]);
    let array = two_tasks_running(&daemon, job_id);
    daemon.kill9();
    let changed = rusqlite::Connection::open(daemon.state_dir().join("holdfast.db"))
        .expect("open the database")
        .execute(
            "UPDATE items SET slurm_job_id = NULL, slurm_task_job_id = NULL",
            [],
        )
        .expect("forget the ids");
    assert_eq!(changed, 4);
    daemon.launch();
    std::fs::write(daemon.dir().join("go"), "").expect("go");
    each_item_once_in_one_array(&daemon, job_id, array);
}

/// Slurm's state of every task of `array` still listed, by task.
fn task_states(array: u64) -> BTreeMap<u32, String> {
    scontrol(array)
        .lines()
        .filter_map(|line| {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(name).and_then(|f| f.strip_prefix('=')))
            };
            Some((
                field("ArrayTaskId")?.parse().ok()?,
                field("JobState")?.to_string(),
            ))
        })
        .collect()
}

/// An item's timeout cancels that task alone (`scancel ARRAYID_N`): the
/// item ends as `timeout` while the other tasks of the array complete.
#[test]
fn an_item_timeout_cancels_its_task_alone() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let chain = r#"
[process.p.activity.each]
foreach = { count = 3, chunk_size = 1 }
executor = "slurm"
on_failure = "continue"
timeout = "3s"
shell = '''
if [ "$HF_ITEM_INDEX" = 1 ]; then sleep 300; fi
sleep 1
'''
"#;
    let daemon = TestDaemon::start(&[("timed.toml", chain)]);
    let job_id = daemon.submit("timed", &[]);
    daemon.wait_done(job_id);
    let rows = items(&daemon, job_id, "p.each");
    let states: Vec<&str> = rows
        .iter()
        .map(|r| r["state"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(states, ["succeeded", "failed", "succeeded"], "{rows:?}");
    let log = daemon.logs(job_id, "p.each[1]", None);
    let (array, _) = array_task(&log).expect("the task");
    assert!(
        log.contains(&format!("cancelling Slurm job {array}_1")),
        "{log:?}"
    );
    let slurm = task_states(array);
    if !slurm.is_empty() {
        assert_eq!(
            slurm.get(&1).map(String::as_str),
            Some("CANCELLED"),
            "{slurm:?}"
        );
        assert_eq!(
            slurm.get(&0).map(String::as_str),
            Some("COMPLETED"),
            "{slurm:?}"
        );
        assert_eq!(
            slurm.get(&2).map(String::as_str),
            Some("COMPLETED"),
            "{slurm:?}"
        );
    }
}

/// Cancelling the job cancels the whole array with one `scancel ARRAYID`:
/// the running task and those still pending under `%1` all end
/// CANCELLED, and every item is cancelled.
#[test]
fn cancel_scancels_the_whole_array() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let chain = r#"
[process.p.activity.each]
foreach = { count = 3, chunk_size = 1 }
executor = "slurm"
max_parallel = 1
shell = 'echo started; sleep 300'
"#;
    let daemon = TestDaemon::start(&[("long.toml", chain)]);
    let job_id = daemon.submit("long", &[]);
    let (array, _) = eventually(SLURM_WITHIN, "the first task runs", || {
        let log = daemon.logs(job_id, "p.each[0]", None);
        match array_task(&log) {
            Some((array, _)) if log.contains("started") => Ok(array),
            _ => Err(log),
        }
    });
    let out = daemon.hfctl(&["cancel", &job_id.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Cancelled, "{job:#?}");
    let rows = items(&daemon, job_id, "p.each");
    assert!(rows.iter().all(|r| r["state"] == "cancelled"), "{rows:?}");
    let slurm = task_states(array);
    assert!(
        slurm.values().all(|s| s == "CANCELLED"),
        "Slurm still has tasks of {array} not cancelled: {slurm:?}"
    );
}

/// A graceful stop leaves the array running (its items detached, still
/// `running` in the store); all four tasks end while the daemon is down,
/// and the restarted daemon records each item's outcome and outputs from
/// Slurm and the task's files, running nothing again.
#[test]
fn array_tasks_that_end_while_the_daemon_is_stopped_are_recorded_at_restart() {
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let mut daemon = TestDaemon::start(&[("items.toml", GATED_ITEMS)]);
    let job_id = daemon.submit("items", &[]);
    let array = two_tasks_running(&daemon, job_id);
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    std::fs::write(daemon.dir().join("go"), "").expect("go");
    eventually(
        SLURM_WITHIN,
        "the four tasks end while the daemon is down",
        || {
            let states = task_states(array);
            if states.len() == 4 && states.values().all(|s| s == "COMPLETED") {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        },
    );
    daemon.launch();
    each_item_once_in_one_array(&daemon, job_id, array);
}

/// A fan-out with `user` runs its array tasks as that user (`sbatch
/// --uid`): each task's directory and script are the user's, the output
/// file Slurm writes there is read back (the ownership checks pass), and
/// an item's value differing per task reaches the command. Needs real
/// users (`HOLDFAST_USERS_TEST`) and the cluster.
#[test]
fn a_slurm_fan_out_runs_its_tasks_as_the_activity_user() {
    let Some(accounts) =
        crate::users::accounts_or_skip("a_slurm_fan_out_runs_its_tasks_as_the_activity_user")
    else {
        return;
    };
    if !cluster_up() {
        return;
    }
    let _cluster = shared();
    let crate::slurm::RunAsSpool {
        dir: spool,
        settings,
        ..
    } = crate::slurm::run_as_spool();
    let chain = r#"
[params.names]
type = "json"
required = true

[process.p.activity.who]
foreach = "{{ params.names }}"
executor = "slurm"
user = "hft-runas"
env = { NAME = "{{ item }}" }
shell = '''
echo "$(id -un) runs $NAME as task $SLURM_ARRAY_TASK_ID; owner of my dir: $(stat -c %U "$(dirname "$HF_CONTROL_FILE")")"
echo "output {\"who\": \"$(id -un)\"}" >&3
'''
"#;
    let daemon = TestDaemon::start_with(&settings, &[("who.toml", chain)]);
    let job_id = daemon.submit("who", &["-p", r#"names=["ann","bob"]"#]);
    let job = daemon.wait_done(job_id);
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:#?}\n{}",
        daemon.log_tail()
    );
    let user = &accounts.run_as.name;
    for (item, name) in [(0, "ann"), (1, "bob")] {
        let log = daemon.logs(job_id, &format!("p.who[{item}]"), None);
        assert!(
            log.contains(&format!(
                "{user} runs {name} as task {item}; owner of my dir: {user}\n"
            )),
            "{log:?}"
        );
    }
    assert_eq!(
        std::fs::read_dir(spool.path().join("attempts"))
            .map(|entries| entries.count())
            .unwrap_or(0),
        0,
        "the array's directory went with its last task"
    );
}
