//! Floods through the control channel and values too large to deliver:
//! output and checkpoint floods that must not grow the daemon's memory or
//! stall other clients, alert floods that must not grow its log, a
//! checkpoint and parameters too large for an activity's environment, and
//! an environment past ARG_MAX.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use holdfast_api::{ActivityState, AttemptState, Job, JobState};
use holdfast_tests::TestDaemon;
use holdfast_tests::http::rpc_call;
use holdfast_tests::process::peak_rss_kib;
use serde_json::json;

use crate::support::activity;

/// How much the daemon's peak memory may grow during a flood. Reading,
/// parsing and writing the latest values takes a few MiB; keeping a copy
/// per line took gigabytes.
const FLOOD_MEMORY_KIB: u64 = 200 * 1024;

/// How long another client's `hfctl status` may take during a flood. It
/// answers in milliseconds when idle; this catches a daemon that stalls
/// while it writes what an activity floods it with (22 s were seen).
const STATUS_DURING_FLOOD: Duration = Duration::from_secs(3);

/// How much the daemon's log may grow while an activity raises 500 alerts
/// of 100 KB: a burst of 20 alerts cut to 1000 characters, and the job's
/// own lines.
const ALERT_LOG_BYTES: u64 = 64 * 1024;

fn attempt_states(job: &Job, path: &str) -> Vec<AttemptState> {
    activity(job, path)
        .attempts
        .iter()
        .map(|a| a.state)
        .collect()
}

/// True once the latest attempt of `path` runs and has reported `text`.
fn reported(job: &Job, path: &str, text: &str) -> bool {
    let run = activity(job, path);
    run.state == ActivityState::Running && run.progress_text.as_deref() == Some(text)
}

const FLOOD: &str = r#"
[process.p.activity.flood]
shell = '''
if [ "$HF_ATTEMPT" -gt 1 ]; then
  printf 'checkpoint=%s\n' "$(printf '%s' "$HF_CHECKPOINT" | cut -c1-13)"
  exit 0
fi
value=$(head -c 30720 /dev/zero | tr '\0' x)
i=0
while [ $i -lt 300 ]; do
  printf 'output {"key%d":"%s"}\n' $i "$value" >&3
  i=$((i + 1))
done
data=$(head -c 122880 /dev/zero | tr '\0' y)
i=0
while [ $i -lt 1000 ]; do
  printf 'checkpoint {"chunk":%03d,"data":"%s"}\n' $i "$data" >&3
  i=$((i + 1))
done
echo "progress 100 flooded" >&3
while [ ! -e @DIR@/go ]; do sleep 0.02; done
exit 1
'''
timeout = "300s"
retries = 1
retry_delay = "10ms"
"#;

const QUICK: &str = r#"
[process.p.activity.a]
command = ["true"]
"#;

/// 300 `output` lines of 30 KB under distinct keys and 1000 checkpoints of
/// 120 KB: the daemon's peak memory stays within [`FLOOD_MEMORY_KIB`] and
/// another client's `hfctl status` answers within [`STATUS_DURING_FLOOD`]
/// throughout. The outputs stop at their cap (the rest refused with a note
/// in the attempt's log), and the retry gets the last checkpoint, so
/// writing only the latest value per batch loses nothing. Before the caps,
/// each output line stored a copy of all outputs so far (gigabytes here)
/// and every checkpoint was written.
#[test]
fn an_output_and_checkpoint_flood_keeps_memory_bounded_and_status_answering() {
    let daemon = TestDaemon::start(&[("flood.toml", FLOOD), ("quick.toml", QUICK)]);
    let pid = daemon.pid().expect("the daemon runs");
    let other = daemon.submit("quick", &[]);
    assert_eq!(daemon.wait_done(other).state, JobState::Succeeded);
    let before = peak_rss_kib(pid);

    let flooded = AtomicBool::new(false);
    let (job_id, slowest) = thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut slowest = Duration::ZERO;
            while !flooded.load(Ordering::Acquire) {
                let began = Instant::now();
                let status = daemon.status(other);
                slowest = slowest.max(began.elapsed());
                assert_eq!(status.state, JobState::Succeeded, "{status:#?}");
            }
            slowest
        });
        let job_id = daemon.submit("flood", &[]);
        daemon.wait_for(job_id, "done flooding", |job| {
            reported(job, "p.flood", "flooded")
        });
        flooded.store(true, Ordering::Release);
        (job_id, watcher.join().expect("the status thread ran"))
    });
    let grown = peak_rss_kib(pid).saturating_sub(before);
    assert!(
        grown < FLOOD_MEMORY_KIB,
        "the daemon's peak memory grew by {grown} KiB during the flood"
    );
    assert!(
        slowest < STATUS_DURING_FLOOD,
        "another client's hfctl status took {slowest:?} during the flood"
    );

    std::fs::write(daemon.dir().join("go"), "").expect("the gate file can be written");
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        attempt_states(&job, "p.flood"),
        [AttemptState::Failed, AttemptState::Succeeded],
        "{job:#?}"
    );
    let outputs = job
        .outputs
        .get("p.flood")
        .and_then(|o| o.as_object())
        .unwrap_or_else(|| panic!("the flood kept its first outputs: {:?}", job.outputs));
    assert_eq!(
        outputs.keys().collect::<Vec<_>>(),
        ["key0", "key1"],
        "two values of 30 KB fit in the 64 KiB cap, the third does not"
    );
    let first = daemon.logs(job_id, "p.flood", Some(1));
    let refused = first
        .lines()
        .filter(|l| l.starts_with("[holdfast] output refused: "))
        .count();
    assert_eq!(
        refused, 298,
        "one note per refused output line:\n{first:.2000}"
    );
    let second = daemon.logs(job_id, "p.flood", Some(2));
    assert!(
        second.lines().any(|l| l == r#"checkpoint={"chunk":999,"#),
        "the retry gets the last of 1000 checkpoints:\n{second}"
    );
}

/// A checkpoint of 200 KiB is accepted by the parser but cannot be handed
/// to the next attempt (one environment variable holds at most 128 KiB).
/// It is refused at fd 3 with a note, the previous checkpoint stays, and
/// after a crash (kill -9) the resumed attempt starts with that one.
/// Before, the resumed attempt and every later one failed with "Argument
/// list too long", so the job could never finish.
#[test]
fn a_checkpoint_too_large_for_the_environment_is_refused_and_the_resume_starts() {
    let chain = r#"
[process.p.activity.resume]
shell = '''
if [ "$HF_ATTEMPT" -gt 1 ]; then
  echo "checkpoint=$HF_CHECKPOINT"
  exit 0
fi
echo 'checkpoint {"chunk":1}' >&3
printf 'checkpoint {"data":"%s"}\n' "$(head -c 204800 /dev/zero | tr '\0' z)" >&3
echo "progress 50 saved" >&3
sleep 30
'''
retries = 0
"#;
    let mut daemon = TestDaemon::start(&[("resume.toml", chain)]);
    let job_id = daemon.submit("resume", &[]);
    // Control lines are taken in order: once the progress shows, both
    // checkpoints have been seen.
    daemon.wait_for(job_id, "past its checkpoints", |job| {
        reported(job, "p.resume", "saved")
    });
    daemon.kill9();
    daemon.launch();

    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    assert_eq!(
        attempt_states(&job, "p.resume"),
        [AttemptState::Interrupted, AttemptState::Succeeded],
        "{job:#?}"
    );
    let first = daemon.logs(job_id, "p.resume", Some(1));
    assert!(
        first.lines().any(|l| {
            l.starts_with("[holdfast] checkpoint of ")
                && l.contains("refused")
                && l.contains("HF_CHECKPOINT")
        }),
        "the refusal is noted in the attempt's log:\n{first:.2000}"
    );
    let second = daemon.logs(job_id, "p.resume", Some(2));
    assert!(
        second.lines().any(|l| l == r#"checkpoint={"chunk":1}"#),
        "the resumed attempt gets the last checkpoint that could be delivered:\n{second:.2000}"
    );
}

/// 500 alerts of 100 KB grow the daemon's log by less than
/// [`ALERT_LOG_BYTES`]: each text is cut to 1000 characters, and past a
/// burst of 20 alerts are dropped (counted in the attempt's log). The job
/// counts the alerts let through, and its `last_alert` is cut too. Before,
/// the log grew by the full 50 MB.
#[test]
fn an_alert_flood_leaves_the_daemon_log_small() {
    let chain = r#"
[process.p.activity.shout]
shell = '''
text=$(head -c 102400 /dev/zero | tr '\0' a)
i=0
while [ $i -lt 500 ]; do
  echo "alert $i $text" >&3
  i=$((i + 1))
done
'''
retries = 0
"#;
    let daemon = TestDaemon::start(&[("shout.toml", chain)]);
    let log_size = || std::fs::metadata(daemon.log_path()).map_or(0, |m| m.len());
    let before = log_size();
    let job_id = daemon.submit("shout", &[]);
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let grown = log_size().saturating_sub(before);
    assert!(
        grown < ALERT_LOG_BYTES,
        "the daemon's log grew by {grown} bytes for 500 alerts"
    );

    assert!(
        (20..500).contains(&job.alerts),
        "a burst of alerts is counted, the flood past it is not: {} alerts",
        job.alerts
    );
    let last = job.last_alert.clone().unwrap_or_default();
    assert!(
        last.starts_with("shout.p.shout: ") && last.ends_with("...") && last.chars().count() < 1100,
        "last_alert keeps the start of the text: {} characters",
        last.chars().count()
    );
    let log = daemon.logs(job_id, "p.shout", None);
    let dropped: u32 = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("[holdfast] ")?
                .strip_suffix(" alerts dropped by the rate limit")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("the attempt's log counts the dropped alerts:\n{log:.2000}"));
    assert_eq!(
        job.alerts + dropped,
        500,
        "every alert is either counted or dropped"
    );
}

const BLOB: &str = r#"
[params.blob]
type = "string"
required = true

[process.p.activity.size]
shell = 'echo "blob=${#HF_PARAM_BLOB}"'
"#;

/// A string parameter of 200 KiB cannot reach the activity in
/// `HF_PARAM_BLOB` and is refused at submit with a field error naming it,
/// and no job is made; one of 100 KiB is delivered whole. Before, the
/// 200 KiB value was accepted and every attempt failed with "Argument list
/// too long".
#[test]
fn a_string_parameter_too_large_for_the_environment_is_refused_at_submit() {
    let daemon = TestDaemon::start(&[("blob.toml", BLOB)]);
    let answer = rpc_call(
        daemon.socket(),
        "job.submit",
        json!({"target": "blob", "params": {"blob": "b".repeat(200 * 1024)}}),
    );
    assert_eq!(
        answer["error"]["code"],
        -31002,
        "{:.1000}",
        answer.to_string()
    );
    let data = &answer["error"]["data"];
    assert_eq!(data[0]["field"], "blob", "{data}");
    let message = data[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("HF_PARAM_BLOB"), "{message}");
    let listed = daemon.hfctl_json(&["list"]);
    assert_eq!(listed["jobs"], json!([]), "no job was made: {listed}");

    let answer = rpc_call(
        daemon.socket(),
        "job.submit",
        json!({"target": "blob", "params": {"blob": "b".repeat(100 * 1024)}}),
    );
    let job_id = answer["result"]["job_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("a 100 KiB parameter is accepted: {answer}"));
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    let log = daemon.logs(job_id, "p.size", None);
    assert!(
        log.lines().any(|l| l == format!("blob={}", 100 * 1024)),
        "{log}"
    );
}

/// A parameter that fits alone, put 60 times in the environment by a
/// template (6.6 MB), is more than Linux lets a program start with. The
/// attempt ends `spawn_error` with a message that says so (ARG_MAX),
/// checked before the start; before, it was the kernel's bare "Argument
/// list too long".
#[test]
fn an_environment_past_arg_max_is_a_clear_spawn_error() {
    let env: Vec<String> = (0..60)
        .map(|n| format!("A{n} = \"{{{{ params.blob }}}}\""))
        .collect();
    let chain = format!(
        r#"
[params.blob]
type = "string"

[process.p.activity.wide]
env = {{ {} }}
command = ["true"]
retries = 0
"#,
        env.join(", ")
    );
    let daemon = TestDaemon::start(&[("wide.toml", &chain)]);
    let answer = rpc_call(
        daemon.socket(),
        "job.submit",
        json!({"target": "wide", "params": {"blob": "w".repeat(110 * 1024)}}),
    );
    let job_id = answer["result"]["job_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("a 110 KiB parameter is accepted: {answer}"));
    let job = daemon.wait_done(job_id);
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let run = activity(&job, "p.wide");
    let attempt = &run.attempts[0];
    assert_eq!(attempt.state, AttemptState::SpawnError, "{run:#?}");
    let error = attempt.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("ARG_MAX") && error.contains("bytes"),
        "the error says the environment is too large: {error}"
    );
}
